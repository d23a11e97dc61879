#include "relation_propagation_plugin.h"

#include <string>

#include "../common/plugin_utils.h"
#include "relation_propagation_launch.h"

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
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginTensorDesc;
using nvinfer1::TensorFormat;

namespace {

constexpr int32_t kFailure = 1;
constexpr const char* kTag = "vidtrt::RelationPropagation";

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

struct Named {
    const char* name;
    const Dims* dims;
    int32_t rank;
    const char* layout;
};

// Returns why the I/O dims cannot feed the kernels, or "" when they can: one
// N everywhere, one d on sigma and phi (at least 1), output equal to regions.
// `out` may be null when no output dims are known.
std::string checkIoDims(const Dims& sigma, const Dims& phi, const Dims& regions, const Dims& valid, const Dims* out,
                        Extents extents) {
    const Named all[] = {{"sigma", &sigma, 2, "[N, d]"},
                         {"phi", &phi, 2, "[N, d]"},
                         {"regions", &regions, 2, "[N, D]"},
                         {"valid", &valid, 1, "[N]"},
                         {"output", out, 2, "[N, D]"}};
    for (const Named& t : all) {
        if (t.dims == nullptr) continue;
        if (t.dims->nbDims != t.rank) {
            return concat(t.name, " has rank ", t.dims->nbDims, " ", formatDims(*t.dims),
                          "; RelationPropagation needs rank ", t.rank, " (", t.layout, ")");
        }
        for (int32_t i = 0; i < t.rank; ++i) {
            if (extents == Extents::kConcrete && t.dims->d[i] < 0) {
                return concat(t.name, " ", formatDims(*t.dims), " has an unresolved extent on axis ", i);
            }
        }
    }
    for (int32_t other = 1; other < 4; ++other) {
        if (!extentsAgree(sigma.d[0], all[other].dims->d[0], extents)) {
            return concat("sigma ", formatDims(sigma), " and ", all[other].name, " ", formatDims(*all[other].dims),
                          " disagree on N (", sigma.d[0], " vs ", all[other].dims->d[0], ")");
        }
    }
    if (!extentsAgree(sigma.d[1], phi.d[1], extents)) {
        return concat("sigma ", formatDims(sigma), " and phi ", formatDims(phi), " disagree on d (", sigma.d[1],
                      " vs ", phi.d[1], ")");
    }
    if (sigma.d[1] == 0) {
        return concat("sigma ", formatDims(sigma), " and phi ", formatDims(phi),
                      " need at least one channel (d = 0)");
    }
    if (out != nullptr) {
        for (int32_t axis = 0; axis < 2; ++axis) {
            if (!extentsAgree(regions.d[axis], out->d[axis], extents)) {
                return concat("output ", formatDims(*out), " differs from regions ", formatDims(regions), " on ",
                              axis == 0 ? "N" : "D");
            }
        }
    }
    return {};
}

std::string layerTag(const char* name) {
    return name != nullptr && name[0] != '\0' ? concat(kTag, " (layer '", name, "')") : std::string(kTag);
}

}  // namespace

// ---------------------------------------------------------------- RelationPropagationPlugin

RelationPropagationPlugin::RelationPropagationPlugin() noexcept : mSerialFields{0, nullptr} {}

IPluginCapability* RelationPropagationPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept {
    switch (type) {
        case PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
        case PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
        case PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    logError(kTag, ": unknown capability type ", static_cast<int32_t>(type));
    return nullptr;
}

IPluginV3* RelationPropagationPlugin::clone() noexcept {
    return guard("vidtrt::RelationPropagation clone", static_cast<IPluginV3*>(nullptr),
                 [&]() -> IPluginV3* { return new RelationPropagationPlugin(*this); });
}

const char* RelationPropagationPlugin::getPluginName() const noexcept { return kRelationPropagationPluginName; }
const char* RelationPropagationPlugin::getPluginVersion() const noexcept { return kRelationPropagationPluginVersion; }
const char* RelationPropagationPlugin::getPluginNamespace() const noexcept {
    return kRelationPropagationPluginNamespace;
}

int32_t RelationPropagationPlugin::getNbOutputs() const noexcept { return kNbOutputs; }

int32_t RelationPropagationPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs,
                                                      const DataType* inputTypes, int32_t nbInputs) const noexcept {
    return guard("vidtrt::RelationPropagation getOutputDataTypes", kFailure, [&]() -> int32_t {
        if (outputTypes == nullptr || inputTypes == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs) {
            logError(kTag, ": expected 4 inputs and 1 output, got ", nbInputs, " and ", nbOutputs);
            return kFailure;
        }
        const DataType regionsType = inputTypes[kRegions];
        if (!isSupportedType(regionsType)) {
            logError(kTag, ": regions have type ", dataTypeName(regionsType),
                     "; RelationPropagation supports kFLOAT and kHALF");
            return kFailure;
        }
        // The output is a convex combination of region rows, so it takes their type.
        outputTypes[0] = regionsType;
        return 0;
    });
}

int32_t RelationPropagationPlugin::getOutputShapes(const DimsExprs* inputs, int32_t nbInputs,
                                                   const DimsExprs* /*shapeInputs*/, int32_t nbShapeInputs,
                                                   DimsExprs* outputs, int32_t nbOutputs,
                                                   nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept {
    return guard("vidtrt::RelationPropagation getOutputShapes", kFailure, [&]() -> int32_t {
        if (inputs == nullptr || outputs == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs ||
            nbShapeInputs != 0) {
            logError(kTag, ": expected 4 inputs, 0 shape inputs and 1 output, got ", nbInputs, ", ", nbShapeInputs,
                     " and ", nbOutputs);
            return kFailure;
        }
        const char* names[] = {"sigma", "phi", "regions", "valid"};
        const int32_t ranks[] = {2, 2, 2, 1};
        for (int32_t i = 0; i < kNbInputs; ++i) {
            if (inputs[i].nbDims != ranks[i]) {
                logError(kTag, ": ", names[i], " has rank ", inputs[i].nbDims, "; RelationPropagation needs rank ",
                         ranks[i]);
                return kFailure;
            }
        }
        // Constant mismatches are reported while the network is being defined,
        // where the message reaches the user sooner than from configurePlugin.
        auto clash = [](const IDimensionExpr* a, const IDimensionExpr* b) {
            return a != nullptr && b != nullptr && a->isConstant() && b->isConstant() &&
                   a->getConstantValue() != b->getConstantValue();
        };
        for (int32_t other : {kPhi, kRegions, kValid}) {
            if (clash(inputs[kSigma].d[0], inputs[other].d[0])) {
                logError(kTag, ": sigma and ", names[other], " disagree on N (",
                         inputs[kSigma].d[0]->getConstantValue(), " vs ", inputs[other].d[0]->getConstantValue(), ")");
                return kFailure;
            }
        }
        if (clash(inputs[kSigma].d[1], inputs[kPhi].d[1])) {
            logError(kTag, ": sigma and phi disagree on d (", inputs[kSigma].d[1]->getConstantValue(), " vs ",
                     inputs[kPhi].d[1]->getConstantValue(), ")");
            return kFailure;
        }
        outputs[0] = inputs[kRegions];
        return 0;
    });
}

bool RelationPropagationPlugin::supportsFormatCombination(int32_t pos, const DynamicPluginTensorDesc* inOut,
                                                          int32_t nbInputs, int32_t nbOutputs) noexcept {
    if (inOut == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs || pos < 0 ||
        pos >= nbInputs + nbOutputs) {
        return false;
    }
    // One storage type everywhere, valid included: the kernels read every
    // input through one NumTraits<T>, and the exporter casts valid to sigma's
    // type before the node (0 and 1 are exact in FP16). TensorRT asks in
    // position order, so inOut[0] is settled when pos > 0.
    const PluginTensorDesc& desc = inOut[pos].desc;
    if (desc.format != TensorFormat::kLINEAR || !isSupportedType(desc.type)) return false;
    return pos == 0 || desc.type == inOut[0].desc.type;
}

int32_t RelationPropagationPlugin::configurePlugin(const DynamicPluginTensorDesc* in, int32_t nbInputs,
                                                   const DynamicPluginTensorDesc* out, int32_t nbOutputs) noexcept {
    return guard("vidtrt::RelationPropagation configurePlugin", kFailure, [&]() -> int32_t {
        if (in == nullptr || out == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs) {
            logError(kTag, ": configurePlugin expected 4 inputs and 1 output, got ", nbInputs, " and ", nbOutputs);
            return kFailure;
        }
        const std::string error = checkIoDims(in[kSigma].desc.dims, in[kPhi].desc.dims, in[kRegions].desc.dims,
                                              in[kValid].desc.dims, &out[0].desc.dims, Extents::kMayBeUnknown);
        if (!error.empty()) {
            logError(kTag, ": configurePlugin: ", error);
            return kFailure;
        }
        return 0;
    });
}

size_t RelationPropagationPlugin::getWorkspaceSize(const DynamicPluginTensorDesc* inputs, int32_t nbInputs,
                                                   const DynamicPluginTensorDesc* /*outputs*/,
                                                   int32_t /*nbOutputs*/) const noexcept {
    // Sized for the profile's largest N and D: the workspace only grows with
    // both, so every shape the engine runs fits. A (N² floats) dominates.
    if (inputs == nullptr || nbInputs != kNbInputs || inputs[kSigma].max.nbDims != 2 ||
        inputs[kRegions].max.nbDims != 2) {
        return 0;
    }
    return relation_propagation::cuda_workspace_bytes(inputs[kSigma].max.d[0], inputs[kRegions].max.d[1]);
}

const char* RelationPropagationPlugin::getMetadataString() noexcept { return ""; }

int32_t RelationPropagationPlugin::setTactic(int32_t /*tactic*/) noexcept { return 0; }

int32_t RelationPropagationPlugin::onShapeChange(const PluginTensorDesc* in, int32_t nbInputs,
                                                 const PluginTensorDesc* out, int32_t nbOutputs) noexcept {
    return guard("vidtrt::RelationPropagation onShapeChange", kFailure, [&]() -> int32_t {
        if (in == nullptr || out == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs) {
            logError(kTag, ": onShapeChange expected 4 inputs and 1 output, got ", nbInputs, " and ", nbOutputs);
            return kFailure;
        }
        const std::string error = checkIoDims(in[kSigma].dims, in[kPhi].dims, in[kRegions].dims, in[kValid].dims,
                                              &out[0].dims, Extents::kConcrete);
        if (!error.empty()) {
            logError(kTag, ": onShapeChange: ", error);
            return kFailure;
        }
        return 0;
    });
}

int32_t RelationPropagationPlugin::enqueue(const PluginTensorDesc* inputDesc, const PluginTensorDesc* outputDesc,
                                           const void* const* inputs, void* const* outputs, void* workspace,
                                           cudaStream_t stream) noexcept {
    return guard("vidtrt::RelationPropagation enqueue", kFailure, [&]() -> int32_t {
        if (inputDesc == nullptr || outputDesc == nullptr || inputs == nullptr || outputs == nullptr) {
            logError(kTag, ": enqueue got null descriptors or buffers");
            return kFailure;
        }
        const Dims& s = inputDesc[kSigma].dims;
        const Dims& r = inputDesc[kRegions].dims;
        // onShapeChange has already checked these; repeating it costs a few
        // compares and keeps a bad launch from reading out of bounds if a caller
        // skipped it.
        const std::string error = checkIoDims(s, inputDesc[kPhi].dims, r, inputDesc[kValid].dims, &outputDesc[0].dims,
                                              Extents::kConcrete);
        if (!error.empty()) {
            logError(kTag, ": enqueue: ", error);
            return kFailure;
        }
        const DataType type = inputDesc[kSigma].type;
        DType dtype{};
        if (!toKernelType(type, dtype) || inputDesc[kPhi].type != type || inputDesc[kRegions].type != type ||
            inputDesc[kValid].type != type || outputDesc[0].type != type) {
            logError(kTag, ": enqueue: types sigma ", dataTypeName(type), ", phi ", dataTypeName(inputDesc[kPhi].type),
                     ", regions ", dataTypeName(inputDesc[kRegions].type), ", valid ",
                     dataTypeName(inputDesc[kValid].type), ", output ", dataTypeName(outputDesc[0].type),
                     "; RelationPropagation needs one type, kFLOAT or kHALF, on all of them");
            return kFailure;
        }

        const int64_t N = s.d[0], d = s.d[1], D = r.d[1];
        relation_propagation::Problem problem{};
        problem.shape = relation_propagation::Shape{N, d, D};
        problem.sigma = relation_propagation::Strides2{d, 1};
        problem.phi = relation_propagation::Strides2{d, 1};
        problem.regions = relation_propagation::Strides2{D, 1};
        problem.valid = 1;
        problem.out = relation_propagation::Strides2{D, 1};

        // TensorRT allocated getWorkspaceSize() for the profile's largest
        // shapes, which covers what these (smaller or equal) shapes need.
        const int status = relation_propagation::forward_cuda(
            dtype, inputs[kSigma], inputs[kPhi], inputs[kRegions], inputs[kValid], outputs[0], problem, workspace,
            relation_propagation::cuda_workspace_bytes(N, D), static_cast<void*>(stream));
        if (status != kSuccess) {
            logError(kTag, ": enqueue: ", statusText(status), " (status ", status, ") for sigma ", formatDims(s),
                     ", regions ", formatDims(r), workspace == nullptr ? " (no workspace)" : "");
            return status;
        }
        return 0;
    });
}

IPluginV3* RelationPropagationPlugin::attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept {
    // Scratch comes from TensorRT's workspace, so there is nothing per context.
    return clone();
}

const PluginFieldCollection* RelationPropagationPlugin::getFieldsToSerialize() noexcept {
    mSerialFields.nbFields = 0;
    mSerialFields.fields = nullptr;
    return &mSerialFields;
}

// ---------------------------------------------------------------- RelationPropagationPluginCreator

RelationPropagationPluginCreator::RelationPropagationPluginCreator() noexcept : mFields{0, nullptr} {}

const PluginFieldCollection* RelationPropagationPluginCreator::getFieldNames() noexcept { return &mFields; }
const char* RelationPropagationPluginCreator::getPluginName() const noexcept { return kRelationPropagationPluginName; }
const char* RelationPropagationPluginCreator::getPluginVersion() const noexcept {
    return kRelationPropagationPluginVersion;
}
const char* RelationPropagationPluginCreator::getPluginNamespace() const noexcept {
    return kRelationPropagationPluginNamespace;
}

IPluginV3* RelationPropagationPluginCreator::createPlugin(const char* name, const PluginFieldCollection* fc,
                                                          nvinfer1::TensorRTPhase /*phase*/) noexcept {
    return guard("vidtrt::RelationPropagation createPlugin", static_cast<IPluginV3*>(nullptr), [&]() -> IPluginV3* {
        // No attributes: whatever the ONNX parser forwards (plugin_version,
        // plugin_namespace) or a newer exporter adds is not an error.
        if (fc != nullptr && fc->fields != nullptr) {
            const std::string tag = layerTag(name);
            for (int32_t i = 0; i < fc->nbFields; ++i) {
                const char* fieldName = fc->fields[i].name;
                logVerbose(tag, ": ignoring field '", fieldName != nullptr ? fieldName : "(null)", "'");
            }
        }
        return new RelationPropagationPlugin();
    });
}

}  // namespace plugin
}  // namespace vidtrt
