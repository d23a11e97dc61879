// TensorRT (IPluginV3) face of the position-sensitive RoI Align op. The
// arithmetic lives in the kernel library behind ps_roi_align_launch.h; this
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
// (op_type PSRoIAlign, attribute plugin_version "1", domain / plugin_namespace vidtrt).
// Name and version come from its line in plugins/vidtrt_ops.def.
inline constexpr const char* kPsRoiAlignPluginName = describedOp("ps_roi_align").pluginName;
inline constexpr const char* kPsRoiAlignPluginVersion = describedOp("ps_roi_align").pluginVersion;
inline constexpr const char* kPsRoiAlignPluginNamespace = "vidtrt";
inline constexpr const char* kPsRoiAlignOutputSizeField = "output_size";
inline constexpr const char* kPsRoiAlignSpatialScaleField = "spatial_scale";
inline constexpr const char* kPsRoiAlignSamplingRatioField = "sampling_ratio";

// The attributes, validated by the creator: output_size >= 1,
// sampling_ratio >= 1 (the kernel body also has torchvision's adaptive
// grid, sampling_ratio <= 0, but graphs never carry it: see README.md),
// spatial_scale finite and > 0.
struct PsRoiAlignParams {
    int32_t outputSize;
    float spatialScale;
    int32_t samplingRatio;
};

// Inputs: features [N, C·k·k, H, W], rois [R, 5] = (batch, x1, y1, x2, y2).
// Output: [R, C, k, k]. One type (FP32 or FP16) and linear layout on all three
// (PluginBase::supportsFormatCombination): the CUDA launcher also takes FP32
// RoIs with FP16 features, but the ONNX exporter gives both inputs one type,
// so the plugin keeps to that.
class PsRoiAlignPlugin final : public PluginBase<PsRoiAlignPlugin, 3> {
public:
    static constexpr const char* kPluginName = kPsRoiAlignPluginName;
    static constexpr const char* kPluginVersion = kPsRoiAlignPluginVersion;
    static constexpr const char* kPluginNamespace = kPsRoiAlignPluginNamespace;
    static constexpr const char* kTag = "vidtrt::PSRoIAlign";
    static constexpr int32_t kNbInputs = 2;
    static constexpr int32_t kNbOutputs = 1;
    enum Input : int32_t { kFeatures = 0, kRois = 1 };
    // The output averages feature values, so it takes the features' type.
    static constexpr int32_t kOutputTypeInput = kFeatures;
    static constexpr const char* kOutputTypeSubject = "features have";

    explicit PsRoiAlignPlugin(const PsRoiAlignParams& params);
    PsRoiAlignPlugin(const PsRoiAlignPlugin&) = default;

    const PsRoiAlignParams& params() const noexcept { return mParams; }

private:
    friend class PluginBase<PsRoiAlignPlugin, 3>;

    std::string ioDimsError(const nvinfer1::Dims* in, const nvinfer1::Dims* out, Extents extents) const;
    int32_t outputShapes(const nvinfer1::DimsExprs* inputs, nvinfer1::DimsExprs* outputs,
                         nvinfer1::IExprBuilder& exprBuilder);
    int32_t launch(const nvinfer1::PluginTensorDesc* inputDesc, const nvinfer1::PluginTensorDesc* outputDesc,
                   const void* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream);
    void fillSerialFields(nvinfer1::PluginField* fields) noexcept;

    PsRoiAlignParams mParams;
};

class PsRoiAlignPluginCreator final : public PluginCreatorBase<PsRoiAlignPluginCreator, PsRoiAlignPlugin> {
public:
    PsRoiAlignPluginCreator() noexcept;

private:
    friend class PluginCreatorBase<PsRoiAlignPluginCreator, PsRoiAlignPlugin>;

    nvinfer1::IPluginV3* createFromFields(const std::string& tag, const nvinfer1::PluginFieldCollection* fc,
                                          nvinfer1::TensorRTPhase phase);
};

}  // namespace plugin
}  // namespace vidtrt
