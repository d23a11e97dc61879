// TensorRT (IPluginV3) face of the fixed-size NMS op. The arithmetic lives in
// the kernel library behind fixed_size_nms_launch.h; this header only knows
// TensorRT types, so the plugin never sees the kernel body and the kernel
// never sees TensorRT.
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>

#include "../common/plugin_base.h"

namespace vidtrt {
namespace plugin {

// Identity under which TensorRT's registry and the ONNX parser find the plugin
// (op_type FixedSizeNMS, attribute plugin_version "1", domain / plugin_namespace vidtrt).
// Name and version come from its line in plugins/vidtrt_ops.def.
inline constexpr const char* kFixedSizeNmsPluginName = describedOp("fixed_size_nms").pluginName;
inline constexpr const char* kFixedSizeNmsPluginVersion = describedOp("fixed_size_nms").pluginVersion;
inline constexpr const char* kFixedSizeNmsPluginNamespace = "vidtrt";
inline constexpr const char* kFixedSizeNmsIouThresholdField = "iou_threshold";
inline constexpr const char* kFixedSizeNmsMaxOutputField = "max_output";

// The attributes, validated by the creator: iou_threshold finite,
// max_output >= 1.
struct FixedSizeNmsParams {
    float iouThreshold;
    int32_t maxOutput;
};

// Inputs: boxes [K, 4] = (x1, y1, x2, y2), scores [K], both kFLOAT. Output:
// keep [max_output] kINT32 (indices into the input, then -1). Unlike the
// other vidtrt plugins the output is not of the inputs' type and FP16 is not
// offered (the IoU must be torchvision's FP32 expression), so this class
// replaces PluginBase's type and format rules. Scratch comes from the
// TensorRT workspace (the suppression mask is K² bits, see getWorkspaceSize).
class FixedSizeNmsPlugin final : public PluginBase<FixedSizeNmsPlugin, 2> {
public:
    static constexpr const char* kPluginName = kFixedSizeNmsPluginName;
    static constexpr const char* kPluginVersion = kFixedSizeNmsPluginVersion;
    static constexpr const char* kPluginNamespace = kFixedSizeNmsPluginNamespace;
    static constexpr const char* kTag = "vidtrt::FixedSizeNMS";
    static constexpr int32_t kNbInputs = 2;
    static constexpr int32_t kNbOutputs = 1;
    enum Input : int32_t { kBoxes = 0, kScores = 1 };
    // Read only by PluginBase's getOutputDataTypes, which this class overrides.
    static constexpr int32_t kOutputTypeInput = kBoxes;
    static constexpr const char* kOutputTypeSubject = "boxes have";

    explicit FixedSizeNmsPlugin(const FixedSizeNmsParams& params);
    FixedSizeNmsPlugin(const FixedSizeNmsPlugin&) = default;

    const FixedSizeNmsParams& params() const noexcept { return mParams; }

    // kFLOAT inputs give a kINT32 output.
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
                               const nvinfer1::DataType* inputTypes, int32_t nbInputs) const noexcept override;
    // Linear kFLOAT boxes and scores, linear kINT32 keep; nothing else.
    bool supportsFormatCombination(int32_t pos, const nvinfer1::DynamicPluginTensorDesc* inOut, int32_t nbInputs,
                                   int32_t nbOutputs) noexcept override;
    size_t getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* inputs, int32_t nbInputs,
                            const nvinfer1::DynamicPluginTensorDesc* outputs,
                            int32_t nbOutputs) const noexcept override;

private:
    friend class PluginBase<FixedSizeNmsPlugin, 2>;

    std::string ioDimsError(const nvinfer1::Dims* in, const nvinfer1::Dims* out, Extents extents) const;
    int32_t outputShapes(const nvinfer1::DimsExprs* inputs, nvinfer1::DimsExprs* outputs,
                         nvinfer1::IExprBuilder& exprBuilder);
    int32_t launch(const nvinfer1::PluginTensorDesc* inputDesc, const nvinfer1::PluginTensorDesc* outputDesc,
                   const void* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream);
    void fillSerialFields(nvinfer1::PluginField* fields) noexcept;

    FixedSizeNmsParams mParams;
};

class FixedSizeNmsPluginCreator final : public PluginCreatorBase<FixedSizeNmsPluginCreator, FixedSizeNmsPlugin> {
public:
    FixedSizeNmsPluginCreator() noexcept;

private:
    friend class PluginCreatorBase<FixedSizeNmsPluginCreator, FixedSizeNmsPlugin>;

    nvinfer1::IPluginV3* createFromFields(const std::string& tag, const nvinfer1::PluginFieldCollection* fc,
                                          nvinfer1::TensorRTPhase phase);
};

}  // namespace plugin
}  // namespace vidtrt
