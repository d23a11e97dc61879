#include "psla_plugin.h"

#include "psla_launch.h"

namespace vidtrt {
namespace plugin {

using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::DimsExprs;
using nvinfer1::IPluginV3;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::PluginTensorDesc;

namespace {

constexpr const char* kTag = PslaPlugin::kTag;
constexpr const char* kAxisNames[4] = {"N", "c", "H", "W"};

struct NamedDims {
    const char* name;
    const Dims* dims;
};

// Returns why the I/O dims cannot feed the kernel, or "" when they can. Only the
// relations PSLA needs are checked: same N, H, W everywhere, same c on query and
// key, output equal to value. `out` may be null when no output dims are known.
std::string checkIoDims(const Dims& query, const Dims& key, const Dims& value, const Dims* out,
                        Extents extents) {
    const NamedDims all[] = {{"query", &query}, {"key", &key}, {"value", &value}, {"output", out}};
    for (const NamedDims& t : all) {
        if (t.dims == nullptr) continue;
        if (t.dims->nbDims != 4) {
            return concat(t.name, " has rank ", t.dims->nbDims, " ", formatDims(*t.dims),
                          "; PSLA needs rank 4 ([N, C, H, W])");
        }
        for (int32_t i = 0; i < 4; ++i) {
            if (extents == Extents::kConcrete && t.dims->d[i] < 0) {
                return concat(t.name, " ", formatDims(*t.dims), " has an unresolved extent on ", kAxisNames[i]);
            }
        }
    }
    auto mismatch = [&](const NamedDims& a, const NamedDims& b, int32_t axis) {
        return concat(a.name, " ", formatDims(*a.dims), " and ", b.name, " ", formatDims(*b.dims),
                      " disagree on ", kAxisNames[axis], " (", a.dims->d[axis], " vs ", b.dims->d[axis], ")");
    };
    const NamedDims& q = all[0];
    for (int32_t axis : {0, 2, 3}) {
        for (const NamedDims* other : {&all[1], &all[2]}) {
            if (!extentsAgree(q.dims->d[axis], other->dims->d[axis], extents)) return mismatch(q, *other, axis);
        }
    }
    if (!extentsAgree(query.d[1], key.d[1], extents)) return mismatch(all[0], all[1], 1);
    if (query.d[1] == 0) {
        return concat("query ", formatDims(query), " and key ", formatDims(key),
                      " need at least one embedding channel (c = 0)");
    }
    if (out != nullptr) {
        for (int32_t axis = 0; axis < 4; ++axis) {
            if (!extentsAgree(value.d[axis], out->d[axis], extents)) {
                return concat("output ", formatDims(*out), " differs from value ", formatDims(value), " on ",
                              axis == 1 ? "C" : kAxisNames[axis]);
            }
        }
    }
    return {};
}

}  // namespace

// ---------------------------------------------------------------- PslaPlugin

PslaPlugin::PslaPlugin(int32_t maxDisp) : PluginBase(concat("max_disp=", maxDisp)), mMaxDisp(maxDisp) {}

std::string PslaPlugin::ioDimsError(const Dims* in, const Dims* out, Extents extents) const {
    return checkIoDims(in[kQuery], in[kKey], in[kValue], &out[0], extents);
}

int32_t PslaPlugin::outputShapes(const DimsExprs* inputs, DimsExprs* outputs, nvinfer1::IExprBuilder& /*exprBuilder*/) {
    const char* names[] = {"query", "key", "value"};
    for (int32_t i = 0; i < kNbInputs; ++i) {
        if (inputs[i].nbDims != 4) {
            logError(kTag, ": ", names[i], " has rank ", inputs[i].nbDims, "; PSLA needs rank 4 ([N, C, H, W])");
            return kFailure;
        }
    }
    // Catch constant mismatches while the network is being defined, where the
    // message reaches the user sooner than from configurePlugin.
    auto clash = [](const nvinfer1::IDimensionExpr* a, const nvinfer1::IDimensionExpr* b) {
        return a != nullptr && b != nullptr && a->isConstant() && b->isConstant() &&
               a->getConstantValue() != b->getConstantValue();
    };
    for (int32_t axis : {0, 2, 3}) {
        for (int32_t other : {kKey, kValue}) {
            if (clash(inputs[kQuery].d[axis], inputs[other].d[axis])) {
                logError(kTag, ": query and ", names[other], " disagree on ", kAxisNames[axis], " (",
                         inputs[kQuery].d[axis]->getConstantValue(), " vs ",
                         inputs[other].d[axis]->getConstantValue(), ")");
                return kFailure;
            }
        }
    }
    if (clash(inputs[kQuery].d[1], inputs[kKey].d[1])) {
        logError(kTag, ": query and key disagree on c (", inputs[kQuery].d[1]->getConstantValue(), " vs ",
                 inputs[kKey].d[1]->getConstantValue(), ")");
        return kFailure;
    }
    outputs[0] = inputs[kValue];
    return 0;
}

int32_t PslaPlugin::launch(const PluginTensorDesc* inputDesc, const PluginTensorDesc* outputDesc,
                           const void* const* inputs, void* const* outputs, void* /*workspace*/,
                           cudaStream_t stream) {
    const Dims& q = inputDesc[kQuery].dims;
    const Dims& k = inputDesc[kKey].dims;
    const Dims& v = inputDesc[kValue].dims;
    const DataType type = inputDesc[kQuery].type;
    DType dtype{};
    if (!toKernelType(type, dtype) || inputDesc[kKey].type != type || inputDesc[kValue].type != type ||
        outputDesc[0].type != type) {
        logError(kTag, ": enqueue: types query ", dataTypeName(type), ", key ", dataTypeName(inputDesc[kKey].type),
                 ", value ", dataTypeName(inputDesc[kValue].type), ", output ", dataTypeName(outputDesc[0].type),
                 "; PSLA needs one type, kFLOAT or kHALF, on all of them");
        return kFailure;
    }

    psla::Problem problem{};
    problem.shape = psla::Shape{q.d[0], q.d[1], v.d[1], q.d[2], q.d[3], mMaxDisp};
    problem.query = contiguousStrides(q);
    problem.key = contiguousStrides(k);
    problem.value = contiguousStrides(v);
    problem.out = contiguousStrides(outputDesc[0].dims);

    const int status = psla::forward_cuda(dtype, inputs[kQuery], inputs[kKey], inputs[kValue], outputs[0], problem,
                                          static_cast<void*>(stream));
    if (status != kSuccess) {
        logError(kTag, ": enqueue: ", statusText(status), " (status ", status, ") for query ", formatDims(q),
                 ", value ", formatDims(v), ", max_disp ", mMaxDisp);
        return status;
    }
    return 0;
}

void PslaPlugin::fillSerialFields(PluginField* fields) noexcept {
    fields[0] = PluginField(kPslaMaxDispField, &mMaxDisp, PluginFieldType::kINT32, 1);
}

// ---------------------------------------------------------------- PslaPluginCreator

PslaPluginCreator::PslaPluginCreator() noexcept
    : PluginCreatorBase({PluginField(kPslaMaxDispField, nullptr, PluginFieldType::kINT32, 1)}) {}

IPluginV3* PslaPluginCreator::createFromFields(const std::string& tag, const PluginFieldCollection* fc,
                                               nvinfer1::TensorRTPhase phase) {
    int32_t maxDisp = kPslaDefaultMaxDisp;
    const PluginField* field = nullptr;
    const FieldLookup lookup = readInt32Field(fc, kPslaMaxDispField, maxDisp, &field);
    if (lookup == FieldLookup::kMissing) {
        // getFieldsToSerialize always writes max_disp, so a runtime collection
        // without it did not come from this plugin: refuse rather than guess.
        if (phase == nvinfer1::TensorRTPhase::kRUNTIME) {
            logError(tag, ": serialized fields have no '", kPslaMaxDispField, "'");
            return nullptr;
        }
        logWarning(tag, ": no '", kPslaMaxDispField, "' field; using the default ", kPslaDefaultMaxDisp);
    } else if (lookup != FieldLookup::kFound) {
        logError(tag, ": ", describeInt32FieldError(lookup, kPslaMaxDispField, field));
        return nullptr;
    }
    if (maxDisp < 0 || maxDisp > psla::kMaxDisp) {
        logError(tag, ": ", kPslaMaxDispField, " = ", maxDisp, " is out of range [0, ", psla::kMaxDisp,
                 "] (the kernel sizes its per-position arrays for at most ", psla::kMaxDisp, ")");
        return nullptr;
    }
    return new PslaPlugin(maxDisp);
}

VIDTRT_PLUGIN_CREATOR(PslaPluginCreator)

}  // namespace plugin
}  // namespace vidtrt
