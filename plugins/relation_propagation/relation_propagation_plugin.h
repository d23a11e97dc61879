// TensorRT (IPluginV3) face of the relation propagation op. The arithmetic
// lives in the kernel library behind relation_propagation_launch.h; this
// header only knows TensorRT types, so the plugin never sees the kernels and
// the kernels never see TensorRT.
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>

namespace vidtrt {
namespace plugin {

// Identity under which TensorRT's registry and the ONNX parser find the plugin
// (op_type RelationPropagation, attribute plugin_version "1", domain /
// plugin_namespace vidtrt). The op has no attributes, so there are no fields.
inline constexpr const char* kRelationPropagationPluginName = "RelationPropagation";
inline constexpr const char* kRelationPropagationPluginVersion = "1";
inline constexpr const char* kRelationPropagationPluginNamespace = "vidtrt";

// Inputs: sigma [N, d], phi [N, d], regions [N, D], valid [N] (0/1 in the
// same type as the others; nonzero = valid). Output: [N, D]. One type (FP32
// or FP16) and linear layout on all five. Scratch comes from the TensorRT
// workspace (A alone is N² FP32, see getWorkspaceSize).
class RelationPropagationPlugin final : public nvinfer1::IPluginV3,
                                        public nvinfer1::IPluginV3OneCore,
                                        public nvinfer1::IPluginV3OneBuild,
                                        public nvinfer1::IPluginV3OneRuntime {
public:
    static constexpr int32_t kNbInputs = 4;
    static constexpr int32_t kNbOutputs = 1;
    enum Input : int32_t { kSigma = 0, kPhi = 1, kRegions = 2, kValid = 3 };

    RelationPropagationPlugin() noexcept;
    RelationPropagationPlugin(const RelationPropagationPlugin&) = default;
    RelationPropagationPlugin& operator=(const RelationPropagationPlugin&) = delete;
    ~RelationPropagationPlugin() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    const char* getPluginName() const noexcept override;
    const char* getPluginVersion() const noexcept override;
    const char* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nbInputs,
                            const nvinfer1::DynamicPluginTensorDesc* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
                               const nvinfer1::DataType* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(const nvinfer1::DimsExprs* inputs, int32_t nbInputs,
                            const nvinfer1::DimsExprs* shapeInputs, int32_t nbShapeInputs,
                            nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                            nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, const nvinfer1::DynamicPluginTensorDesc* inOut,
                                   int32_t nbInputs, int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override;
    size_t getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* inputs, int32_t nbInputs,
                            const nvinfer1::DynamicPluginTensorDesc* outputs,
                            int32_t nbOutputs) const noexcept override;
    const char* getMetadataString() noexcept override;

    // IPluginV3OneRuntime
    int32_t setTactic(int32_t tactic) noexcept override;
    int32_t onShapeChange(const nvinfer1::PluginTensorDesc* in, int32_t nbInputs,
                          const nvinfer1::PluginTensorDesc* out, int32_t nbOutputs) noexcept override;
    int32_t enqueue(const nvinfer1::PluginTensorDesc* inputDesc, const nvinfer1::PluginTensorDesc* outputDesc,
                    const void* const* inputs, void* const* outputs, void* workspace,
                    cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    const nvinfer1::PluginFieldCollection* getFieldsToSerialize() noexcept override;

private:
    // Empty, but TensorRT wants a collection (not nullptr) to serialize.
    nvinfer1::PluginFieldCollection mSerialFields;
};

class RelationPropagationPluginCreator final : public nvinfer1::IPluginCreatorV3One {
public:
    RelationPropagationPluginCreator() noexcept;
    ~RelationPropagationPluginCreator() override = default;

    nvinfer1::IPluginV3* createPlugin(const char* name, const nvinfer1::PluginFieldCollection* fc,
                                      nvinfer1::TensorRTPhase phase) noexcept override;
    const nvinfer1::PluginFieldCollection* getFieldNames() noexcept override;
    const char* getPluginName() const noexcept override;
    const char* getPluginVersion() const noexcept override;
    const char* getPluginNamespace() const noexcept override;

private:
    nvinfer1::PluginFieldCollection mFields;
};

}  // namespace plugin
}  // namespace vidtrt
