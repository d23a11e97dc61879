// What every vidtrt IPluginV3 plugin and its creator do the same way: the
// capability lookup, identity accessors, clone/attachToContext, field
// bookkeeping, the "one linear FP32/FP16 type everywhere" format rule, and the
// argument checks around configurePlugin, onShapeChange, getOutputShapes and
// enqueue. Each plugin keeps its own fields, shape rules, output shapes,
// workspace and launch in its own files.
//
// CRTP instead of virtual hooks: the hooks (ioDimsError, outputShapes, launch,
// ...) are resolved at compile time, so a plugin that forgets one fails to
// build instead of failing inside TensorRT, and nothing is added to the
// TensorRT-facing vtables.
//
// A plugin class derives from PluginBase<Plugin, number of serialized fields>
// and provides, as static constexpr members:
//   kPluginName, kPluginVersion, kPluginNamespace  identity seen by TensorRT
//   kTag               prefix of its log lines ("vidtrt::PSLA")
//   kNbInputs, kNbOutputs
//   kOutputTypeInput   the input whose type the output takes
//   kOutputTypeSubject how log lines name that input ("value has")
// and the member functions (PluginBase must be a friend if they are private)
//   std::string ioDimsError(const Dims* in, const Dims* out, Extents) const
//       why these I/O dims cannot feed the kernel, or "" (used by
//       configurePlugin, onShapeChange and enqueue alike)
//   int32_t outputShapes(const DimsExprs* in, DimsExprs* out, IExprBuilder&)
//   int32_t launch(inputDesc, outputDesc, inputs, outputs, workspace, stream)
//       enqueue after the null and dims checks
//   void fillSerialFields(PluginField* fields) noexcept   (if it has fields)
//   void afterConfigure(in, out) const   (optional: build-time warnings)
// and overrides getWorkspaceSize when it needs scratch.
#pragma once

#include <NvInferRuntime.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>

#include "op_table.h"
#include "plugin_utils.h"
#include "vidtrt_kernel_common.h"

namespace vidtrt {
namespace plugin {

// Return code of a refused TensorRT call (TensorRT only tests for nonzero).
inline constexpr int32_t kFailure = 1;

inline bool isSupportedType(nvinfer1::DataType type) noexcept {
    return type == nvinfer1::DataType::kFLOAT || type == nvinfer1::DataType::kHALF;
}

inline bool toKernelType(nvinfer1::DataType type, DType& out) noexcept {
    switch (type) {
        case nvinfer1::DataType::kFLOAT: out = DType::kFloat32; return true;
        case nvinfer1::DataType::kHALF: out = DType::kFloat16; return true;
        default: return false;
    }
}

inline const char* statusText(int status) noexcept {
    switch (status) {
        case kSuccess: return "success";
        case kInvalidArgument: return "invalid argument";
        case kUnsupportedDType: return "unsupported data type";
        case kCudaError: return "CUDA kernel launch failed";
        default: return "unknown status";
    }
}

// At build time TensorRT marks dimensions it does not know yet with -1; those
// cannot disagree with anything. At run time every extent must be concrete.
enum class Extents { kMayBeUnknown, kConcrete };

inline bool extentsAgree(int64_t a, int64_t b, Extents extents) noexcept {
    if (extents == Extents::kMayBeUnknown && (a < 0 || b < 0)) return true;
    return a == b;
}

// NCHW with nothing between rows or planes: what TensorRT's kLINEAR means.
inline Strides4 contiguousStrides(const nvinfer1::Dims& d) noexcept {
    return Strides4{d.d[1] * d.d[2] * d.d[3], d.d[2] * d.d[3], d.d[3], 1};
}

// "vidtrt::PSLA (layer 'name')", or the bare tag for an unnamed layer.
inline std::string layerTag(const char* tag, const char* name) {
    return name != nullptr && name[0] != '\0' ? concat(tag, " (layer '", name, "')") : std::string(tag);
}

// guard() with the "<tag> <operation>" prefix the plugins log, built only when
// something is reported so that the happy path does not allocate.
template <typename R, typename Body>
R guardOp(const char* tag, const char* operation, R failure, Body&& body) noexcept {
    try {
        return std::forward<Body>(body)();
    } catch (...) {
        try {
            reportCurrentException(concat(tag, " ", operation).c_str());
        } catch (...) {
        }
        return failure;
    }
}

// Fills a PluginFieldCollection from a fixed array; an empty one gets
// fields == nullptr, which is what TensorRT sees from a plugin without fields.
template <size_t N>
void pointCollectionAt(nvinfer1::PluginFieldCollection& fc, std::array<nvinfer1::PluginField, N>& fields) noexcept {
    fc.nbFields = static_cast<int32_t>(N);
    fc.fields = N == 0 ? nullptr : fields.data();
}

template <typename Derived, int32_t NbFields>
class PluginBase : public nvinfer1::IPluginV3,
                   public nvinfer1::IPluginV3OneCore,
                   public nvinfer1::IPluginV3OneBuild,
                   public nvinfer1::IPluginV3OneRuntime {
public:
    static constexpr int32_t kNbFields = NbFields;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override {
        switch (type) {
            case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
            case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
            case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
        }
        logError(Derived::kTag, ": unknown capability type ", static_cast<int32_t>(type));
        return nullptr;
    }

    nvinfer1::IPluginV3* clone() noexcept override {
        return guardOp(Derived::kTag, "clone", static_cast<nvinfer1::IPluginV3*>(nullptr),
                       [&]() -> nvinfer1::IPluginV3* { return new Derived(derived()); });
    }

    // IPluginV3OneCore
    const char* getPluginName() const noexcept override { return Derived::kPluginName; }
    const char* getPluginVersion() const noexcept override { return Derived::kPluginVersion; }
    const char* getPluginNamespace() const noexcept override { return Derived::kPluginNamespace; }

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override { return Derived::kNbOutputs; }

    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
                               const nvinfer1::DataType* inputTypes, int32_t nbInputs) const noexcept override {
        return guardOp(Derived::kTag, "getOutputDataTypes", kFailure, [&]() -> int32_t {
            if (outputTypes == nullptr || inputTypes == nullptr || !countsMatch(nbInputs, nbOutputs)) {
                logError(Derived::kTag, ": expected ", ioCounts(), ", got ", nbInputs, " and ", nbOutputs);
                return kFailure;
            }
            const nvinfer1::DataType type = inputTypes[Derived::kOutputTypeInput];
            if (!isSupportedType(type)) {
                logError(Derived::kTag, ": ", Derived::kOutputTypeSubject, " type ", dataTypeName(type), "; ",
                         Derived::kPluginName, " supports kFLOAT and kHALF");
                return kFailure;
            }
            for (int32_t i = 0; i < nbOutputs; ++i) outputTypes[i] = type;
            return 0;
        });
    }

    int32_t getOutputShapes(const nvinfer1::DimsExprs* inputs, int32_t nbInputs,
                            const nvinfer1::DimsExprs* /*shapeInputs*/, int32_t nbShapeInputs,
                            nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                            nvinfer1::IExprBuilder& exprBuilder) noexcept override {
        return guardOp(Derived::kTag, "getOutputShapes", kFailure, [&]() -> int32_t {
            if (inputs == nullptr || outputs == nullptr || !countsMatch(nbInputs, nbOutputs) || nbShapeInputs != 0) {
                logError(Derived::kTag, ": expected ", Derived::kNbInputs, " inputs, 0 shape inputs and ",
                         outputCount(), ", got ", nbInputs, ", ", nbShapeInputs, " and ", nbOutputs);
                return kFailure;
            }
            return derived().outputShapes(inputs, outputs, exprBuilder);
        });
    }

    // Every kernel indexes with NCHW (linear) strides and reads all its tensors
    // through one storage type, so each position must be linear FP32 or FP16
    // and match position 0. TensorRT asks in position order, so inOut[0] is
    // already settled when pos > 0.
    bool supportsFormatCombination(int32_t pos, const nvinfer1::DynamicPluginTensorDesc* inOut, int32_t nbInputs,
                                   int32_t nbOutputs) noexcept override {
        if (inOut == nullptr || !countsMatch(nbInputs, nbOutputs) || pos < 0 || pos >= nbInputs + nbOutputs) {
            return false;
        }
        const nvinfer1::PluginTensorDesc& desc = inOut[pos].desc;
        if (desc.format != nvinfer1::TensorFormat::kLINEAR || !isSupportedType(desc.type)) return false;
        return pos == 0 || desc.type == inOut[0].desc.type;
    }

    int32_t configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nbInputs,
                            const nvinfer1::DynamicPluginTensorDesc* out, int32_t nbOutputs) noexcept override {
        return guardOp(Derived::kTag, "configurePlugin", kFailure, [&]() -> int32_t {
            if (in == nullptr || out == nullptr || !countsMatch(nbInputs, nbOutputs)) {
                logError(Derived::kTag, ": configurePlugin expected ", ioCounts(), ", got ", nbInputs, " and ",
                         nbOutputs);
                return kFailure;
            }
            if (!dimsAccepted("configurePlugin", in, out, Extents::kMayBeUnknown)) return kFailure;
            derived().afterConfigure(in, out);
            return 0;
        });
    }

    size_t getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* /*inputs*/, int32_t /*nbInputs*/,
                            const nvinfer1::DynamicPluginTensorDesc* /*outputs*/,
                            int32_t /*nbOutputs*/) const noexcept override {
        return 0;
    }

    const char* getMetadataString() noexcept override { return mMetadata.c_str(); }

    // IPluginV3OneRuntime
    // One kernel per plugin, so there is no tactic to pick.
    int32_t setTactic(int32_t /*tactic*/) noexcept override { return 0; }

    int32_t onShapeChange(const nvinfer1::PluginTensorDesc* in, int32_t nbInputs, const nvinfer1::PluginTensorDesc* out,
                          int32_t nbOutputs) noexcept override {
        return guardOp(Derived::kTag, "onShapeChange", kFailure, [&]() -> int32_t {
            if (in == nullptr || out == nullptr || !countsMatch(nbInputs, nbOutputs)) {
                logError(Derived::kTag, ": onShapeChange expected ", ioCounts(), ", got ", nbInputs, " and ",
                         nbOutputs);
                return kFailure;
            }
            return dimsAccepted("onShapeChange", in, out, Extents::kConcrete) ? 0 : kFailure;
        });
    }

    int32_t enqueue(const nvinfer1::PluginTensorDesc* inputDesc, const nvinfer1::PluginTensorDesc* outputDesc,
                    const void* const* inputs, void* const* outputs, void* workspace,
                    cudaStream_t stream) noexcept override {
        return guardOp(Derived::kTag, "enqueue", kFailure, [&]() -> int32_t {
            if (inputDesc == nullptr || outputDesc == nullptr || inputs == nullptr || outputs == nullptr) {
                logError(Derived::kTag, ": enqueue got null descriptors or buffers");
                return kFailure;
            }
            // onShapeChange has already checked these; repeating it costs a few
            // compares and keeps a bad launch from reading out of bounds if a
            // caller skipped it.
            if (!dimsAccepted("enqueue", inputDesc, outputDesc, Extents::kConcrete)) return kFailure;
            return derived().launch(inputDesc, outputDesc, inputs, outputs, workspace, stream);
        });
    }

    // No plugin holds per-context resources (scratch comes from TensorRT's
    // workspace), so a plain copy will do.
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept override {
        return clone();
    }

    // Rebuilt by every call so that a copied plugin never hands out pointers
    // into the object it was copied from.
    const nvinfer1::PluginFieldCollection* getFieldsToSerialize() noexcept override {
        derived().fillSerialFields(mSerialFieldArray.data());
        pointCollectionAt(mSerialFields, mSerialFieldArray);
        return &mSerialFields;
    }

protected:
    explicit PluginBase(std::string metadata) : mMetadata(std::move(metadata)), mSerialFieldArray(), mSerialFields() {}
    PluginBase(const PluginBase&) = default;
    PluginBase& operator=(const PluginBase&) = delete;
    ~PluginBase() override = default;

    // Default for plugins with nothing to add once the dims are accepted.
    void afterConfigure(const nvinfer1::DynamicPluginTensorDesc* /*in*/,
                        const nvinfer1::DynamicPluginTensorDesc* /*out*/) const noexcept {}

    // Default for plugins without fields.
    void fillSerialFields(nvinfer1::PluginField* /*fields*/) noexcept {}

    const std::string& metadata() const noexcept { return mMetadata; }

private:
    Derived& derived() noexcept { return static_cast<Derived&>(*this); }
    const Derived& derived() const noexcept { return static_cast<const Derived&>(*this); }

    static bool countsMatch(int32_t nbInputs, int32_t nbOutputs) noexcept {
        return nbInputs == Derived::kNbInputs && nbOutputs == Derived::kNbOutputs;
    }
    static std::string outputCount() {
        return concat(Derived::kNbOutputs, Derived::kNbOutputs == 1 ? " output" : " outputs");
    }
    // "3 inputs and 1 output"
    static std::string ioCounts() { return concat(Derived::kNbInputs, " inputs and ", outputCount()); }

    static const nvinfer1::Dims& dimsOf(const nvinfer1::DynamicPluginTensorDesc& d) noexcept { return d.desc.dims; }
    static const nvinfer1::Dims& dimsOf(const nvinfer1::PluginTensorDesc& d) noexcept { return d.dims; }

    // Hands the dims of build-time or run-time descriptors to the plugin's
    // single shape rule and logs "<tag>: <operation>: <why>" if it refuses.
    template <typename Desc>
    bool dimsAccepted(const char* operation, const Desc* in, const Desc* out, Extents extents) const {
        nvinfer1::Dims inDims[Derived::kNbInputs];
        nvinfer1::Dims outDims[Derived::kNbOutputs];
        for (int32_t i = 0; i < Derived::kNbInputs; ++i) inDims[i] = dimsOf(in[i]);
        for (int32_t i = 0; i < Derived::kNbOutputs; ++i) outDims[i] = dimsOf(out[i]);
        const std::string error = derived().ioDimsError(inDims, outDims, extents);
        if (error.empty()) return true;
        logError(Derived::kTag, ": ", operation, ": ", error);
        return false;
    }

    std::string mMetadata;
    std::array<nvinfer1::PluginField, NbFields> mSerialFieldArray;
    nvinfer1::PluginFieldCollection mSerialFields;
};

// Creator side: identity from the plugin class, the advertised fields, the
// exception guard and the "ignoring field" log for whatever the ONNX parser
// forwards (plugin_version, plugin_namespace) or a newer exporter adds.
// Derived provides
//   IPluginV3* createFromFields(const std::string& tag, const PluginFieldCollection* fc, TensorRTPhase phase)
// which validates the fields it knows and returns a new plugin or nullptr.
template <typename Derived, typename Plugin>
class PluginCreatorBase : public nvinfer1::IPluginCreatorV3One {
public:
    using PluginType = Plugin;
    using FieldArray = std::array<nvinfer1::PluginField, Plugin::kNbFields>;

    nvinfer1::IPluginV3* createPlugin(const char* name, const nvinfer1::PluginFieldCollection* fc,
                                      nvinfer1::TensorRTPhase phase) noexcept override {
        return guardOp(Plugin::kTag, "createPlugin", static_cast<nvinfer1::IPluginV3*>(nullptr),
                       [&]() -> nvinfer1::IPluginV3* {
                           const std::string tag = layerTag(Plugin::kTag, name);
                           nvinfer1::IPluginV3* plugin = static_cast<Derived&>(*this).createFromFields(tag, fc, phase);
                           if (plugin != nullptr) logIgnoredFields(tag, fc);
                           return plugin;
                       });
    }

    const nvinfer1::PluginFieldCollection* getFieldNames() noexcept override { return &mFields; }
    const char* getPluginName() const noexcept override { return Plugin::kPluginName; }
    const char* getPluginVersion() const noexcept override { return Plugin::kPluginVersion; }
    const char* getPluginNamespace() const noexcept override { return Plugin::kPluginNamespace; }

protected:
    // `fields`: what the creator advertises (data nullptr), in serialization order.
    explicit PluginCreatorBase(const FieldArray& fields) noexcept : mFieldArray(fields), mFields() {
        pointCollectionAt(mFields, mFieldArray);
    }
    // TensorRT keeps pointers into the creator for the life of the process.
    PluginCreatorBase(const PluginCreatorBase&) = delete;
    PluginCreatorBase& operator=(const PluginCreatorBase&) = delete;
    ~PluginCreatorBase() override = default;

private:
    bool isAdvertised(const char* fieldName) const noexcept {
        if (fieldName == nullptr) return false;
        for (const nvinfer1::PluginField& f : mFieldArray) {
            if (std::strcmp(fieldName, f.name) == 0) return true;
        }
        return false;
    }

    // Unknown fields are not errors, but say at verbose level which were dropped.
    void logIgnoredFields(const std::string& tag, const nvinfer1::PluginFieldCollection* fc) const noexcept {
        if (fc == nullptr || fc->fields == nullptr) return;
        for (int32_t i = 0; i < fc->nbFields; ++i) {
            const char* fieldName = fc->fields[i].name;
            if (!isAdvertised(fieldName)) {
                logVerbose(tag, ": ignoring field '", fieldName != nullptr ? fieldName : "(null)", "'");
            }
        }
    }

    FieldArray mFieldArray;
    nvinfer1::PluginFieldCollection mFields;
};

// The one object of each creator class, for the life of the process (TensorRT
// keeps the pointers getCreators() hands out). plugin_library.cpp calls it for
// each line of plugins/vidtrt_ops.def, knowing the creator classes only by
// name; each <op>_plugin.cpp defines its specialisation with
// VIDTRT_PLUGIN_CREATOR(<CreatorClass>), inside namespace vidtrt::plugin. The
// library's table therefore needs none of the plugin headers, and a line whose
// creator has no definition fails the link (the library links with
// --no-undefined).
template <typename Creator>
nvinfer1::IPluginCreatorV3One& creatorInstance() noexcept;

// Also checks at compile time that the creator's plugin has the name and
// version of the .def line naming this creator class: a line pairing one op's
// directory or identity with another op's creator does not build.
#define VIDTRT_PLUGIN_CREATOR(Creator)                                                                  \
    static_assert(::vidtrt::plugin::sameText(::vidtrt::plugin::describedCreator(#Creator).pluginName,   \
                                             Creator::PluginType::kPluginName),                         \
                  #Creator ": its plugin's kPluginName differs from its line in plugins/vidtrt_ops.def"); \
    static_assert(::vidtrt::plugin::sameText(::vidtrt::plugin::describedCreator(#Creator).pluginVersion, \
                                             Creator::PluginType::kPluginVersion),                      \
                  #Creator ": its plugin's kPluginVersion differs from its line in plugins/vidtrt_ops.def"); \
    template <>                                                                                         \
    nvinfer1::IPluginCreatorV3One& creatorInstance<Creator>() noexcept {                               \
        static Creator creator;                                                                         \
        return creator;                                                                                 \
    }

}  // namespace plugin
}  // namespace vidtrt
