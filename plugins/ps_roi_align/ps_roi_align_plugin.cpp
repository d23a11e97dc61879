#include "ps_roi_align_plugin.h"

#include <cmath>
#include <cstring>

#include "../common/plugin_utils.h"
#include "ps_roi_align_launch.h"

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

namespace {

constexpr int32_t kFailure = 1;
constexpr const char* kTag = "vidtrt::PSRoIAlign";
constexpr const char* kFeatureAxes[4] = {"N", "C*k*k", "H", "W"};
constexpr const char* kOutputAxes[4] = {"R", "C", "k", "k"};
constexpr int64_t kRoiColumns = 5;  // batch index, x1, y1, x2, y2

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

std::string metadataOf(const PsRoiAlignParams& p) {
    return concat("output_size=", p.outputSize, " spatial_scale=", p.spatialScale,
                  " sampling_ratio=", p.samplingRatio);
}

// Returns why the I/O dims cannot feed the kernel, or "" when they can.
// `out` may be null when no output dims are known.
std::string checkIoDims(const Dims& features, const Dims& rois, const Dims* out, int32_t outputSize,
                        Extents extents) {
    struct Named {
        const char* name;
        const Dims* dims;
        int32_t rank;
        const char* layout;
    };
    const Named all[] = {{"features", &features, 4, "[N, C*k*k, H, W]"},
                         {"rois", &rois, 2, "[R, 5]"},
                         {"output", out, 4, "[R, C, k, k]"}};
    for (const Named& t : all) {
        if (t.dims == nullptr) continue;
        if (t.dims->nbDims != t.rank) {
            return concat(t.name, " has rank ", t.dims->nbDims, " ", formatDims(*t.dims), "; PSRoIAlign needs rank ",
                          t.rank, " (", t.layout, ")");
        }
        for (int32_t i = 0; i < t.rank; ++i) {
            if (extents == Extents::kConcrete && t.dims->d[i] < 0) {
                return concat(t.name, " ", formatDims(*t.dims), " has an unresolved extent on axis ", i);
            }
        }
    }
    if (!extentsAgree(rois.d[1], kRoiColumns, extents)) {
        return concat("rois ", formatDims(rois), " must be [R, 5] (batch index, x1, y1, x2, y2)");
    }
    const int64_t kk = static_cast<int64_t>(outputSize) * outputSize;
    const int64_t channels = features.d[1];
    if (channels >= 0 && channels % kk != 0) {
        return concat("features ", formatDims(features), " has ", channels,
                      " channels, not a multiple of output_size^2 = ", kk, " (C*k*k)");
    }
    for (int32_t axis : {2, 3}) {
        if (features.d[axis] == 0) {
            return concat("features ", formatDims(features), " has an empty ", kFeatureAxes[axis],
                          "; bilinear sampling needs at least one row and column");
        }
    }
    if (out != nullptr) {
        const int64_t want[4] = {rois.d[0], channels < 0 ? -1 : channels / kk, outputSize, outputSize};
        for (int32_t axis = 0; axis < 4; ++axis) {
            if (!extentsAgree(out->d[axis], want[axis], extents)) {
                return concat("output ", formatDims(*out), " differs from [R, C, k, k] = [", want[0], ", ", want[1],
                              ", ", want[2], ", ", want[3], "] on ", kOutputAxes[axis], " (features ",
                              formatDims(features), ", rois ", formatDims(rois), ")");
            }
        }
    }
    return {};
}

// NCHW (or [R, 5]) with nothing between rows or planes: what TensorRT's kLINEAR means.
Strides4 contiguousStrides(const Dims& d) {
    return Strides4{d.d[1] * d.d[2] * d.d[3], d.d[2] * d.d[3], d.d[3], 1};
}

std::string layerTag(const char* name) {
    return name != nullptr && name[0] != '\0' ? concat(kTag, " (layer '", name, "')") : std::string(kTag);
}

// Reads a FLOAT32 scalar field; the counterpart of readInt32Field. No implicit
// conversion from FLOAT64 or FLOAT16, for the same reason: a silent
// conversion would hide a mismatch between exporter and plugin.
FieldLookup readFloat32Field(const PluginFieldCollection* fc, const char* name, float& value,
                             const PluginField** found) noexcept {
    const PluginField* f = findField(fc, name);
    *found = f;
    if (f == nullptr) return FieldLookup::kMissing;
    if (f->type != PluginFieldType::kFLOAT32) return FieldLookup::kWrongType;
    if (f->length != 1) return FieldLookup::kWrongLength;
    if (f->data == nullptr) return FieldLookup::kNoData;
    std::memcpy(&value, f->data, sizeof(value));  // no alignment promise on `data`
    return FieldLookup::kFound;
}

std::string describeFloat32FieldError(FieldLookup result, const char* name, const PluginField* f) {
    if (result == FieldLookup::kWrongType) {
        return concat("field '", name, "' must be PluginFieldType::kFLOAT32, got ",
                      f != nullptr ? fieldTypeName(f->type) : "?", " (from Python, build it from np.float32)");
    }
    // The remaining cases do not depend on the field's type.
    return describeInt32FieldError(result, name, f);
}

}  // namespace

// ---------------------------------------------------------------- PsRoiAlignPlugin

PsRoiAlignPlugin::PsRoiAlignPlugin(const PsRoiAlignParams& params)
    : mParams(params), mMetadata(metadataOf(params)), mSerialFieldArray(), mSerialFields() {}

IPluginCapability* PsRoiAlignPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept {
    switch (type) {
        case PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
        case PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
        case PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    logError(kTag, ": unknown capability type ", static_cast<int32_t>(type));
    return nullptr;
}

IPluginV3* PsRoiAlignPlugin::clone() noexcept {
    return guard("vidtrt::PSRoIAlign clone", static_cast<IPluginV3*>(nullptr),
                 [&]() -> IPluginV3* { return new PsRoiAlignPlugin(*this); });
}

const char* PsRoiAlignPlugin::getPluginName() const noexcept { return kPsRoiAlignPluginName; }
const char* PsRoiAlignPlugin::getPluginVersion() const noexcept { return kPsRoiAlignPluginVersion; }
const char* PsRoiAlignPlugin::getPluginNamespace() const noexcept { return kPsRoiAlignPluginNamespace; }

int32_t PsRoiAlignPlugin::getNbOutputs() const noexcept { return kNbOutputs; }

int32_t PsRoiAlignPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, const DataType* inputTypes,
                                             int32_t nbInputs) const noexcept {
    return guard("vidtrt::PSRoIAlign getOutputDataTypes", kFailure, [&]() -> int32_t {
        if (outputTypes == nullptr || inputTypes == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs) {
            logError(kTag, ": expected 2 inputs and 1 output, got ", nbInputs, " and ", nbOutputs);
            return kFailure;
        }
        const DataType featureType = inputTypes[kFeatures];
        if (!isSupportedType(featureType)) {
            logError(kTag, ": features have type ", dataTypeName(featureType),
                     "; PSRoIAlign supports kFLOAT and kHALF");
            return kFailure;
        }
        // The output averages feature values, so it takes the features' type.
        outputTypes[0] = featureType;
        return 0;
    });
}

int32_t PsRoiAlignPlugin::getOutputShapes(const DimsExprs* inputs, int32_t nbInputs,
                                          const DimsExprs* /*shapeInputs*/, int32_t nbShapeInputs,
                                          DimsExprs* outputs, int32_t nbOutputs,
                                          nvinfer1::IExprBuilder& exprBuilder) noexcept {
    return guard("vidtrt::PSRoIAlign getOutputShapes", kFailure, [&]() -> int32_t {
        if (inputs == nullptr || outputs == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs ||
            nbShapeInputs != 0) {
            logError(kTag, ": expected 2 inputs, 0 shape inputs and 1 output, got ", nbInputs, ", ",
                     nbShapeInputs, " and ", nbOutputs);
            return kFailure;
        }
        const DimsExprs& features = inputs[kFeatures];
        const DimsExprs& rois = inputs[kRois];
        if (features.nbDims != 4) {
            logError(kTag, ": features have rank ", features.nbDims, "; PSRoIAlign needs rank 4 ([N, C*k*k, H, W])");
            return kFailure;
        }
        if (rois.nbDims != 2) {
            logError(kTag, ": rois have rank ", rois.nbDims, "; PSRoIAlign needs rank 2 ([R, 5])");
            return kFailure;
        }
        // Catch constant mismatches while the network is being defined, where the
        // message reaches the user sooner than from configurePlugin.
        auto constantOtherThan = [](const IDimensionExpr* e, int64_t want) {
            return e != nullptr && e->isConstant() && e->getConstantValue() != want;
        };
        if (constantOtherThan(rois.d[1], kRoiColumns)) {
            logError(kTag, ": rois have ", rois.d[1]->getConstantValue(),
                     " columns; PSRoIAlign needs [R, 5] (batch index, x1, y1, x2, y2)");
            return kFailure;
        }
        const int64_t kk = static_cast<int64_t>(mParams.outputSize) * mParams.outputSize;
        const IDimensionExpr* channels = features.d[1];
        if (channels != nullptr && channels->isConstant() && channels->getConstantValue() % kk != 0) {
            logError(kTag, ": features have ", channels->getConstantValue(),
                     " channels, not a multiple of output_size^2 = ", kk, " (C*k*k)");
            return kFailure;
        }
        const IDimensionExpr* side = exprBuilder.constant(mParams.outputSize);
        const IDimensionExpr* outChannels =
            channels == nullptr ? nullptr
                                : exprBuilder.operation(nvinfer1::DimensionOperation::kFLOOR_DIV, *channels,
                                                        *exprBuilder.constant(kk));
        if (side == nullptr || outChannels == nullptr || rois.d[0] == nullptr) {
            logError(kTag, ": could not build the output dimensions [R, C*k*k / k^2, k, k]");
            return kFailure;
        }
        outputs[0].nbDims = 4;
        outputs[0].d[0] = rois.d[0];
        outputs[0].d[1] = outChannels;
        outputs[0].d[2] = side;
        outputs[0].d[3] = side;
        return 0;
    });
}

bool PsRoiAlignPlugin::supportsFormatCombination(int32_t pos, const DynamicPluginTensorDesc* inOut,
                                                 int32_t nbInputs, int32_t nbOutputs) noexcept {
    if (inOut == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs || pos < 0 ||
        pos >= nbInputs + nbOutputs) {
        return false;
    }
    // The kernel indexes with NCHW strides and reads features and RoIs of one
    // storage type (the CUDA launcher also takes FP32 RoIs with FP16 features,
    // but the ONNX exporter gives both inputs one type, so the plugin keeps to
    // that). TensorRT asks in position order, so inOut[0] is settled when pos > 0.
    const PluginTensorDesc& desc = inOut[pos].desc;
    if (desc.format != TensorFormat::kLINEAR || !isSupportedType(desc.type)) return false;
    return pos == 0 || desc.type == inOut[0].desc.type;
}

int32_t PsRoiAlignPlugin::configurePlugin(const DynamicPluginTensorDesc* in, int32_t nbInputs,
                                          const DynamicPluginTensorDesc* out, int32_t nbOutputs) noexcept {
    return guard("vidtrt::PSRoIAlign configurePlugin", kFailure, [&]() -> int32_t {
        if (in == nullptr || out == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs) {
            logError(kTag, ": configurePlugin expected 2 inputs and 1 output, got ", nbInputs, " and ", nbOutputs);
            return kFailure;
        }
        const std::string error = checkIoDims(in[kFeatures].desc.dims, in[kRois].desc.dims, &out[0].desc.dims,
                                              mParams.outputSize, Extents::kMayBeUnknown);
        if (!error.empty()) {
            logError(kTag, ": configurePlugin: ", error);
            return kFailure;
        }
        return 0;
    });
}

size_t PsRoiAlignPlugin::getWorkspaceSize(const DynamicPluginTensorDesc* /*inputs*/, int32_t /*nbInputs*/,
                                          const DynamicPluginTensorDesc* /*outputs*/,
                                          int32_t /*nbOutputs*/) const noexcept {
    return 0;
}

const char* PsRoiAlignPlugin::getMetadataString() noexcept { return mMetadata.c_str(); }

int32_t PsRoiAlignPlugin::setTactic(int32_t /*tactic*/) noexcept { return 0; }

int32_t PsRoiAlignPlugin::onShapeChange(const PluginTensorDesc* in, int32_t nbInputs, const PluginTensorDesc* out,
                                        int32_t nbOutputs) noexcept {
    return guard("vidtrt::PSRoIAlign onShapeChange", kFailure, [&]() -> int32_t {
        if (in == nullptr || out == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs) {
            logError(kTag, ": onShapeChange expected 2 inputs and 1 output, got ", nbInputs, " and ", nbOutputs);
            return kFailure;
        }
        const std::string error =
            checkIoDims(in[kFeatures].dims, in[kRois].dims, &out[0].dims, mParams.outputSize, Extents::kConcrete);
        if (!error.empty()) {
            logError(kTag, ": onShapeChange: ", error);
            return kFailure;
        }
        return 0;
    });
}

int32_t PsRoiAlignPlugin::enqueue(const PluginTensorDesc* inputDesc, const PluginTensorDesc* outputDesc,
                                  const void* const* inputs, void* const* outputs, void* /*workspace*/,
                                  cudaStream_t stream) noexcept {
    return guard("vidtrt::PSRoIAlign enqueue", kFailure, [&]() -> int32_t {
        if (inputDesc == nullptr || outputDesc == nullptr || inputs == nullptr || outputs == nullptr) {
            logError(kTag, ": enqueue got null descriptors or buffers");
            return kFailure;
        }
        const Dims& f = inputDesc[kFeatures].dims;
        const Dims& r = inputDesc[kRois].dims;
        const Dims& o = outputDesc[0].dims;
        // onShapeChange has already checked these; repeating it costs a few
        // compares and keeps a bad launch from reading out of bounds if a caller
        // skipped it.
        const std::string error = checkIoDims(f, r, &o, mParams.outputSize, Extents::kConcrete);
        if (!error.empty()) {
            logError(kTag, ": enqueue: ", error);
            return kFailure;
        }
        const DataType type = inputDesc[kFeatures].type;
        DType dtype{};
        if (!toKernelType(type, dtype) || inputDesc[kRois].type != type || outputDesc[0].type != type) {
            logError(kTag, ": enqueue: types features ", dataTypeName(type), ", rois ",
                     dataTypeName(inputDesc[kRois].type), ", output ", dataTypeName(outputDesc[0].type),
                     "; PSRoIAlign needs one type, kFLOAT or kHALF, on all of them");
            return kFailure;
        }

        ps_roi_align::Problem problem{};
        problem.shape = ps_roi_align::Shape{f.d[0], f.d[1], f.d[2], f.d[3], r.d[0], mParams.outputSize,
                                            mParams.samplingRatio, mParams.spatialScale};
        problem.features = contiguousStrides(f);
        problem.rois = ps_roi_align::RoiStrides{r.d[1], 1};
        problem.out = contiguousStrides(o);

        // RoIs whose batch index is outside [0, N) produce zeros (the kernel
        // cannot report them without a device-to-host copy).
        const int status = ps_roi_align::forward_cuda(dtype, dtype, inputs[kFeatures], inputs[kRois], outputs[0],
                                                      problem, static_cast<void*>(stream));
        if (status != kSuccess) {
            logError(kTag, ": enqueue: ", statusText(status), " (status ", status, ") for features ", formatDims(f),
                     ", rois ", formatDims(r), ", ", mMetadata);
            return status;
        }
        return 0;
    });
}

IPluginV3* PsRoiAlignPlugin::attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept {
    // No per-context resources (no workspace, no handles): a plain copy will do.
    return clone();
}

const PluginFieldCollection* PsRoiAlignPlugin::getFieldsToSerialize() noexcept {
    mSerialFieldArray[0] = PluginField(kPsRoiAlignOutputSizeField, &mParams.outputSize, PluginFieldType::kINT32, 1);
    mSerialFieldArray[1] =
        PluginField(kPsRoiAlignSpatialScaleField, &mParams.spatialScale, PluginFieldType::kFLOAT32, 1);
    mSerialFieldArray[2] =
        PluginField(kPsRoiAlignSamplingRatioField, &mParams.samplingRatio, PluginFieldType::kINT32, 1);
    mSerialFields.nbFields = 3;
    mSerialFields.fields = mSerialFieldArray;
    return &mSerialFields;
}

// ---------------------------------------------------------------- PsRoiAlignPluginCreator

PsRoiAlignPluginCreator::PsRoiAlignPluginCreator() noexcept
    : mFieldArray{PluginField(kPsRoiAlignOutputSizeField, nullptr, PluginFieldType::kINT32, 1),
                  PluginField(kPsRoiAlignSpatialScaleField, nullptr, PluginFieldType::kFLOAT32, 1),
                  PluginField(kPsRoiAlignSamplingRatioField, nullptr, PluginFieldType::kINT32, 1)},
      mFields{3, mFieldArray} {}

const PluginFieldCollection* PsRoiAlignPluginCreator::getFieldNames() noexcept { return &mFields; }
const char* PsRoiAlignPluginCreator::getPluginName() const noexcept { return kPsRoiAlignPluginName; }
const char* PsRoiAlignPluginCreator::getPluginVersion() const noexcept { return kPsRoiAlignPluginVersion; }
const char* PsRoiAlignPluginCreator::getPluginNamespace() const noexcept { return kPsRoiAlignPluginNamespace; }

IPluginV3* PsRoiAlignPluginCreator::createPlugin(const char* name, const PluginFieldCollection* fc,
                                                 nvinfer1::TensorRTPhase /*phase*/) noexcept {
    return guard("vidtrt::PSRoIAlign createPlugin", static_cast<IPluginV3*>(nullptr), [&]() -> IPluginV3* {
        const std::string tag = layerTag(name);
        // Every field is required in both phases, unlike PSLA's max_disp: no
        // value of spatial_scale (the backbone's stride) or of the grid is right
        // for every model, and a guessed one gives plausible but wrong boxes.
        PsRoiAlignParams params{};
        const PluginField* field = nullptr;
        FieldLookup lookup = readInt32Field(fc, kPsRoiAlignOutputSizeField, params.outputSize, &field);
        if (lookup != FieldLookup::kFound) {
            logError(tag, ": ", describeInt32FieldError(lookup, kPsRoiAlignOutputSizeField, field));
            return nullptr;
        }
        lookup = readFloat32Field(fc, kPsRoiAlignSpatialScaleField, params.spatialScale, &field);
        if (lookup != FieldLookup::kFound) {
            logError(tag, ": ", describeFloat32FieldError(lookup, kPsRoiAlignSpatialScaleField, field));
            return nullptr;
        }
        lookup = readInt32Field(fc, kPsRoiAlignSamplingRatioField, params.samplingRatio, &field);
        if (lookup != FieldLookup::kFound) {
            logError(tag, ": ", describeInt32FieldError(lookup, kPsRoiAlignSamplingRatioField, field));
            return nullptr;
        }
        if (params.outputSize < 1) {
            logError(tag, ": ", kPsRoiAlignOutputSizeField, " = ", params.outputSize, " is out of range (>= 1)");
            return nullptr;
        }
        if (params.samplingRatio < 1) {
            logError(tag, ": ", kPsRoiAlignSamplingRatioField, " = ", params.samplingRatio,
                     " is out of range (>= 1); adaptive sampling (<= 0 in torchvision) is not supported");
            return nullptr;
        }
        if (!(std::isfinite(params.spatialScale) && params.spatialScale > 0.F)) {
            logError(tag, ": ", kPsRoiAlignSpatialScaleField, " = ", params.spatialScale,
                     " is out of range (finite and > 0)");
            return nullptr;
        }
        // Attributes the ONNX parser forwards (plugin_version, plugin_namespace)
        // or that a newer exporter adds are not errors.
        if (fc != nullptr && fc->fields != nullptr) {
            for (int32_t i = 0; i < fc->nbFields; ++i) {
                const char* fieldName = fc->fields[i].name;
                const bool known = fieldName != nullptr && (std::strcmp(fieldName, kPsRoiAlignOutputSizeField) == 0 ||
                                                            std::strcmp(fieldName, kPsRoiAlignSpatialScaleField) == 0 ||
                                                            std::strcmp(fieldName, kPsRoiAlignSamplingRatioField) == 0);
                if (!known) logVerbose(tag, ": ignoring field '", fieldName != nullptr ? fieldName : "(null)", "'");
            }
        }
        return new PsRoiAlignPlugin(params);
    });
}

}  // namespace plugin
}  // namespace vidtrt
