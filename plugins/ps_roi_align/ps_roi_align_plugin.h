// TensorRT (IPluginV3) face of the position-sensitive RoI Align op. The
// arithmetic lives in the kernel library behind ps_roi_align_launch.h; this
// header only knows TensorRT types, so the plugin never sees the kernel body
// and the kernel never sees TensorRT.
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>

namespace vidtrt {
namespace plugin {

// Identity under which TensorRT's registry and the ONNX parser find the plugin
// (op_type PSRoIAlign, attribute plugin_version "1", domain / plugin_namespace vidtrt).
inline constexpr const char* kPsRoiAlignPluginName = "PSRoIAlign";
inline constexpr const char* kPsRoiAlignPluginVersion = "1";
inline constexpr const char* kPsRoiAlignPluginNamespace = "vidtrt";
inline constexpr const char* kPsRoiAlignOutputSizeField = "output_size";
inline constexpr const char* kPsRoiAlignSpatialScaleField = "spatial_scale";
inline constexpr const char* kPsRoiAlignSamplingRatioField = "sampling_ratio";

// The attributes, validated by the creator: output_size >= 1,
// sampling_ratio >= 1, spatial_scale finite and > 0.
struct PsRoiAlignParams {
    int32_t outputSize;
    float spatialScale;
    int32_t samplingRatio;
};

// Inputs: features [N, C·k·k, H, W], rois [R, 5] = (batch, x1, y1, x2, y2).
// Output: [R, C, k, k]. One type (FP32 or FP16) and linear layout on all three.
class PsRoiAlignPlugin final : public nvinfer1::IPluginV3,
                               public nvinfer1::IPluginV3OneCore,
                               public nvinfer1::IPluginV3OneBuild,
                               public nvinfer1::IPluginV3OneRuntime {
public:
    static constexpr int32_t kNbInputs = 2;
    static constexpr int32_t kNbOutputs = 1;
    enum Input : int32_t { kFeatures = 0, kRois = 1 };

    explicit PsRoiAlignPlugin(const PsRoiAlignParams& params);
    PsRoiAlignPlugin(const PsRoiAlignPlugin&) = default;
    PsRoiAlignPlugin& operator=(const PsRoiAlignPlugin&) = delete;
    ~PsRoiAlignPlugin() override = default;

    const PsRoiAlignParams& params() const noexcept { return mParams; }

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
    PsRoiAlignParams mParams;
    std::string mMetadata;
    // Rebuilt by every getFieldsToSerialize() call so that a copied plugin never
    // hands out pointers into the object it was copied from.
    nvinfer1::PluginField mSerialFieldArray[3];
    nvinfer1::PluginFieldCollection mSerialFields;
};

class PsRoiAlignPluginCreator final : public nvinfer1::IPluginCreatorV3One {
public:
    PsRoiAlignPluginCreator() noexcept;
    ~PsRoiAlignPluginCreator() override = default;

    nvinfer1::IPluginV3* createPlugin(const char* name, const nvinfer1::PluginFieldCollection* fc,
                                      nvinfer1::TensorRTPhase phase) noexcept override;
    const nvinfer1::PluginFieldCollection* getFieldNames() noexcept override;
    const char* getPluginName() const noexcept override;
    const char* getPluginVersion() const noexcept override;
    const char* getPluginNamespace() const noexcept override;

private:
    nvinfer1::PluginField mFieldArray[3];
    nvinfer1::PluginFieldCollection mFields;
};

}  // namespace plugin
}  // namespace vidtrt
