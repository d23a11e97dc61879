// TensorRT (IPluginV3) face of the PSLA op. The arithmetic lives in the kernel
// library behind psla_launch.h; this header only knows TensorRT types, so the
// plugin never sees the kernel body and the kernel never sees TensorRT.
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>

#include "../common/plugin_base.h"

namespace vidtrt {
namespace plugin {

// Identity under which TensorRT's registry and the ONNX parser find the plugin
// (op_type PSLA, attribute plugin_version "1", domain / plugin_namespace vidtrt).
// Name and version come from its line in plugins/vidtrt_ops.def.
inline constexpr const char* kPslaPluginName = describedOp("psla").pluginName;
inline constexpr const char* kPslaPluginVersion = describedOp("psla").pluginVersion;
inline constexpr const char* kPslaPluginNamespace = "vidtrt";
inline constexpr const char* kPslaMaxDispField = "max_disp";
// Used when a build-phase field collection has no max_disp (the paper's value).
inline constexpr int32_t kPslaDefaultMaxDisp = 4;

// Inputs: query [N, c, H, W], key [N, c, H, W], value [N, C, H, W].
// Output: [N, C, H, W]. One type (FP32 or FP16) and linear layout on all four
// (PluginBase::supportsFormatCombination).
class PslaPlugin final : public PluginBase<PslaPlugin, 1> {
public:
    static constexpr const char* kPluginName = kPslaPluginName;
    static constexpr const char* kPluginVersion = kPslaPluginVersion;
    static constexpr const char* kPluginNamespace = kPslaPluginNamespace;
    static constexpr const char* kTag = "vidtrt::PSLA";
    static constexpr int32_t kNbInputs = 3;
    static constexpr int32_t kNbOutputs = 1;
    enum Input : int32_t { kQuery = 0, kKey = 1, kValue = 2 };
    // The output is a weighted sum of value rows, so it takes value's type.
    static constexpr int32_t kOutputTypeInput = kValue;
    static constexpr const char* kOutputTypeSubject = "value has";

    // max_disp must already be validated (the creator does it).
    explicit PslaPlugin(int32_t maxDisp);
    PslaPlugin(const PslaPlugin&) = default;

    int32_t maxDisp() const noexcept { return mMaxDisp; }

private:
    friend class PluginBase<PslaPlugin, 1>;

    std::string ioDimsError(const nvinfer1::Dims* in, const nvinfer1::Dims* out, Extents extents) const;
    int32_t outputShapes(const nvinfer1::DimsExprs* inputs, nvinfer1::DimsExprs* outputs,
                         nvinfer1::IExprBuilder& exprBuilder);
    int32_t launch(const nvinfer1::PluginTensorDesc* inputDesc, const nvinfer1::PluginTensorDesc* outputDesc,
                   const void* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream);
    void fillSerialFields(nvinfer1::PluginField* fields) noexcept;

    int32_t mMaxDisp;
};

class PslaPluginCreator final : public PluginCreatorBase<PslaPluginCreator, PslaPlugin> {
public:
    PslaPluginCreator() noexcept;

private:
    friend class PluginCreatorBase<PslaPluginCreator, PslaPlugin>;

    nvinfer1::IPluginV3* createFromFields(const std::string& tag, const nvinfer1::PluginFieldCollection* fc,
                                          nvinfer1::TensorRTPhase phase);
};

}  // namespace plugin
}  // namespace vidtrt
