// TensorRT (IPluginV3) face of the most-similar RoI align op. The arithmetic
// lives in the kernel library behind most_similar_roi_align_launch.h; this
// header only knows TensorRT types, so the plugin never sees the kernel body
// and the kernel never sees TensorRT.
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>

namespace vidtrt {
namespace plugin {

// Identity under which TensorRT's registry and the ONNX parser find the plugin
// (op_type MostSimilarRoIAlign, attribute plugin_version "1", domain /
// plugin_namespace vidtrt).
inline constexpr const char* kMsraPluginName = "MostSimilarRoIAlign";
inline constexpr const char* kMsraPluginVersion = "1";
inline constexpr const char* kMsraPluginNamespace = "vidtrt";
inline constexpr const char* kMsraTopKField = "top_k";

// Inputs: roi_feats [R, C, h, w], support_feats [T, C, H, W].
// Output: [T, R, C, h, w]. One type (FP32 or FP16) and linear layout on all
// three. Needs a workspace (the normalised FP32 copies of both inputs).
class MostSimilarRoiAlignPlugin final : public nvinfer1::IPluginV3,
                                        public nvinfer1::IPluginV3OneCore,
                                        public nvinfer1::IPluginV3OneBuild,
                                        public nvinfer1::IPluginV3OneRuntime {
public:
    static constexpr int32_t kNbInputs = 2;
    static constexpr int32_t kNbOutputs = 1;
    enum Input : int32_t { kRoi = 0, kSupport = 1 };

    // top_k must already be validated (the creator does it).
    explicit MostSimilarRoiAlignPlugin(int32_t topK);
    MostSimilarRoiAlignPlugin(const MostSimilarRoiAlignPlugin&) = default;
    MostSimilarRoiAlignPlugin& operator=(const MostSimilarRoiAlignPlugin&) = delete;
    ~MostSimilarRoiAlignPlugin() override = default;

    int32_t topK() const noexcept { return mTopK; }

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
    int32_t mTopK;
    std::string mMetadata;
    // Rebuilt by every getFieldsToSerialize() call so that a copied plugin never
    // hands out a pointer into the object it was copied from.
    nvinfer1::PluginField mSerialField;
    nvinfer1::PluginFieldCollection mSerialFields;
};

class MostSimilarRoiAlignPluginCreator final : public nvinfer1::IPluginCreatorV3One {
public:
    MostSimilarRoiAlignPluginCreator() noexcept;
    ~MostSimilarRoiAlignPluginCreator() override = default;

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
