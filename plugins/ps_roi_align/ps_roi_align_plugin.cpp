#include "ps_roi_align_plugin.h"

#include <cmath>
#include <cstring>

#include "ps_roi_align_launch.h"

namespace vidtrt {
namespace plugin {

using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::DimsExprs;
using nvinfer1::IDimensionExpr;
using nvinfer1::IPluginV3;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::PluginTensorDesc;

namespace {

constexpr const char* kTag = PsRoiAlignPlugin::kTag;
constexpr const char* kFeatureAxes[4] = {"N", "C*k*k", "H", "W"};
constexpr const char* kOutputAxes[4] = {"R", "C", "k", "k"};
constexpr int64_t kRoiColumns = 5;  // batch index, x1, y1, x2, y2

std::string metadataOf(const PsRoiAlignParams& p) {
    return concat("output_size=", p.outputSize, " spatial_scale=", p.spatialScale,
                  " sampling_ratio=", p.samplingRatio);
}

// Returns why the I/O dims cannot feed the kernel, or "" when they can.
// `out` may be null when no output dims are known.
std::string checkIoDims(const Dims& features, const Dims& rois, const Dims* out, int32_t outputSize,
                        Extents extents) {
    struct Named {
        const char* name;
        const Dims* dims;
        int32_t rank;
        const char* layout;
    };
    const Named all[] = {{"features", &features, 4, "[N, C*k*k, H, W]"},
                         {"rois", &rois, 2, "[R, 5]"},
                         {"output", out, 4, "[R, C, k, k]"}};
    for (const Named& t : all) {
        if (t.dims == nullptr) continue;
        if (t.dims->nbDims != t.rank) {
            return concat(t.name, " has rank ", t.dims->nbDims, " ", formatDims(*t.dims), "; PSRoIAlign needs rank ",
                          t.rank, " (", t.layout, ")");
        }
        for (int32_t i = 0; i < t.rank; ++i) {
            if (extents == Extents::kConcrete && t.dims->d[i] < 0) {
                return concat(t.name, " ", formatDims(*t.dims), " has an unresolved extent on axis ", i);
            }
        }
    }
    if (!extentsAgree(rois.d[1], kRoiColumns, extents)) {
        return concat("rois ", formatDims(rois), " must be [R, 5] (batch index, x1, y1, x2, y2)");
    }
    const int64_t kk = static_cast<int64_t>(outputSize) * outputSize;
    const int64_t channels = features.d[1];
    if (channels >= 0 && channels % kk != 0) {
        return concat("features ", formatDims(features), " has ", channels,
                      " channels, not a multiple of output_size^2 = ", kk, " (C*k*k)");
    }
    for (int32_t axis : {2, 3}) {
        if (features.d[axis] == 0) {
            return concat("features ", formatDims(features), " has an empty ", kFeatureAxes[axis],
                          "; bilinear sampling needs at least one row and column");
        }
    }
    if (out != nullptr) {
        const int64_t want[4] = {rois.d[0], channels < 0 ? -1 : channels / kk, outputSize, outputSize};
        for (int32_t axis = 0; axis < 4; ++axis) {
            if (!extentsAgree(out->d[axis], want[axis], extents)) {
                return concat("output ", formatDims(*out), " differs from [R, C, k, k] = [", want[0], ", ", want[1],
                              ", ", want[2], ", ", want[3], "] on ", kOutputAxes[axis], " (features ",
                              formatDims(features), ", rois ", formatDims(rois), ")");
            }
        }
    }
    return {};
}

}  // namespace

// ---------------------------------------------------------------- PsRoiAlignPlugin

PsRoiAlignPlugin::PsRoiAlignPlugin(const PsRoiAlignParams& params) : PluginBase(metadataOf(params)), mParams(params) {}

std::string PsRoiAlignPlugin::ioDimsError(const Dims* in, const Dims* out, Extents extents) const {
    return checkIoDims(in[kFeatures], in[kRois], &out[0], mParams.outputSize, extents);
}

int32_t PsRoiAlignPlugin::outputShapes(const DimsExprs* inputs, DimsExprs* outputs,
                                       nvinfer1::IExprBuilder& exprBuilder) {
    const DimsExprs& features = inputs[kFeatures];
    const DimsExprs& rois = inputs[kRois];
    if (features.nbDims != 4) {
        logError(kTag, ": features have rank ", features.nbDims, "; PSRoIAlign needs rank 4 ([N, C*k*k, H, W])");
        return kFailure;
    }
    if (rois.nbDims != 2) {
        logError(kTag, ": rois have rank ", rois.nbDims, "; PSRoIAlign needs rank 2 ([R, 5])");
        return kFailure;
    }
    // Catch constant mismatches while the network is being defined, where the
    // message reaches the user sooner than from configurePlugin.
    auto constantOtherThan = [](const IDimensionExpr* e, int64_t want) {
        return e != nullptr && e->isConstant() && e->getConstantValue() != want;
    };
    if (constantOtherThan(rois.d[1], kRoiColumns)) {
        logError(kTag, ": rois have ", rois.d[1]->getConstantValue(),
                 " columns; PSRoIAlign needs [R, 5] (batch index, x1, y1, x2, y2)");
        return kFailure;
    }
    const int64_t kk = static_cast<int64_t>(mParams.outputSize) * mParams.outputSize;
    const IDimensionExpr* channels = features.d[1];
    if (channels != nullptr && channels->isConstant() && channels->getConstantValue() % kk != 0) {
        logError(kTag, ": features have ", channels->getConstantValue(), " channels, not a multiple of output_size^2 = ",
                 kk, " (C*k*k)");
        return kFailure;
    }
    const IDimensionExpr* side = exprBuilder.constant(mParams.outputSize);
    const IDimensionExpr* outChannels =
        channels == nullptr ? nullptr
                            : exprBuilder.operation(nvinfer1::DimensionOperation::kFLOOR_DIV, *channels,
                                                    *exprBuilder.constant(kk));
    if (side == nullptr || outChannels == nullptr || rois.d[0] == nullptr) {
        logError(kTag, ": could not build the output dimensions [R, C*k*k / k^2, k, k]");
        return kFailure;
    }
    outputs[0].nbDims = 4;
    outputs[0].d[0] = rois.d[0];
    outputs[0].d[1] = outChannels;
    outputs[0].d[2] = side;
    outputs[0].d[3] = side;
    return 0;
}

int32_t PsRoiAlignPlugin::launch(const PluginTensorDesc* inputDesc, const PluginTensorDesc* outputDesc,
                                 const void* const* inputs, void* const* outputs, void* /*workspace*/,
                                 cudaStream_t stream) {
    const Dims& f = inputDesc[kFeatures].dims;
    const Dims& r = inputDesc[kRois].dims;
    const Dims& o = outputDesc[0].dims;
    const DataType type = inputDesc[kFeatures].type;
    DType dtype{};
    if (!toKernelType(type, dtype) || inputDesc[kRois].type != type || outputDesc[0].type != type) {
        logError(kTag, ": enqueue: types features ", dataTypeName(type), ", rois ", dataTypeName(inputDesc[kRois].type),
                 ", output ", dataTypeName(outputDesc[0].type),
                 "; PSRoIAlign needs one type, kFLOAT or kHALF, on all of them");
        return kFailure;
    }

    ps_roi_align::Problem problem{};
    problem.shape = ps_roi_align::Shape{f.d[0], f.d[1], f.d[2], f.d[3], r.d[0], mParams.outputSize,
                                        mParams.samplingRatio, mParams.spatialScale};
    problem.features = contiguousStrides(f);
    problem.rois = ps_roi_align::RoiStrides{r.d[1], 1};
    problem.out = contiguousStrides(o);

    // RoIs whose batch index is outside [0, N) produce zeros (the kernel
    // cannot report them without a device-to-host copy).
    const int status = ps_roi_align::forward_cuda(dtype, dtype, inputs[kFeatures], inputs[kRois], outputs[0], problem,
                                                  static_cast<void*>(stream));
    if (status != kSuccess) {
        logError(kTag, ": enqueue: ", statusText(status), " (status ", status, ") for features ", formatDims(f),
                 ", rois ", formatDims(r), ", ", metadata());
        return status;
    }
    return 0;
}

void PsRoiAlignPlugin::fillSerialFields(PluginField* fields) noexcept {
    fields[0] = PluginField(kPsRoiAlignOutputSizeField, &mParams.outputSize, PluginFieldType::kINT32, 1);
    fields[1] = PluginField(kPsRoiAlignSpatialScaleField, &mParams.spatialScale, PluginFieldType::kFLOAT32, 1);
    fields[2] = PluginField(kPsRoiAlignSamplingRatioField, &mParams.samplingRatio, PluginFieldType::kINT32, 1);
}

// ---------------------------------------------------------------- PsRoiAlignPluginCreator

PsRoiAlignPluginCreator::PsRoiAlignPluginCreator() noexcept
    : PluginCreatorBase({PluginField(kPsRoiAlignOutputSizeField, nullptr, PluginFieldType::kINT32, 1),
                         PluginField(kPsRoiAlignSpatialScaleField, nullptr, PluginFieldType::kFLOAT32, 1),
                         PluginField(kPsRoiAlignSamplingRatioField, nullptr, PluginFieldType::kINT32, 1)}) {}

IPluginV3* PsRoiAlignPluginCreator::createFromFields(const std::string& tag, const PluginFieldCollection* fc,
                                                     nvinfer1::TensorRTPhase /*phase*/) {
    // Every field is required in both phases, unlike PSLA's max_disp: no
    // value of spatial_scale (the backbone's stride) or of the grid is right
    // for every model, and a guessed one gives plausible but wrong boxes.
    PsRoiAlignParams params{};
    if (!readRequiredField(tag, fc, kPsRoiAlignOutputSizeField, params.outputSize) ||
        !readRequiredField(tag, fc, kPsRoiAlignSpatialScaleField, params.spatialScale) ||
        !readRequiredField(tag, fc, kPsRoiAlignSamplingRatioField, params.samplingRatio)) {
        return nullptr;
    }
    if (params.outputSize < 1) {
        logError(tag, ": ", kPsRoiAlignOutputSizeField, " = ", params.outputSize, " is out of range (>= 1)");
        return nullptr;
    }
    if (params.samplingRatio < 1) {
        // The kernel body could follow torchvision's adaptive grid, but the
        // model's ONNX function (what runs without this library) cannot, and
        // one node must mean the same with and without the plugin; vidtrt's
        // exporter refuses it for the same reason.
        logError(tag, ": ", kPsRoiAlignSamplingRatioField, " = ", params.samplingRatio,
                 " is out of range (>= 1); torchvision's adaptive sampling (<= 0: a grid per RoI) cannot be "
                 "expressed in a static graph, so graphs carry a fixed sampling_ratio");
        return nullptr;
    }
    if (!(std::isfinite(params.spatialScale) && params.spatialScale > 0.F)) {
        logError(tag, ": ", kPsRoiAlignSpatialScaleField, " = ", params.spatialScale,
                 " is out of range (finite and > 0)");
        return nullptr;
    }
    return new PsRoiAlignPlugin(params);
}

VIDTRT_PLUGIN_CREATOR(PsRoiAlignPluginCreator)

}  // namespace plugin
}  // namespace vidtrt
