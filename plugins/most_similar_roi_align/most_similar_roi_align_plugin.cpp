#include "most_similar_roi_align_plugin.h"

#include "most_similar_roi_align_launch.h"

namespace vidtrt {
namespace plugin {

using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::DimsExprs;
using nvinfer1::DynamicPluginTensorDesc;
using nvinfer1::IDimensionExpr;
using nvinfer1::IPluginV3;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::PluginTensorDesc;

namespace msra = most_similar_roi_align;

namespace {

constexpr const char* kTag = MostSimilarRoiAlignPlugin::kTag;
constexpr const char* kRoiAxes[4] = {"R", "C", "h", "w"};
constexpr const char* kSupportAxes[4] = {"T", "C", "H", "W"};
constexpr const char* kOutputAxes[5] = {"T", "R", "C", "h", "w"};

// Returns why the I/O dims cannot feed the kernel, or "" when they can.
// `out` may be null when no output dims are known.
std::string checkIoDims(const Dims& roi, const Dims& support, const Dims* out, int32_t topK, Extents extents) {
    struct Named {
        const char* name;
        const Dims* dims;
        int32_t rank;
        const char* layout;
        const char* const* axes;
    };
    const Named all[] = {{"roi_feats", &roi, 4, "[R, C, h, w]", kRoiAxes},
                         {"support_feats", &support, 4, "[T, C, H, W]", kSupportAxes},
                         {"output", out, 5, "[T, R, C, h, w]", kOutputAxes}};
    for (const Named& t : all) {
        if (t.dims == nullptr) continue;
        if (t.dims->nbDims != t.rank) {
            return concat(t.name, " has rank ", t.dims->nbDims, " ", formatDims(*t.dims),
                          "; MostSimilarRoIAlign needs rank ", t.rank, " (", t.layout, ")");
        }
        for (int32_t i = 0; i < t.rank; ++i) {
            if (extents == Extents::kConcrete && t.dims->d[i] < 0) {
                return concat(t.name, " ", formatDims(*t.dims), " has an unresolved extent on ", t.axes[i]);
            }
        }
    }
    if (!extentsAgree(roi.d[1], support.d[1], extents)) {
        return concat("roi_feats ", formatDims(roi), " and support_feats ", formatDims(support),
                      " disagree on C (", roi.d[1], " vs ", support.d[1], ")");
    }
    // Each query keeps top_k distinct cells of a frame, so a frame needs that many.
    if (support.d[2] >= 0 && support.d[3] >= 0 && support.d[2] * support.d[3] < topK) {
        return concat("support_feats ", formatDims(support), " has H*W = ", support.d[2] * support.d[3],
                      " cells, fewer than top_k = ", topK);
    }
    if (out != nullptr) {
        const int64_t want[5] = {support.d[0], roi.d[0], roi.d[1], roi.d[2], roi.d[3]};
        for (int32_t axis = 0; axis < 5; ++axis) {
            if (!extentsAgree(out->d[axis], want[axis], extents)) {
                return concat("output ", formatDims(*out), " differs from [T, R, C, h, w] = [", want[0], ", ", want[1],
                              ", ", want[2], ", ", want[3], ", ", want[4], "] on ", kOutputAxes[axis],
                              " (roi_feats ", formatDims(roi), ", support_feats ", formatDims(support), ")");
            }
        }
    }
    return {};
}

msra::Strides5 contiguousStrides5(const Dims& d) {
    const int64_t x = 1;
    const int64_t y = d.d[4];
    const int64_t c = d.d[3] * y;
    const int64_t r = d.d[2] * c;
    return msra::Strides5{d.d[1] * r, r, c, y, x};
}

}  // namespace

// ---------------------------------------------------------------- MostSimilarRoiAlignPlugin

MostSimilarRoiAlignPlugin::MostSimilarRoiAlignPlugin(int32_t topK) : PluginBase(concat("top_k=", topK)), mTopK(topK) {}

std::string MostSimilarRoiAlignPlugin::ioDimsError(const Dims* in, const Dims* out, Extents extents) const {
    return checkIoDims(in[kRoi], in[kSupport], &out[0], mTopK, extents);
}

void MostSimilarRoiAlignPlugin::afterConfigure(const DynamicPluginTensorDesc* in,
                                               const DynamicPluginTensorDesc* /*out*/) const {
    // A profile may admit maps smaller than top_k without ever running one;
    // onShapeChange refuses such a shape if it does come.
    const Dims& smallest = in[kSupport].min;
    if (smallest.nbDims == 4 && smallest.d[2] >= 0 && smallest.d[3] >= 0 && smallest.d[2] * smallest.d[3] < mTopK) {
        logWarning(kTag, ": the profile admits support_feats ", formatDims(smallest), " with H*W = ",
                   smallest.d[2] * smallest.d[3], " < top_k = ", mTopK, "; such shapes will be refused at run time");
    }
}

int32_t MostSimilarRoiAlignPlugin::outputShapes(const DimsExprs* inputs, DimsExprs* outputs,
                                                nvinfer1::IExprBuilder& exprBuilder) {
    const DimsExprs& roi = inputs[kRoi];
    const DimsExprs& support = inputs[kSupport];
    if (roi.nbDims != 4) {
        logError(kTag, ": roi_feats have rank ", roi.nbDims, "; MostSimilarRoIAlign needs rank 4 ([R, C, h, w])");
        return kFailure;
    }
    if (support.nbDims != 4) {
        logError(kTag, ": support_feats have rank ", support.nbDims,
                 "; MostSimilarRoIAlign needs rank 4 ([T, C, H, W])");
        return kFailure;
    }
    for (int32_t i = 0; i < 4; ++i) {
        if (roi.d[i] == nullptr || support.d[i] == nullptr) {
            logError(kTag, ": getOutputShapes got a null input dimension");
            return kFailure;
        }
    }
    // Catch constant mismatches while the network is being defined, where the
    // message reaches the user sooner than from configurePlugin.
    if (roi.d[1]->isConstant() && support.d[1]->isConstant() &&
        roi.d[1]->getConstantValue() != support.d[1]->getConstantValue()) {
        logError(kTag, ": roi_feats and support_feats disagree on C (", roi.d[1]->getConstantValue(), " vs ",
                 support.d[1]->getConstantValue(), ")");
        return kFailure;
    }
    const IDimensionExpr* cells =
        exprBuilder.operation(nvinfer1::DimensionOperation::kPROD, *support.d[2], *support.d[3]);
    if (cells != nullptr && cells->isConstant() && cells->getConstantValue() < mTopK) {
        logError(kTag, ": support_feats have H*W = ", cells->getConstantValue(), " cells, fewer than top_k = ", mTopK);
        return kFailure;
    }
    outputs[0].nbDims = 5;
    outputs[0].d[0] = support.d[0];
    for (int32_t i = 0; i < 4; ++i) outputs[0].d[i + 1] = roi.d[i];
    return 0;
}

size_t MostSimilarRoiAlignPlugin::getWorkspaceSize(const DynamicPluginTensorDesc* inputs, int32_t nbInputs,
                                                   const DynamicPluginTensorDesc* /*outputs*/,
                                                   int32_t /*nbOutputs*/) const noexcept {
    return guardOp(kTag, "getWorkspaceSize", static_cast<size_t>(0), [&]() -> size_t {
        if (inputs == nullptr || nbInputs != kNbInputs) return 0;
        const Dims& roi = inputs[kRoi].max;
        const Dims& support = inputs[kSupport].max;
        if (roi.nbDims != 4 || support.nbDims != 4) return 0;
        // The scratch grows with every extent, so the profile's largest shapes
        // bound every shape the engine will meet.
        auto extent = [](int64_t v) { return v > 0 ? v : int64_t{0}; };
        const int64_t channels = extent(roi.d[1]) > extent(support.d[1]) ? extent(roi.d[1]) : extent(support.d[1]);
        const msra::Shape largest{extent(roi.d[0]),     channels,
                                  extent(roi.d[2]),     extent(roi.d[3]),
                                  extent(support.d[0]), extent(support.d[2]),
                                  extent(support.d[3]), mTopK};
        return msra::workspace_bytes(largest);
    });
}

int32_t MostSimilarRoiAlignPlugin::launch(const PluginTensorDesc* inputDesc, const PluginTensorDesc* outputDesc,
                                          const void* const* inputs, void* const* outputs, void* workspace,
                                          cudaStream_t stream) {
    const Dims& r = inputDesc[kRoi].dims;
    const Dims& s = inputDesc[kSupport].dims;
    const Dims& o = outputDesc[0].dims;
    const DataType type = inputDesc[kRoi].type;
    DType dtype{};
    if (!toKernelType(type, dtype) || inputDesc[kSupport].type != type || outputDesc[0].type != type) {
        logError(kTag, ": enqueue: types roi_feats ", dataTypeName(type), ", support_feats ",
                 dataTypeName(inputDesc[kSupport].type), ", output ", dataTypeName(outputDesc[0].type),
                 "; MostSimilarRoIAlign needs one type, kFLOAT or kHALF, on all of them");
        return kFailure;
    }

    msra::Problem problem{};
    problem.shape = msra::Shape{r.d[0], r.d[1], r.d[2], r.d[3], s.d[0], s.d[2], s.d[3], mTopK};
    problem.roi = contiguousStrides(r);
    problem.support = contiguousStrides(s);
    problem.out = contiguousStrides5(o);

    // The workspace comes from getWorkspaceSize at the profile's largest
    // shapes, which bounds workspace_bytes(problem.shape).
    const int status = msra::forward_cuda(dtype, inputs[kRoi], inputs[kSupport], outputs[0], workspace, problem,
                                          static_cast<void*>(stream));
    if (status != kSuccess) {
        logError(kTag, ": enqueue: ", statusText(status), " (status ", status, ") for roi_feats ", formatDims(r),
                 ", support_feats ", formatDims(s), ", ", metadata(), workspace == nullptr ? ", no workspace" : "");
        return status;
    }
    return 0;
}

void MostSimilarRoiAlignPlugin::fillSerialFields(PluginField* fields) noexcept {
    fields[0] = PluginField(kMsraTopKField, &mTopK, PluginFieldType::kINT32, 1);
}

// ---------------------------------------------------------------- MostSimilarRoiAlignPluginCreator

MostSimilarRoiAlignPluginCreator::MostSimilarRoiAlignPluginCreator() noexcept
    : PluginCreatorBase({PluginField(kMsraTopKField, nullptr, PluginFieldType::kINT32, 1)}) {}

IPluginV3* MostSimilarRoiAlignPluginCreator::createFromFields(const std::string& tag, const PluginFieldCollection* fc,
                                                              nvinfer1::TensorRTPhase /*phase*/) {
    // Required in both phases: mmtracking uses 2 and the paper 4, so no
    // default is right, and a guessed one changes the features silently.
    int32_t topK = 0;
    if (!readRequiredField(tag, fc, kMsraTopKField, topK)) return nullptr;
    if (topK < 1 || topK > msra::kMaxTopK) {
        logError(tag, ": ", kMsraTopKField, " = ", topK, " is out of range [1, ", msra::kMaxTopK,
                 "] (the kernel sizes its per-query arrays for at most ", msra::kMaxTopK, ")");
        return nullptr;
    }
    return new MostSimilarRoiAlignPlugin(topK);
}

VIDTRT_PLUGIN_CREATOR(MostSimilarRoiAlignPluginCreator)

}  // namespace plugin
}  // namespace vidtrt
