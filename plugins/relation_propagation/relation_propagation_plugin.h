// TensorRT (IPluginV3) face of the relation propagation op. The arithmetic
// lives in the kernel library behind relation_propagation_launch.h; this
// header only knows TensorRT types, so the plugin never sees the kernels and
// the kernels never see TensorRT.
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>

#include "../common/plugin_base.h"

namespace vidtrt {
namespace plugin {

// Identity under which TensorRT's registry and the ONNX parser find the plugin
// (op_type RelationPropagation, attribute plugin_version "1", domain /
// plugin_namespace vidtrt). The op has no attributes, so there are no fields.
// Name and version come from its line in plugins/vidtrt_ops.def.
inline constexpr const char* kRelationPropagationPluginName = describedOp("relation_propagation").pluginName;
inline constexpr const char* kRelationPropagationPluginVersion = describedOp("relation_propagation").pluginVersion;
inline constexpr const char* kRelationPropagationPluginNamespace = "vidtrt";

// Inputs: sigma [N, d], phi [N, d], regions [N, D], valid [N] (0/1 in the
// same type as the others; nonzero = valid). Output: [N, D]. One type (FP32
// or FP16) and linear layout on all five (PluginBase::supportsFormatCombination),
// valid included: the kernels read every input through one NumTraits<T>, and
// the exporter casts valid to sigma's type before the node (0 and 1 are exact
// in FP16). Scratch comes from the TensorRT workspace (A alone is N² FP32, see
// getWorkspaceSize).
class RelationPropagationPlugin final : public PluginBase<RelationPropagationPlugin, 0> {
public:
    static constexpr const char* kPluginName = kRelationPropagationPluginName;
    static constexpr const char* kPluginVersion = kRelationPropagationPluginVersion;
    static constexpr const char* kPluginNamespace = kRelationPropagationPluginNamespace;
    static constexpr const char* kTag = "vidtrt::RelationPropagation";
    static constexpr int32_t kNbInputs = 4;
    static constexpr int32_t kNbOutputs = 1;
    enum Input : int32_t { kSigma = 0, kPhi = 1, kRegions = 2, kValid = 3 };
    // The output is a convex combination of region rows, so it takes their type.
    static constexpr int32_t kOutputTypeInput = kRegions;
    static constexpr const char* kOutputTypeSubject = "regions have";

    RelationPropagationPlugin();
    RelationPropagationPlugin(const RelationPropagationPlugin&) = default;

    size_t getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* inputs, int32_t nbInputs,
                            const nvinfer1::DynamicPluginTensorDesc* outputs,
                            int32_t nbOutputs) const noexcept override;

private:
    friend class PluginBase<RelationPropagationPlugin, 0>;

    std::string ioDimsError(const nvinfer1::Dims* in, const nvinfer1::Dims* out, Extents extents) const;
    int32_t outputShapes(const nvinfer1::DimsExprs* inputs, nvinfer1::DimsExprs* outputs,
                         nvinfer1::IExprBuilder& exprBuilder);
    int32_t launch(const nvinfer1::PluginTensorDesc* inputDesc, const nvinfer1::PluginTensorDesc* outputDesc,
                   const void* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream);
};

class RelationPropagationPluginCreator final
    : public PluginCreatorBase<RelationPropagationPluginCreator, RelationPropagationPlugin> {
public:
    RelationPropagationPluginCreator() noexcept;

private:
    friend class PluginCreatorBase<RelationPropagationPluginCreator, RelationPropagationPlugin>;

    nvinfer1::IPluginV3* createFromFields(const std::string& tag, const nvinfer1::PluginFieldCollection* fc,
                                          nvinfer1::TensorRTPhase phase);
};

}  // namespace plugin
}  // namespace vidtrt
