#include "psla_plugin.h"

#include <cstring>

#include "../common/plugin_utils.h"
#include "psla_launch.h"

namespace vidtrt {
namespace plugin {

using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::DimsExprs;
using nvinfer1::DynamicPluginTensorDesc;
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
constexpr const char* kTag = "vidtrt::PSLA";
constexpr const char* kAxisNames[4] = {"N", "c", "H", "W"};

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

struct NamedDims {
    const char* name;
    const Dims* dims;
};

// Returns why the I/O dims cannot feed the kernel, or "" when they can. Only the
// relations PSLA needs are checked: same N, H, W everywhere, same c on query and
// key, output equal to value. `out` may be null when no output dims are known.
std::string checkIoDims(const Dims& query, const Dims& key, const Dims& value, const Dims* out,
                        Extents extents) {
    const NamedDims all[] = {{"query", &query}, {"key", &key}, {"value", &value}, {"output", out}};
    for (const NamedDims& t : all) {
        if (t.dims == nullptr) continue;
        if (t.dims->nbDims != 4) {
            return concat(t.name, " has rank ", t.dims->nbDims, " ", formatDims(*t.dims),
                          "; PSLA needs rank 4 ([N, C, H, W])");
        }
        for (int32_t i = 0; i < 4; ++i) {
            if (extents == Extents::kConcrete && t.dims->d[i] < 0) {
                return concat(t.name, " ", formatDims(*t.dims), " has an unresolved extent on ", kAxisNames[i]);
            }
        }
    }
    auto mismatch = [&](const NamedDims& a, const NamedDims& b, int32_t axis) {
        return concat(a.name, " ", formatDims(*a.dims), " and ", b.name, " ", formatDims(*b.dims),
                      " disagree on ", kAxisNames[axis], " (", a.dims->d[axis], " vs ", b.dims->d[axis], ")");
    };
    const NamedDims& q = all[0];
    for (int32_t axis : {0, 2, 3}) {
        for (const NamedDims* other : {&all[1], &all[2]}) {
            if (!extentsAgree(q.dims->d[axis], other->dims->d[axis], extents)) return mismatch(q, *other, axis);
        }
    }
    if (!extentsAgree(query.d[1], key.d[1], extents)) return mismatch(all[0], all[1], 1);
    if (query.d[1] == 0) {
        return concat("query ", formatDims(query), " and key ", formatDims(key),
                      " need at least one embedding channel (c = 0)");
    }
    if (out != nullptr) {
        for (int32_t axis = 0; axis < 4; ++axis) {
            if (!extentsAgree(value.d[axis], out->d[axis], extents)) {
                return concat("output ", formatDims(*out), " differs from value ", formatDims(value), " on ",
                              axis == 1 ? "C" : kAxisNames[axis]);
            }
        }
    }
    return {};
}

// NCHW with nothing between rows or planes: what TensorRT's kLINEAR means.
Strides4 contiguousStrides(const Dims& d) {
    return Strides4{d.d[1] * d.d[2] * d.d[3], d.d[2] * d.d[3], d.d[3], 1};
}

std::string layerTag(const char* name) {
    return name != nullptr && name[0] != '\0' ? concat(kTag, " (layer '", name, "')") : std::string(kTag);
}

}  // namespace

// ---------------------------------------------------------------- PslaPlugin

PslaPlugin::PslaPlugin(int32_t maxDisp)
    : mMaxDisp(maxDisp), mMetadata(concat("max_disp=", maxDisp)), mSerialField(), mSerialFields() {}

IPluginCapability* PslaPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept {
    switch (type) {
        case PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
        case PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
        case PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    logError(kTag, ": unknown capability type ", static_cast<int32_t>(type));
    return nullptr;
}

IPluginV3* PslaPlugin::clone() noexcept {
    return guard("vidtrt::PSLA clone", static_cast<IPluginV3*>(nullptr),
                 [&]() -> IPluginV3* { return new PslaPlugin(*this); });
}

const char* PslaPlugin::getPluginName() const noexcept { return kPslaPluginName; }
const char* PslaPlugin::getPluginVersion() const noexcept { return kPslaPluginVersion; }
const char* PslaPlugin::getPluginNamespace() const noexcept { return kPslaPluginNamespace; }

int32_t PslaPlugin::getNbOutputs() const noexcept { return kNbOutputs; }

int32_t PslaPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, const DataType* inputTypes,
                                       int32_t nbInputs) const noexcept {
    return guard("vidtrt::PSLA getOutputDataTypes", kFailure, [&]() -> int32_t {
        if (outputTypes == nullptr || inputTypes == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs) {
            logError(kTag, ": expected 3 inputs and 1 output, got ", nbInputs, " and ", nbOutputs);
            return kFailure;
        }
        const DataType valueType = inputTypes[kValue];
        if (!isSupportedType(valueType)) {
            logError(kTag, ": value has type ", dataTypeName(valueType), "; PSLA supports kFLOAT and kHALF");
            return kFailure;
        }
        // The output is a weighted sum of value rows, so it takes value's type.
        outputTypes[0] = valueType;
        return 0;
    });
}

int32_t PslaPlugin::getOutputShapes(const DimsExprs* inputs, int32_t nbInputs, const DimsExprs* /*shapeInputs*/,
                                    int32_t nbShapeInputs, DimsExprs* outputs, int32_t nbOutputs,
                                    nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept {
    return guard("vidtrt::PSLA getOutputShapes", kFailure, [&]() -> int32_t {
        if (inputs == nullptr || outputs == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs ||
            nbShapeInputs != 0) {
            logError(kTag, ": expected 3 inputs, 0 shape inputs and 1 output, got ", nbInputs, ", ",
                     nbShapeInputs, " and ", nbOutputs);
            return kFailure;
        }
        const char* names[] = {"query", "key", "value"};
        for (int32_t i = 0; i < kNbInputs; ++i) {
            if (inputs[i].nbDims != 4) {
                logError(kTag, ": ", names[i], " has rank ", inputs[i].nbDims, "; PSLA needs rank 4 ([N, C, H, W])");
                return kFailure;
            }
        }
        // Catch constant mismatches while the network is being defined, where the
        // message reaches the user sooner than from configurePlugin.
        auto clash = [](const nvinfer1::IDimensionExpr* a, const nvinfer1::IDimensionExpr* b) {
            return a != nullptr && b != nullptr && a->isConstant() && b->isConstant() &&
                   a->getConstantValue() != b->getConstantValue();
        };
        for (int32_t axis : {0, 2, 3}) {
            for (int32_t other : {kKey, kValue}) {
                if (clash(inputs[kQuery].d[axis], inputs[other].d[axis])) {
                    logError(kTag, ": query and ", names[other], " disagree on ", kAxisNames[axis], " (",
                             inputs[kQuery].d[axis]->getConstantValue(), " vs ",
                             inputs[other].d[axis]->getConstantValue(), ")");
                    return kFailure;
                }
            }
        }
        if (clash(inputs[kQuery].d[1], inputs[kKey].d[1])) {
            logError(kTag, ": query and key disagree on c (", inputs[kQuery].d[1]->getConstantValue(), " vs ",
                     inputs[kKey].d[1]->getConstantValue(), ")");
            return kFailure;
        }
        outputs[0] = inputs[kValue];
        return 0;
    });
}

bool PslaPlugin::supportsFormatCombination(int32_t pos, const DynamicPluginTensorDesc* inOut, int32_t nbInputs,
                                           int32_t nbOutputs) noexcept {
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

int32_t PslaPlugin::configurePlugin(const DynamicPluginTensorDesc* in, int32_t nbInputs,
                                    const DynamicPluginTensorDesc* out, int32_t nbOutputs) noexcept {
    return guard("vidtrt::PSLA configurePlugin", kFailure, [&]() -> int32_t {
        if (in == nullptr || out == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs) {
            logError(kTag, ": configurePlugin expected 3 inputs and 1 output, got ", nbInputs, " and ", nbOutputs);
            return kFailure;
        }
        const std::string error = checkIoDims(in[kQuery].desc.dims, in[kKey].desc.dims, in[kValue].desc.dims,
                                              &out[0].desc.dims, Extents::kMayBeUnknown);
        if (!error.empty()) {
            logError(kTag, ": configurePlugin: ", error);
            return kFailure;
        }
        return 0;
    });
}

size_t PslaPlugin::getWorkspaceSize(const DynamicPluginTensorDesc* /*inputs*/, int32_t /*nbInputs*/,
                                    const DynamicPluginTensorDesc* /*outputs*/,
                                    int32_t /*nbOutputs*/) const noexcept {
    return 0;
}

const char* PslaPlugin::getMetadataString() noexcept { return mMetadata.c_str(); }

int32_t PslaPlugin::setTactic(int32_t /*tactic*/) noexcept { return 0; }

int32_t PslaPlugin::onShapeChange(const PluginTensorDesc* in, int32_t nbInputs, const PluginTensorDesc* out,
                                  int32_t nbOutputs) noexcept {
    return guard("vidtrt::PSLA onShapeChange", kFailure, [&]() -> int32_t {
        if (in == nullptr || out == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs) {
            logError(kTag, ": onShapeChange expected 3 inputs and 1 output, got ", nbInputs, " and ", nbOutputs);
            return kFailure;
        }
        const std::string error =
            checkIoDims(in[kQuery].dims, in[kKey].dims, in[kValue].dims, &out[0].dims, Extents::kConcrete);
        if (!error.empty()) {
            logError(kTag, ": onShapeChange: ", error);
            return kFailure;
        }
        return 0;
    });
}

int32_t PslaPlugin::enqueue(const PluginTensorDesc* inputDesc, const PluginTensorDesc* outputDesc,
                            const void* const* inputs, void* const* outputs, void* /*workspace*/,
                            cudaStream_t stream) noexcept {
    return guard("vidtrt::PSLA enqueue", kFailure, [&]() -> int32_t {
        if (inputDesc == nullptr || outputDesc == nullptr || inputs == nullptr || outputs == nullptr) {
            logError(kTag, ": enqueue got null descriptors or buffers");
            return kFailure;
        }
        const Dims& q = inputDesc[kQuery].dims;
        const Dims& k = inputDesc[kKey].dims;
        const Dims& v = inputDesc[kValue].dims;
        // onShapeChange has already checked these; repeating it costs a few
        // compares and keeps a bad launch from reading out of bounds if a caller
        // skipped it.
        const std::string error = checkIoDims(q, k, v, &outputDesc[0].dims, Extents::kConcrete);
        if (!error.empty()) {
            logError(kTag, ": enqueue: ", error);
            return kFailure;
        }
        const DataType type = inputDesc[kQuery].type;
        DType dtype{};
        if (!toKernelType(type, dtype) || inputDesc[kKey].type != type || inputDesc[kValue].type != type ||
            outputDesc[0].type != type) {
            logError(kTag, ": enqueue: types query ", dataTypeName(type), ", key ", dataTypeName(inputDesc[kKey].type),
                     ", value ", dataTypeName(inputDesc[kValue].type), ", output ", dataTypeName(outputDesc[0].type),
                     "; PSLA needs one type, kFLOAT or kHALF, on all of them");
            return kFailure;
        }

        psla::Problem problem{};
        problem.shape = psla::Shape{q.d[0], q.d[1], v.d[1], q.d[2], q.d[3], mMaxDisp};
        problem.query = contiguousStrides(q);
        problem.key = contiguousStrides(k);
        problem.value = contiguousStrides(v);
        problem.out = contiguousStrides(outputDesc[0].dims);

        const int status = psla::forward_cuda(dtype, inputs[kQuery], inputs[kKey], inputs[kValue], outputs[0],
                                              problem, static_cast<void*>(stream));
        if (status != kSuccess) {
            logError(kTag, ": enqueue: ", statusText(status), " (status ", status, ") for query ", formatDims(q),
                     ", value ", formatDims(v), ", max_disp ", mMaxDisp);
            return status;
        }
        return 0;
    });
}

IPluginV3* PslaPlugin::attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept {
    // No per-context resources (no workspace, no handles): a plain copy will do.
    return clone();
}

const PluginFieldCollection* PslaPlugin::getFieldsToSerialize() noexcept {
    mSerialField = PluginField(kPslaMaxDispField, &mMaxDisp, PluginFieldType::kINT32, 1);
    mSerialFields.nbFields = 1;
    mSerialFields.fields = &mSerialField;
    return &mSerialFields;
}

// ---------------------------------------------------------------- PslaPluginCreator

PslaPluginCreator::PslaPluginCreator() noexcept
    : mField(kPslaMaxDispField, nullptr, PluginFieldType::kINT32, 1), mFields{1, &mField} {}

const PluginFieldCollection* PslaPluginCreator::getFieldNames() noexcept { return &mFields; }
const char* PslaPluginCreator::getPluginName() const noexcept { return kPslaPluginName; }
const char* PslaPluginCreator::getPluginVersion() const noexcept { return kPslaPluginVersion; }
const char* PslaPluginCreator::getPluginNamespace() const noexcept { return kPslaPluginNamespace; }

IPluginV3* PslaPluginCreator::createPlugin(const char* name, const PluginFieldCollection* fc,
                                           nvinfer1::TensorRTPhase phase) noexcept {
    return guard("vidtrt::PSLA createPlugin", static_cast<IPluginV3*>(nullptr), [&]() -> IPluginV3* {
        const std::string tag = layerTag(name);
        int32_t maxDisp = kPslaDefaultMaxDisp;
        const PluginField* field = nullptr;
        const FieldLookup lookup = readInt32Field(fc, kPslaMaxDispField, maxDisp, &field);
        if (lookup == FieldLookup::kMissing) {
            // getFieldsToSerialize always writes max_disp, so a runtime collection
            // without it did not come from this plugin: refuse rather than guess.
            if (phase == nvinfer1::TensorRTPhase::kRUNTIME) {
                logError(tag, ": serialized fields have no '", kPslaMaxDispField, "'");
                return nullptr;
            }
            logWarning(tag, ": no '", kPslaMaxDispField, "' field; using the default ", kPslaDefaultMaxDisp);
        } else if (lookup != FieldLookup::kFound) {
            logError(tag, ": ", describeInt32FieldError(lookup, kPslaMaxDispField, field));
            return nullptr;
        }
        if (maxDisp < 0 || maxDisp > psla::kMaxDisp) {
            logError(tag, ": ", kPslaMaxDispField, " = ", maxDisp, " is out of range [0, ", psla::kMaxDisp,
                     "] (the kernel sizes its per-position arrays for at most ", psla::kMaxDisp, ")");
            return nullptr;
        }
        // Attributes the ONNX parser forwards (plugin_version, plugin_namespace)
        // or that a newer exporter adds are not errors.
        if (fc != nullptr && fc->fields != nullptr) {
            for (int32_t i = 0; i < fc->nbFields; ++i) {
                const char* fieldName = fc->fields[i].name;
                if (fieldName == nullptr || std::strcmp(fieldName, kPslaMaxDispField) != 0) {
                    logVerbose(tag, ": ignoring field '", fieldName != nullptr ? fieldName : "(null)", "'");
                }
            }
        }
        return new PslaPlugin(maxDisp);
    });
}

}  // namespace plugin
}  // namespace vidtrt
