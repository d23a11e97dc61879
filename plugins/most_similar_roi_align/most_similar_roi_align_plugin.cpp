#include "most_similar_roi_align_plugin.h"

#include <cstring>

#include "../common/plugin_utils.h"
#include "most_similar_roi_align_launch.h"

namespace vidtrt {
namespace plugin {

using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::DimsExprs;
using nvinfer1::DynamicPluginTensorDesc;
using nvinfer1::IDimensionExpr;
using nvinfer1::IPluginCapability;
using nvinfer1::IPluginV3;
using nvinfer1::PluginCapabilityType;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::PluginTensorDesc;
using nvinfer1::TensorFormat;

namespace msra = most_similar_roi_align;

namespace {

constexpr int32_t kFailure = 1;
constexpr const char* kTag = "vidtrt::MostSimilarRoIAlign";
constexpr const char* kRoiAxes[4] = {"R", "C", "h", "w"};
constexpr const char* kSupportAxes[4] = {"T", "C", "H", "W"};
constexpr const char* kOutputAxes[5] = {"T", "R", "C", "h", "w"};

bool isSupportedType(DataType type) { return type == DataType::kFLOAT || type == DataType::kHALF; }

bool toKernelType(DataType type, DType& out) {
    switch (type) {
        case DataType::kFLOAT: out = DType::kFloat32; return true;
        case DataType::kHALF: out = DType::kFloat16; return true;
        default: return false;
    }
}

const char* statusText(int status) {
    switch (status) {
        case kSuccess: return "success";
        case kInvalidArgument: return "invalid argument";
        case kUnsupportedDType: return "unsupported data type";
        case kCudaError: return "CUDA kernel launch failed";
        default: return "unknown status";
    }
}

// At build time TensorRT marks dimensions it does not know yet with -1; those
// cannot disagree with anything. At run time every extent must be concrete.
enum class Extents { kMayBeUnknown, kConcrete };

bool extentsAgree(int64_t a, int64_t b, Extents extents) {
    if (extents == Extents::kMayBeUnknown && (a < 0 || b < 0)) return true;
    return a == b;
}

// Returns why the I/O dims cannot feed the kernel, or "" when they can.
// `out` may be null when no output dims are known.
std::string checkIoDims(const Dims& roi, const Dims& support, const Dims* out, int32_t topK, Extents extents) {
    struct Named {
        const char* name;
        const Dims* dims;
        int32_t rank;
        const char* layout;
        const char* const* axes;
    };
    const Named all[] = {{"roi_feats", &roi, 4, "[R, C, h, w]", kRoiAxes},
                         {"support_feats", &support, 4, "[T, C, H, W]", kSupportAxes},
                         {"output", out, 5, "[T, R, C, h, w]", kOutputAxes}};
    for (const Named& t : all) {
        if (t.dims == nullptr) continue;
        if (t.dims->nbDims != t.rank) {
            return concat(t.name, " has rank ", t.dims->nbDims, " ", formatDims(*t.dims),
                          "; MostSimilarRoIAlign needs rank ", t.rank, " (", t.layout, ")");
        }
        for (int32_t i = 0; i < t.rank; ++i) {
            if (extents == Extents::kConcrete && t.dims->d[i] < 0) {
                return concat(t.name, " ", formatDims(*t.dims), " has an unresolved extent on ", t.axes[i]);
            }
        }
    }
    if (!extentsAgree(roi.d[1], support.d[1], extents)) {
        return concat("roi_feats ", formatDims(roi), " and support_feats ", formatDims(support),
                      " disagree on C (", roi.d[1], " vs ", support.d[1], ")");
    }
    // Each query keeps top_k distinct cells of a frame, so a frame needs that many.
    if (support.d[2] >= 0 && support.d[3] >= 0 && support.d[2] * support.d[3] < topK) {
        return concat("support_feats ", formatDims(support), " has H*W = ", support.d[2] * support.d[3],
                      " cells, fewer than top_k = ", topK);
    }
    if (out != nullptr) {
        const int64_t want[5] = {support.d[0], roi.d[0], roi.d[1], roi.d[2], roi.d[3]};
        for (int32_t axis = 0; axis < 5; ++axis) {
            if (!extentsAgree(out->d[axis], want[axis], extents)) {
                return concat("output ", formatDims(*out), " differs from [T, R, C, h, w] = [", want[0], ", ", want[1],
                              ", ", want[2], ", ", want[3], ", ", want[4], "] on ", kOutputAxes[axis],
                              " (roi_feats ", formatDims(roi), ", support_feats ", formatDims(support), ")");
            }
        }
    }
    return {};
}

// NCHW with nothing between rows or planes: what TensorRT's kLINEAR means.
Strides4 contiguousStrides4(const Dims& d) {
    return Strides4{d.d[1] * d.d[2] * d.d[3], d.d[2] * d.d[3], d.d[3], 1};
}

msra::Strides5 contiguousStrides5(const Dims& d) {
    const int64_t x = 1;
    const int64_t y = d.d[4];
    const int64_t c = d.d[3] * y;
    const int64_t r = d.d[2] * c;
    return msra::Strides5{d.d[1] * r, r, c, y, x};
}

std::string layerTag(const char* name) {
    return name != nullptr && name[0] != '\0' ? concat(kTag, " (layer '", name, "')") : std::string(kTag);
}

}  // namespace

// ---------------------------------------------------------------- MostSimilarRoiAlignPlugin

MostSimilarRoiAlignPlugin::MostSimilarRoiAlignPlugin(int32_t topK)
    : mTopK(topK), mMetadata(concat("top_k=", topK)), mSerialField(), mSerialFields() {}

IPluginCapability* MostSimilarRoiAlignPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept {
    switch (type) {
        case PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
        case PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
        case PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    logError(kTag, ": unknown capability type ", static_cast<int32_t>(type));
    return nullptr;
}

IPluginV3* MostSimilarRoiAlignPlugin::clone() noexcept {
    return guard("vidtrt::MostSimilarRoIAlign clone", static_cast<IPluginV3*>(nullptr),
                 [&]() -> IPluginV3* { return new MostSimilarRoiAlignPlugin(*this); });
}

const char* MostSimilarRoiAlignPlugin::getPluginName() const noexcept { return kMsraPluginName; }
const char* MostSimilarRoiAlignPlugin::getPluginVersion() const noexcept { return kMsraPluginVersion; }
const char* MostSimilarRoiAlignPlugin::getPluginNamespace() const noexcept { return kMsraPluginNamespace; }

int32_t MostSimilarRoiAlignPlugin::getNbOutputs() const noexcept { return kNbOutputs; }

int32_t MostSimilarRoiAlignPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs,
                                                      const DataType* inputTypes, int32_t nbInputs) const noexcept {
    return guard("vidtrt::MostSimilarRoIAlign getOutputDataTypes", kFailure, [&]() -> int32_t {
        if (outputTypes == nullptr || inputTypes == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs) {
            logError(kTag, ": expected 2 inputs and 1 output, got ", nbInputs, " and ", nbOutputs);
            return kFailure;
        }
        const DataType supportType = inputTypes[kSupport];
        if (!isSupportedType(supportType)) {
            logError(kTag, ": support_feats have type ", dataTypeName(supportType),
                     "; MostSimilarRoIAlign supports kFLOAT and kHALF");
            return kFailure;
        }
        // The output is a weighted sum of support vectors, so it takes their type.
        outputTypes[0] = supportType;
        return 0;
    });
}

int32_t MostSimilarRoiAlignPlugin::getOutputShapes(const DimsExprs* inputs, int32_t nbInputs,
                                                   const DimsExprs* /*shapeInputs*/, int32_t nbShapeInputs,
                                                   DimsExprs* outputs, int32_t nbOutputs,
                                                   nvinfer1::IExprBuilder& exprBuilder) noexcept {
    return guard("vidtrt::MostSimilarRoIAlign getOutputShapes", kFailure, [&]() -> int32_t {
        if (inputs == nullptr || outputs == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs ||
            nbShapeInputs != 0) {
            logError(kTag, ": expected 2 inputs, 0 shape inputs and 1 output, got ", nbInputs, ", ",
                     nbShapeInputs, " and ", nbOutputs);
            return kFailure;
        }
        const DimsExprs& roi = inputs[kRoi];
        const DimsExprs& support = inputs[kSupport];
        if (roi.nbDims != 4) {
            logError(kTag, ": roi_feats have rank ", roi.nbDims, "; MostSimilarRoIAlign needs rank 4 ([R, C, h, w])");
            return kFailure;
        }
        if (support.nbDims != 4) {
            logError(kTag, ": support_feats have rank ", support.nbDims,
                     "; MostSimilarRoIAlign needs rank 4 ([T, C, H, W])");
            return kFailure;
        }
        for (int32_t i = 0; i < 4; ++i) {
            if (roi.d[i] == nullptr || support.d[i] == nullptr) {
                logError(kTag, ": getOutputShapes got a null input dimension");
                return kFailure;
            }
        }
        // Catch constant mismatches while the network is being defined, where the
        // message reaches the user sooner than from configurePlugin.
        if (roi.d[1]->isConstant() && support.d[1]->isConstant() &&
            roi.d[1]->getConstantValue() != support.d[1]->getConstantValue()) {
            logError(kTag, ": roi_feats and support_feats disagree on C (", roi.d[1]->getConstantValue(), " vs ",
                     support.d[1]->getConstantValue(), ")");
            return kFailure;
        }
        const IDimensionExpr* cells =
            exprBuilder.operation(nvinfer1::DimensionOperation::kPROD, *support.d[2], *support.d[3]);
        if (cells != nullptr && cells->isConstant() && cells->getConstantValue() < mTopK) {
            logError(kTag, ": support_feats have H*W = ", cells->getConstantValue(), " cells, fewer than top_k = ",
                     mTopK);
            return kFailure;
        }
        outputs[0].nbDims = 5;
        outputs[0].d[0] = support.d[0];
        for (int32_t i = 0; i < 4; ++i) outputs[0].d[i + 1] = roi.d[i];
        return 0;
    });
}

bool MostSimilarRoiAlignPlugin::supportsFormatCombination(int32_t pos, const DynamicPluginTensorDesc* inOut,
                                                          int32_t nbInputs, int32_t nbOutputs) noexcept {
    if (inOut == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs || pos < 0 ||
        pos >= nbInputs + nbOutputs) {
        return false;
    }
    // The kernel indexes with NCHW strides and computes in FP32 from one storage
    // type, so every tensor must match position 0 (TensorRT asks in position
    // order, so inOut[0] is already settled when pos > 0).
    const PluginTensorDesc& desc = inOut[pos].desc;
    if (desc.format != TensorFormat::kLINEAR || !isSupportedType(desc.type)) return false;
    return pos == 0 || desc.type == inOut[0].desc.type;
}

int32_t MostSimilarRoiAlignPlugin::configurePlugin(const DynamicPluginTensorDesc* in, int32_t nbInputs,
                                                   const DynamicPluginTensorDesc* out, int32_t nbOutputs) noexcept {
    return guard("vidtrt::MostSimilarRoIAlign configurePlugin", kFailure, [&]() -> int32_t {
        if (in == nullptr || out == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs) {
            logError(kTag, ": configurePlugin expected 2 inputs and 1 output, got ", nbInputs, " and ", nbOutputs);
            return kFailure;
        }
        const std::string error = checkIoDims(in[kRoi].desc.dims, in[kSupport].desc.dims, &out[0].desc.dims, mTopK,
                                              Extents::kMayBeUnknown);
        if (!error.empty()) {
            logError(kTag, ": configurePlugin: ", error);
            return kFailure;
        }
        // A profile may admit maps smaller than top_k without ever running one;
        // onShapeChange refuses such a shape if it does come.
        const Dims& smallest = in[kSupport].min;
        if (smallest.nbDims == 4 && smallest.d[2] >= 0 && smallest.d[3] >= 0 &&
            smallest.d[2] * smallest.d[3] < mTopK) {
            logWarning(kTag, ": the profile admits support_feats ", formatDims(smallest), " with H*W = ",
                       smallest.d[2] * smallest.d[3], " < top_k = ", mTopK, "; such shapes will be refused at run time");
        }
        return 0;
    });
}

size_t MostSimilarRoiAlignPlugin::getWorkspaceSize(const DynamicPluginTensorDesc* inputs, int32_t nbInputs,
                                                   const DynamicPluginTensorDesc* /*outputs*/,
                                                   int32_t /*nbOutputs*/) const noexcept {
    return guard("vidtrt::MostSimilarRoIAlign getWorkspaceSize", static_cast<size_t>(0), [&]() -> size_t {
        if (inputs == nullptr || nbInputs != kNbInputs) return 0;
        const Dims& roi = inputs[kRoi].max;
        const Dims& support = inputs[kSupport].max;
        if (roi.nbDims != 4 || support.nbDims != 4) return 0;
        // The scratch grows with every extent, so the profile's largest shapes
        // bound every shape the engine will meet.
        auto extent = [](int64_t v) { return v > 0 ? v : int64_t{0}; };
        const int64_t channels = extent(roi.d[1]) > extent(support.d[1]) ? extent(roi.d[1]) : extent(support.d[1]);
        const msra::Shape largest{extent(roi.d[0]), channels,          extent(roi.d[2]),     extent(roi.d[3]),
                                  extent(support.d[0]), extent(support.d[2]), extent(support.d[3]), mTopK};
        return msra::workspace_bytes(largest);
    });
}

const char* MostSimilarRoiAlignPlugin::getMetadataString() noexcept { return mMetadata.c_str(); }

int32_t MostSimilarRoiAlignPlugin::setTactic(int32_t /*tactic*/) noexcept { return 0; }

int32_t MostSimilarRoiAlignPlugin::onShapeChange(const PluginTensorDesc* in, int32_t nbInputs,
                                                 const PluginTensorDesc* out, int32_t nbOutputs) noexcept {
    return guard("vidtrt::MostSimilarRoIAlign onShapeChange", kFailure, [&]() -> int32_t {
        if (in == nullptr || out == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs) {
            logError(kTag, ": onShapeChange expected 2 inputs and 1 output, got ", nbInputs, " and ", nbOutputs);
            return kFailure;
        }
        const std::string error = checkIoDims(in[kRoi].dims, in[kSupport].dims, &out[0].dims, mTopK, Extents::kConcrete);
        if (!error.empty()) {
            logError(kTag, ": onShapeChange: ", error);
            return kFailure;
        }
        return 0;
    });
}

int32_t MostSimilarRoiAlignPlugin::enqueue(const PluginTensorDesc* inputDesc, const PluginTensorDesc* outputDesc,
                                           const void* const* inputs, void* const* outputs, void* workspace,
                                           cudaStream_t stream) noexcept {
    return guard("vidtrt::MostSimilarRoIAlign enqueue", kFailure, [&]() -> int32_t {
        if (inputDesc == nullptr || outputDesc == nullptr || inputs == nullptr || outputs == nullptr) {
            logError(kTag, ": enqueue got null descriptors or buffers");
            return kFailure;
        }
        const Dims& r = inputDesc[kRoi].dims;
        const Dims& s = inputDesc[kSupport].dims;
        const Dims& o = outputDesc[0].dims;
        // onShapeChange has already checked these; repeating it costs a few
        // compares and keeps a bad launch from reading out of bounds if a caller
        // skipped it.
        const std::string error = checkIoDims(r, s, &o, mTopK, Extents::kConcrete);
        if (!error.empty()) {
            logError(kTag, ": enqueue: ", error);
            return kFailure;
        }
        const DataType type = inputDesc[kRoi].type;
        DType dtype{};
        if (!toKernelType(type, dtype) || inputDesc[kSupport].type != type || outputDesc[0].type != type) {
            logError(kTag, ": enqueue: types roi_feats ", dataTypeName(type), ", support_feats ",
                     dataTypeName(inputDesc[kSupport].type), ", output ", dataTypeName(outputDesc[0].type),
                     "; MostSimilarRoIAlign needs one type, kFLOAT or kHALF, on all of them");
            return kFailure;
        }

        msra::Problem problem{};
        problem.shape = msra::Shape{r.d[0], r.d[1], r.d[2], r.d[3], s.d[0], s.d[2], s.d[3], mTopK};
        problem.roi = contiguousStrides4(r);
        problem.support = contiguousStrides4(s);
        problem.out = contiguousStrides5(o);

        // The workspace comes from getWorkspaceSize at the profile's largest
        // shapes, which bounds workspace_bytes(problem.shape).
        const int status = msra::forward_cuda(dtype, inputs[kRoi], inputs[kSupport], outputs[0], workspace, problem,
                                              static_cast<void*>(stream));
        if (status != kSuccess) {
            logError(kTag, ": enqueue: ", statusText(status), " (status ", status, ") for roi_feats ", formatDims(r),
                     ", support_feats ", formatDims(s), ", ", mMetadata,
                     workspace == nullptr ? ", no workspace" : "");
            return status;
        }
        return 0;
    });
}

IPluginV3* MostSimilarRoiAlignPlugin::attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept {
    // The workspace comes with every enqueue and nothing else is per context.
    return clone();
}

const PluginFieldCollection* MostSimilarRoiAlignPlugin::getFieldsToSerialize() noexcept {
    mSerialField = PluginField(kMsraTopKField, &mTopK, PluginFieldType::kINT32, 1);
    mSerialFields.nbFields = 1;
    mSerialFields.fields = &mSerialField;
    return &mSerialFields;
}

// ---------------------------------------------------------------- MostSimilarRoiAlignPluginCreator

MostSimilarRoiAlignPluginCreator::MostSimilarRoiAlignPluginCreator() noexcept
    : mField(kMsraTopKField, nullptr, PluginFieldType::kINT32, 1), mFields{1, &mField} {}

const PluginFieldCollection* MostSimilarRoiAlignPluginCreator::getFieldNames() noexcept { return &mFields; }
const char* MostSimilarRoiAlignPluginCreator::getPluginName() const noexcept { return kMsraPluginName; }
const char* MostSimilarRoiAlignPluginCreator::getPluginVersion() const noexcept { return kMsraPluginVersion; }
const char* MostSimilarRoiAlignPluginCreator::getPluginNamespace() const noexcept { return kMsraPluginNamespace; }

IPluginV3* MostSimilarRoiAlignPluginCreator::createPlugin(const char* name, const PluginFieldCollection* fc,
                                                          nvinfer1::TensorRTPhase /*phase*/) noexcept {
    return guard("vidtrt::MostSimilarRoIAlign createPlugin", static_cast<IPluginV3*>(nullptr), [&]() -> IPluginV3* {
        const std::string tag = layerTag(name);
        // Required in both phases: mmtracking uses 2 and the paper 4, so no
        // default is right, and a guessed one changes the features silently.
        int32_t topK = 0;
        const PluginField* field = nullptr;
        const FieldLookup lookup = readInt32Field(fc, kMsraTopKField, topK, &field);
        if (lookup != FieldLookup::kFound) {
            logError(tag, ": ", describeInt32FieldError(lookup, kMsraTopKField, field));
            return nullptr;
        }
        if (topK < 1 || topK > msra::kMaxTopK) {
            logError(tag, ": ", kMsraTopKField, " = ", topK, " is out of range [1, ", msra::kMaxTopK,
                     "] (the kernel sizes its per-query arrays for at most ", msra::kMaxTopK, ")");
            return nullptr;
        }
        // Attributes the ONNX parser forwards (plugin_version, plugin_namespace)
        // or that a newer exporter adds are not errors.
        if (fc != nullptr && fc->fields != nullptr) {
            for (int32_t i = 0; i < fc->nbFields; ++i) {
                const char* fieldName = fc->fields[i].name;
                if (fieldName == nullptr || std::strcmp(fieldName, kMsraTopKField) != 0) {
                    logVerbose(tag, ": ignoring field '", fieldName != nullptr ? fieldName : "(null)", "'");
                }
            }
        }
        return new MostSimilarRoiAlignPlugin(topK);
    });
}

}  // namespace plugin
}  // namespace vidtrt
