#include "relation_propagation_plugin.h"

#include <string>

#include "relation_propagation_launch.h"

namespace vidtrt {
namespace plugin {

using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::DimsExprs;
using nvinfer1::DynamicPluginTensorDesc;
using nvinfer1::IDimensionExpr;
using nvinfer1::IPluginV3;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginTensorDesc;

namespace {

constexpr const char* kTag = RelationPropagationPlugin::kTag;

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

}  // namespace

// ---------------------------------------------------------------- RelationPropagationPlugin

// No attributes, so nothing to describe in the metadata.
RelationPropagationPlugin::RelationPropagationPlugin() : PluginBase(std::string()) {}

std::string RelationPropagationPlugin::ioDimsError(const Dims* in, const Dims* out, Extents extents) const {
    return checkIoDims(in[kSigma], in[kPhi], in[kRegions], in[kValid], &out[0], extents);
}

int32_t RelationPropagationPlugin::outputShapes(const DimsExprs* inputs, DimsExprs* outputs,
                                                nvinfer1::IExprBuilder& /*exprBuilder*/) {
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
            logError(kTag, ": sigma and ", names[other], " disagree on N (", inputs[kSigma].d[0]->getConstantValue(),
                     " vs ", inputs[other].d[0]->getConstantValue(), ")");
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

int32_t RelationPropagationPlugin::launch(const PluginTensorDesc* inputDesc, const PluginTensorDesc* outputDesc,
                                          const void* const* inputs, void* const* outputs, void* workspace,
                                          cudaStream_t stream) {
    const Dims& s = inputDesc[kSigma].dims;
    const Dims& r = inputDesc[kRegions].dims;
    const DataType type = inputDesc[kSigma].type;
    DType dtype{};
    if (!toKernelType(type, dtype) || inputDesc[kPhi].type != type || inputDesc[kRegions].type != type ||
        inputDesc[kValid].type != type || outputDesc[0].type != type) {
        logError(kTag, ": enqueue: types sigma ", dataTypeName(type), ", phi ", dataTypeName(inputDesc[kPhi].type),
                 ", regions ", dataTypeName(inputDesc[kRegions].type), ", valid ", dataTypeName(inputDesc[kValid].type),
                 ", output ", dataTypeName(outputDesc[0].type),
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
}

// ---------------------------------------------------------------- RelationPropagationPluginCreator

RelationPropagationPluginCreator::RelationPropagationPluginCreator() noexcept : PluginCreatorBase({}) {}

IPluginV3* RelationPropagationPluginCreator::createFromFields(const std::string& /*tag*/,
                                                              const PluginFieldCollection* /*fc*/,
                                                              nvinfer1::TensorRTPhase /*phase*/) {
    // No attributes: PluginCreatorBase logs whatever the ONNX parser forwards
    // (plugin_version, plugin_namespace) or a newer exporter adds as ignored.
    return new RelationPropagationPlugin();
}

VIDTRT_PLUGIN_CREATOR(RelationPropagationPluginCreator)

}  // namespace plugin
}  // namespace vidtrt
