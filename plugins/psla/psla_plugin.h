// TensorRT (IPluginV3) face of the PSLA op. The arithmetic lives in the kernel
// library behind psla_launch.h; this header only knows TensorRT types, so the
// plugin never sees the kernel body and the kernel never sees TensorRT.
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>

namespace vidtrt {
namespace plugin {

// Identity under which TensorRT's registry and the ONNX parser find the plugin
// (op_type PSLA, attribute plugin_version "1", domain / plugin_namespace vidtrt).
inline constexpr const char* kPslaPluginName = "PSLA";
inline constexpr const char* kPslaPluginVersion = "1";
inline constexpr const char* kPslaPluginNamespace = "vidtrt";
inline constexpr const char* kPslaMaxDispField = "max_disp";
// Used when a build-phase field collection has no max_disp (the paper's value).
inline constexpr int32_t kPslaDefaultMaxDisp = 4;

// Inputs: query [N, c, H, W], key [N, c, H, W], value [N, C, H, W].
// Output: [N, C, H, W]. One type (FP32 or FP16) and linear layout on all four.
class PslaPlugin final : public nvinfer1::IPluginV3,
                         public nvinfer1::IPluginV3OneCore,
                         public nvinfer1::IPluginV3OneBuild,
                         public nvinfer1::IPluginV3OneRuntime {
public:
    static constexpr int32_t kNbInputs = 3;
    static constexpr int32_t kNbOutputs = 1;
    enum Input : int32_t { kQuery = 0, kKey = 1, kValue = 2 };

    // max_disp must already be validated (the creator does it).
    explicit PslaPlugin(int32_t maxDisp);
    PslaPlugin(const PslaPlugin&) = default;
    PslaPlugin& operator=(const PslaPlugin&) = delete;
    ~PslaPlugin() override = default;

    int32_t maxDisp() const noexcept { return mMaxDisp; }

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
    int32_t mMaxDisp;
    std::string mMetadata;
    // Rebuilt by every getFieldsToSerialize() call so that a copied plugin never
    // hands out a pointer into the object it was copied from.
    nvinfer1::PluginField mSerialField;
    nvinfer1::PluginFieldCollection mSerialFields;
};

class PslaPluginCreator final : public nvinfer1::IPluginCreatorV3One {
public:
    PslaPluginCreator() noexcept;
    ~PslaPluginCreator() override = default;

    nvinfer1::IPluginV3* createPlugin(const char* name, const nvinfer1::PluginFieldCollection* fc,
                                      nvinfer1::TensorRTPhase phase) noexcept override;
    const nvinfer1::PluginFieldCollection* getFieldNames() noexcept override;
    const char* getPluginName() const noexcept override;
    const char* getPluginVersion() const noexcept override;
    const char* getPluginNamespace() const noexcept override;

private:
    nvinfer1::PluginField mField;
    nvinfer1::PluginFieldCollection mFields;
};

}  // namespace plugin
}  // namespace vidtrt
