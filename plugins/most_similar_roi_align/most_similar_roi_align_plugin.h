// TensorRT (IPluginV3) face of the most-similar RoI align op. The arithmetic
// lives in the kernel library behind most_similar_roi_align_launch.h; this
// header only knows TensorRT types, so the plugin never sees the kernel body
// and the kernel never sees TensorRT.
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>

#include "../common/plugin_base.h"

namespace vidtrt {
namespace plugin {

// Identity under which TensorRT's registry and the ONNX parser find the plugin
// (op_type MostSimilarRoIAlign, attribute plugin_version "1", domain /
// plugin_namespace vidtrt).
// Name and version come from its line in plugins/vidtrt_ops.def.
inline constexpr const char* kMsraPluginName = describedOp("most_similar_roi_align").pluginName;
inline constexpr const char* kMsraPluginVersion = describedOp("most_similar_roi_align").pluginVersion;
inline constexpr const char* kMsraPluginNamespace = "vidtrt";
inline constexpr const char* kMsraTopKField = "top_k";

// Inputs: roi_feats [R, C, h, w], support_feats [T, C, H, W].
// Output: [T, R, C, h, w]. One type (FP32 or FP16) and linear layout on all
// three (PluginBase::supportsFormatCombination). Needs a workspace (the
// normalised FP32 copies of both inputs).
class MostSimilarRoiAlignPlugin final : public PluginBase<MostSimilarRoiAlignPlugin, 1> {
public:
    static constexpr const char* kPluginName = kMsraPluginName;
    static constexpr const char* kPluginVersion = kMsraPluginVersion;
    static constexpr const char* kPluginNamespace = kMsraPluginNamespace;
    static constexpr const char* kTag = "vidtrt::MostSimilarRoIAlign";
    static constexpr int32_t kNbInputs = 2;
    static constexpr int32_t kNbOutputs = 1;
    enum Input : int32_t { kRoi = 0, kSupport = 1 };
    // The output is a weighted sum of support vectors, so it takes their type.
    static constexpr int32_t kOutputTypeInput = kSupport;
    static constexpr const char* kOutputTypeSubject = "support_feats have";

    // top_k must already be validated (the creator does it).
    explicit MostSimilarRoiAlignPlugin(int32_t topK);
    MostSimilarRoiAlignPlugin(const MostSimilarRoiAlignPlugin&) = default;

    int32_t topK() const noexcept { return mTopK; }

    size_t getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* inputs, int32_t nbInputs,
                            const nvinfer1::DynamicPluginTensorDesc* outputs,
                            int32_t nbOutputs) const noexcept override;

private:
    friend class PluginBase<MostSimilarRoiAlignPlugin, 1>;

    std::string ioDimsError(const nvinfer1::Dims* in, const nvinfer1::Dims* out, Extents extents) const;
    void afterConfigure(const nvinfer1::DynamicPluginTensorDesc* in,
                        const nvinfer1::DynamicPluginTensorDesc* out) const;
    int32_t outputShapes(const nvinfer1::DimsExprs* inputs, nvinfer1::DimsExprs* outputs,
                         nvinfer1::IExprBuilder& exprBuilder);
    int32_t launch(const nvinfer1::PluginTensorDesc* inputDesc, const nvinfer1::PluginTensorDesc* outputDesc,
                   const void* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream);
    void fillSerialFields(nvinfer1::PluginField* fields) noexcept;

    int32_t mTopK;
};

class MostSimilarRoiAlignPluginCreator final
    : public PluginCreatorBase<MostSimilarRoiAlignPluginCreator, MostSimilarRoiAlignPlugin> {
public:
    MostSimilarRoiAlignPluginCreator() noexcept;

private:
    friend class PluginCreatorBase<MostSimilarRoiAlignPluginCreator, MostSimilarRoiAlignPlugin>;

    nvinfer1::IPluginV3* createFromFields(const std::string& tag, const nvinfer1::PluginFieldCollection* fc,
                                          nvinfer1::TensorRTPhase phase);
};

}  // namespace plugin
}  // namespace vidtrt
