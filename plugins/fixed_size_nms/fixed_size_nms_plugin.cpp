#include "fixed_size_nms_plugin.h"

#include <cmath>
#include <cstring>

#include "fixed_size_nms_launch.h"

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
using nvinfer1::TensorFormat;

namespace {

constexpr const char* kTag = FixedSizeNmsPlugin::kTag;
constexpr int64_t kBoxColumns = 4;  // x1, y1, x2, y2
constexpr int64_t kMaxBoxes = fixed_size_nms::kMaxBoxes;

std::string metadataOf(const FixedSizeNmsParams& p) {
    return concat("iou_threshold=", p.iouThreshold, " max_output=", p.maxOutput);
}

// Returns why the I/O dims cannot feed the kernel, or "" when they can.
std::string checkIoDims(const Dims& boxes, const Dims& scores, const Dims& keep, int32_t maxOutput,
                        Extents extents) {
    struct Named {
        const char* name;
        const Dims* dims;
        int32_t rank;
        const char* layout;
    };
    const Named all[] = {
        {"boxes", &boxes, 2, "[K, 4]"}, {"scores", &scores, 1, "[K]"}, {"keep", &keep, 1, "[max_output]"}};
    for (const Named& t : all) {
        if (t.dims->nbDims != t.rank) {
            return concat(t.name, " has rank ", t.dims->nbDims, " ", formatDims(*t.dims), "; FixedSizeNMS needs rank ",
                          t.rank, " (", t.layout, ")");
        }
        for (int32_t i = 0; i < t.rank; ++i) {
            if (extents == Extents::kConcrete && t.dims->d[i] < 0) {
                return concat(t.name, " ", formatDims(*t.dims), " has an unresolved extent on axis ", i);
            }
        }
    }
    if (!extentsAgree(boxes.d[1], kBoxColumns, extents)) {
        return concat("boxes ", formatDims(boxes), " must be [K, 4] (x1, y1, x2, y2)");
    }
    if (!extentsAgree(boxes.d[0], scores.d[0], extents)) {
        return concat("boxes ", formatDims(boxes), " and scores ", formatDims(scores), " disagree on K (",
                      boxes.d[0], " vs ", scores.d[0], ")");
    }
    if (boxes.d[0] > kMaxBoxes) {
        return concat("boxes ", formatDims(boxes), " has more than ", kMaxBoxes, " boxes, the most FixedSizeNMS takes");
    }
    if (!extentsAgree(keep.d[0], maxOutput, extents)) {
        return concat("keep ", formatDims(keep), " differs from [max_output] = [", maxOutput, "]");
    }
    return {};
}

}  // namespace

// ---------------------------------------------------------------- FixedSizeNmsPlugin

FixedSizeNmsPlugin::FixedSizeNmsPlugin(const FixedSizeNmsParams& params)
    : PluginBase(metadataOf(params)), mParams(params) {}

int32_t FixedSizeNmsPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, const DataType* inputTypes,
                                               int32_t nbInputs) const noexcept {
    return guardOp(kTag, "getOutputDataTypes", kFailure, [&]() -> int32_t {
        if (outputTypes == nullptr || inputTypes == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs) {
            logError(kTag, ": expected 2 inputs and 1 output, got ", nbInputs, " and ", nbOutputs);
            return kFailure;
        }
        if (inputTypes[kBoxes] != DataType::kFLOAT || inputTypes[kScores] != DataType::kFLOAT) {
            logError(kTag, ": boxes have type ", dataTypeName(inputTypes[kBoxes]), " and scores ",
                     dataTypeName(inputTypes[kScores]), "; FixedSizeNMS takes kFLOAT boxes and scores only");
            return kFailure;
        }
        outputTypes[0] = DataType::kINT32;
        return 0;
    });
}

bool FixedSizeNmsPlugin::supportsFormatCombination(int32_t pos, const DynamicPluginTensorDesc* inOut,
                                                   int32_t nbInputs, int32_t nbOutputs) noexcept {
    if (inOut == nullptr || nbInputs != kNbInputs || nbOutputs != kNbOutputs || pos < 0 ||
        pos >= kNbInputs + kNbOutputs) {
        return false;
    }
    const PluginTensorDesc& desc = inOut[pos].desc;
    const DataType want = pos < kNbInputs ? DataType::kFLOAT : DataType::kINT32;
    return desc.format == TensorFormat::kLINEAR && desc.type == want;
}

size_t FixedSizeNmsPlugin::getWorkspaceSize(const DynamicPluginTensorDesc* inputs, int32_t nbInputs,
                                            const DynamicPluginTensorDesc* /*outputs*/,
                                            int32_t /*nbOutputs*/) const noexcept {
    // Sized for the profile's largest K: the workspace only grows with K, so
    // every shape the engine runs fits. The mask (K² bits) dominates.
    if (inputs == nullptr || nbInputs != kNbInputs || inputs[kBoxes].max.nbDims != 2) return 0;
    const int64_t K = inputs[kBoxes].max.d[0];
    return fixed_size_nms::cuda_workspace_bytes(K < kMaxBoxes ? K : kMaxBoxes);
}

std::string FixedSizeNmsPlugin::ioDimsError(const Dims* in, const Dims* out, Extents extents) const {
    return checkIoDims(in[kBoxes], in[kScores], out[0], mParams.maxOutput, extents);
}

int32_t FixedSizeNmsPlugin::outputShapes(const DimsExprs* inputs, DimsExprs* outputs,
                                         nvinfer1::IExprBuilder& exprBuilder) {
    const DimsExprs& boxes = inputs[kBoxes];
    const DimsExprs& scores = inputs[kScores];
    if (boxes.nbDims != 2) {
        logError(kTag, ": boxes have rank ", boxes.nbDims, "; FixedSizeNMS needs rank 2 ([K, 4])");
        return kFailure;
    }
    if (scores.nbDims != 1) {
        logError(kTag, ": scores have rank ", scores.nbDims, "; FixedSizeNMS needs rank 1 ([K])");
        return kFailure;
    }
    // Catch constant mismatches while the network is being defined, where the
    // message reaches the user sooner than from configurePlugin.
    auto constant = [](const IDimensionExpr* e) { return e != nullptr && e->isConstant(); };
    if (constant(boxes.d[1]) && boxes.d[1]->getConstantValue() != kBoxColumns) {
        logError(kTag, ": boxes have ", boxes.d[1]->getConstantValue(),
                 " columns; FixedSizeNMS needs [K, 4] (x1, y1, x2, y2)");
        return kFailure;
    }
    if (constant(boxes.d[0]) && constant(scores.d[0]) &&
        boxes.d[0]->getConstantValue() != scores.d[0]->getConstantValue()) {
        logError(kTag, ": boxes have K = ", boxes.d[0]->getConstantValue(), " and scores K = ",
                 scores.d[0]->getConstantValue(), "; FixedSizeNMS needs one score per box");
        return kFailure;
    }
    if (constant(boxes.d[0]) && boxes.d[0]->getConstantValue() > kMaxBoxes) {
        logError(kTag, ": boxes have K = ", boxes.d[0]->getConstantValue(), "; FixedSizeNMS takes at most ",
                 kMaxBoxes, " boxes");
        return kFailure;
    }
    // The output size is the attribute alone, whatever the data: the reason
    // this op exists (ONNX NonMaxSuppression's is data-dependent).
    const IDimensionExpr* length = exprBuilder.constant(mParams.maxOutput);
    if (length == nullptr) {
        logError(kTag, ": could not build the output dimension [max_output]");
        return kFailure;
    }
    outputs[0].nbDims = 1;
    outputs[0].d[0] = length;
    return 0;
}

int32_t FixedSizeNmsPlugin::launch(const PluginTensorDesc* inputDesc, const PluginTensorDesc* outputDesc,
                                   const void* const* inputs, void* const* outputs, void* workspace,
                                   cudaStream_t stream) {
    const Dims& b = inputDesc[kBoxes].dims;
    if (inputDesc[kBoxes].type != DataType::kFLOAT || inputDesc[kScores].type != DataType::kFLOAT ||
        outputDesc[0].type != DataType::kINT32) {
        logError(kTag, ": enqueue: types boxes ", dataTypeName(inputDesc[kBoxes].type), ", scores ",
                 dataTypeName(inputDesc[kScores].type), ", keep ", dataTypeName(outputDesc[0].type),
                 "; FixedSizeNMS needs kFLOAT boxes and scores and a kINT32 keep");
        return kFailure;
    }
    const int64_t K = b.d[0];
    fixed_size_nms::Problem problem{};
    problem.shape = fixed_size_nms::Shape{K, mParams.maxOutput, mParams.iouThreshold};
    problem.boxes = fixed_size_nms::BoxStrides{kBoxColumns, 1};
    problem.scores = 1;
    problem.keep = 1;
    // TensorRT allocated getWorkspaceSize() for the profile's largest K,
    // which covers what this (smaller or equal) K needs.
    const int status = fixed_size_nms::forward_cuda(
        static_cast<const float*>(inputs[kBoxes]), static_cast<const float*>(inputs[kScores]),
        static_cast<int32_t*>(outputs[0]), problem, workspace, fixed_size_nms::cuda_workspace_bytes(K),
        static_cast<void*>(stream));
    if (status != kSuccess) {
        logError(kTag, ": enqueue: ", statusText(status), " (status ", status, ") for boxes ", formatDims(b), ", ",
                 metadata(), workspace == nullptr ? " (no workspace)" : "");
        return status;
    }
    return 0;
}

void FixedSizeNmsPlugin::fillSerialFields(PluginField* fields) noexcept {
    fields[0] = PluginField(kFixedSizeNmsIouThresholdField, &mParams.iouThreshold, PluginFieldType::kFLOAT32, 1);
    fields[1] = PluginField(kFixedSizeNmsMaxOutputField, &mParams.maxOutput, PluginFieldType::kINT32, 1);
}

// ---------------------------------------------------------------- FixedSizeNmsPluginCreator

FixedSizeNmsPluginCreator::FixedSizeNmsPluginCreator() noexcept
    : PluginCreatorBase({PluginField(kFixedSizeNmsIouThresholdField, nullptr, PluginFieldType::kFLOAT32, 1),
                         PluginField(kFixedSizeNmsMaxOutputField, nullptr, PluginFieldType::kINT32, 1)}) {}

IPluginV3* FixedSizeNmsPluginCreator::createFromFields(const std::string& tag, const PluginFieldCollection* fc,
                                                       nvinfer1::TensorRTPhase /*phase*/) {
    // Both fields are required in both phases: no threshold or output count
    // is right for every detector, and a guessed one gives plausible but
    // wrong detections.
    FixedSizeNmsParams params{};
    if (!readRequiredField(tag, fc, kFixedSizeNmsIouThresholdField, params.iouThreshold) ||
        !readRequiredField(tag, fc, kFixedSizeNmsMaxOutputField, params.maxOutput)) {
        return nullptr;
    }
    if (!std::isfinite(params.iouThreshold)) {
        logError(tag, ": ", kFixedSizeNmsIouThresholdField, " = ", params.iouThreshold, " is out of range (finite)");
        return nullptr;
    }
    if (params.maxOutput < 1) {
        logError(tag, ": ", kFixedSizeNmsMaxOutputField, " = ", params.maxOutput, " is out of range (>= 1)");
        return nullptr;
    }
    return new FixedSizeNmsPlugin(params);
}

VIDTRT_PLUGIN_CREATOR(FixedSizeNmsPluginCreator)

}  // namespace plugin
}  // namespace vidtrt
