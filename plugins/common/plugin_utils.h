// Helpers shared by every vidtrt TensorRT plugin: the logger handed over by
// TensorRT, string formatting for log lines, plugin-field lookup and the guard
// that keeps C++ exceptions from crossing the TensorRT ABI.
//
// Header-only on purpose: each helper is tiny, and the state (the logger
// finder) lives in one function-local static, which is unique inside
// libvidtrt_plugins.so because the library is built with hidden visibility.
#pragma once

#include <NvInferRuntime.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <exception>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include "tensorrt_version.h"

namespace vidtrt {
namespace plugin {

using Severity = nvinfer1::ILogger::Severity;

// ---------------------------------------------------------------- logging

namespace detail {
// TensorRT owns the finder and only lends it to us, so we keep a plain pointer.
// Atomic because setLoggerFinder may race with plugin calls from builder or
// execution-context threads.
inline std::atomic<nvinfer1::ILoggerFinder*>& loggerFinderSlot() noexcept {
    static std::atomic<nvinfer1::ILoggerFinder*> slot{nullptr};
    return slot;
}
}  // namespace detail

// The last finder wins, and nullptr detaches: a host that unloads the registry
// that owned the finder can stop us from calling into freed memory.
inline void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept {
    detail::loggerFinderSlot().store(finder, std::memory_order_release);
}

// TensorRT documents that findLogger() must run on the thread of the plugin
// call it serves, so the logger is looked up per message instead of cached.
inline nvinfer1::ILogger* currentLogger() noexcept {
    nvinfer1::ILoggerFinder* finder = detail::loggerFinderSlot().load(std::memory_order_acquire);
    if (finder == nullptr) return nullptr;
    try {
        // findLogger() is not declared noexcept; an exception must still not
        // escape through our noexcept entry points.
        return finder->findLogger();
    } catch (...) {
        return nullptr;
    }
}

inline void logMessage(Severity severity, const char* message) noexcept {
    nvinfer1::ILogger* logger = currentLogger();
    if (logger != nullptr && message != nullptr) logger->log(severity, message);
}

// Streams every argument into one string (ostream formatting rules).
template <typename... Parts>
std::string concat(const Parts&... parts) {
    std::ostringstream out;
    (out << ... << parts);
    return out.str();
}

// Formats the message only when somebody listens, and never throws: a failed
// allocation while reporting an error must not turn into a second error.
template <typename... Parts>
void logAt(Severity severity, const Parts&... parts) noexcept {
    nvinfer1::ILogger* logger = currentLogger();
    if (logger == nullptr) return;
    try {
        logger->log(severity, concat(parts...).c_str());
    } catch (...) {
    }
}

template <typename... Parts>
void logError(const Parts&... parts) noexcept {
    logAt(Severity::kERROR, parts...);
}

template <typename... Parts>
void logWarning(const Parts&... parts) noexcept {
    logAt(Severity::kWARNING, parts...);
}

template <typename... Parts>
void logVerbose(const Parts&... parts) noexcept {
    logAt(Severity::kVERBOSE, parts...);
}

// "[2, 16, -1, 12]"; -1 is how TensorRT marks a dimension unknown at build time.
inline std::string formatDims(const nvinfer1::Dims& dims) {
    std::string s = "[";
    for (int32_t i = 0; i < dims.nbDims && i < nvinfer1::Dims::MAX_DIMS; ++i) {
        if (i > 0) s += ", ";
        s += std::to_string(dims.d[i]);
    }
    return s + "]";
}

inline const char* dataTypeName(nvinfer1::DataType type) noexcept {
    switch (type) {
        case nvinfer1::DataType::kFLOAT: return "kFLOAT";
        case nvinfer1::DataType::kHALF: return "kHALF";
        case nvinfer1::DataType::kINT8: return "kINT8";
        case nvinfer1::DataType::kINT32: return "kINT32";
        case nvinfer1::DataType::kBOOL: return "kBOOL";
        case nvinfer1::DataType::kUINT8: return "kUINT8";
        case nvinfer1::DataType::kFP8: return "kFP8";
        case nvinfer1::DataType::kBF16: return "kBF16";
        case nvinfer1::DataType::kINT64: return "kINT64";
        case nvinfer1::DataType::kINT4: return "kINT4";
        case nvinfer1::DataType::kFP4: return "kFP4";
#if VIDTRT_TENSORRT_AT_LEAST(10, 12)
        // The MXFP8 scale type arrived with MXFP8 in 10.12 (absent from the 10.8 headers).
        case nvinfer1::DataType::kE8M0: return "kE8M0";
#endif
    }
    return "unknown DataType";
}

inline const char* fieldTypeName(nvinfer1::PluginFieldType type) noexcept {
    switch (type) {
        case nvinfer1::PluginFieldType::kFLOAT16: return "kFLOAT16";
        case nvinfer1::PluginFieldType::kFLOAT32: return "kFLOAT32";
        case nvinfer1::PluginFieldType::kFLOAT64: return "kFLOAT64";
        case nvinfer1::PluginFieldType::kINT8: return "kINT8";
        case nvinfer1::PluginFieldType::kINT16: return "kINT16";
        case nvinfer1::PluginFieldType::kINT32: return "kINT32";
        case nvinfer1::PluginFieldType::kCHAR: return "kCHAR";
        case nvinfer1::PluginFieldType::kDIMS: return "kDIMS";
        case nvinfer1::PluginFieldType::kUNKNOWN: return "kUNKNOWN";
        case nvinfer1::PluginFieldType::kBF16: return "kBF16";
        case nvinfer1::PluginFieldType::kINT64: return "kINT64";
        case nvinfer1::PluginFieldType::kFP8: return "kFP8";
        case nvinfer1::PluginFieldType::kINT4: return "kINT4";
        case nvinfer1::PluginFieldType::kFP4: return "kFP4";
    }
    return "unknown PluginFieldType";
}

// ---------------------------------------------------------------- plugin fields

// First field called `name`, or nullptr. TensorRT and the ONNX parser may pass
// fields a plugin never asked for (plugin_version, plugin_namespace, ...), so
// callers look up what they need instead of walking the collection in order.
inline const nvinfer1::PluginField* findField(const nvinfer1::PluginFieldCollection* fc,
                                              const char* name) noexcept {
    if (fc == nullptr || fc->fields == nullptr || name == nullptr) return nullptr;
    for (int32_t i = 0; i < fc->nbFields; ++i) {
        const nvinfer1::PluginField& f = fc->fields[i];
        if (f.name != nullptr && std::strcmp(f.name, name) == 0) return &f;
    }
    return nullptr;
}

enum class FieldLookup : int {
    kFound = 0,
    kMissing,
    kWrongType,
    kWrongLength,
    kNoData,
};

// Reads an INT32 scalar field. `value` is written only on kFound. No implicit
// conversion from other integer widths: a creator that silently narrowed an
// INT64 would hide a mismatch between exporter and plugin.
inline FieldLookup readInt32Field(const nvinfer1::PluginFieldCollection* fc, const char* name,
                                  int32_t& value, const nvinfer1::PluginField** found = nullptr) noexcept {
    const nvinfer1::PluginField* f = findField(fc, name);
    if (found != nullptr) *found = f;
    if (f == nullptr) return FieldLookup::kMissing;
    if (f->type != nvinfer1::PluginFieldType::kINT32) return FieldLookup::kWrongType;
    if (f->length != 1) return FieldLookup::kWrongLength;
    if (f->data == nullptr) return FieldLookup::kNoData;
    std::memcpy(&value, f->data, sizeof(value));  // no alignment promise on `data`
    return FieldLookup::kFound;
}

// Why readInt32Field failed, for a log line. `f` is the field it found (if any).
inline std::string describeInt32FieldError(FieldLookup result, const char* name,
                                           const nvinfer1::PluginField* f) {
    switch (result) {
        case FieldLookup::kFound: return concat("field '", name, "' is valid");
        case FieldLookup::kMissing: return concat("field '", name, "' is missing");
        case FieldLookup::kWrongType:
            return concat("field '", name, "' must be PluginFieldType::kINT32, got ",
                          f != nullptr ? fieldTypeName(f->type) : "?",
                          " (from Python, build it from np.int32)");
        case FieldLookup::kWrongLength:
            return concat("field '", name, "' must hold exactly one value, got length ",
                          f != nullptr ? f->length : -1);
        case FieldLookup::kNoData: return concat("field '", name, "' has no data");
    }
    return concat("field '", name, "' is invalid");
}

// Reads a FLOAT32 scalar field; the counterpart of readInt32Field. No implicit
// conversion from FLOAT64 or FLOAT16, for the same reason: a silent
// conversion would hide a mismatch between exporter and plugin.
inline FieldLookup readFloat32Field(const nvinfer1::PluginFieldCollection* fc, const char* name, float& value,
                                    const nvinfer1::PluginField** found) noexcept {
    const nvinfer1::PluginField* f = findField(fc, name);
    *found = f;
    if (f == nullptr) return FieldLookup::kMissing;
    if (f->type != nvinfer1::PluginFieldType::kFLOAT32) return FieldLookup::kWrongType;
    if (f->length != 1) return FieldLookup::kWrongLength;
    if (f->data == nullptr) return FieldLookup::kNoData;
    std::memcpy(&value, f->data, sizeof(value));  // no alignment promise on `data`
    return FieldLookup::kFound;
}

// Why readFloat32Field failed, for a log line.
inline std::string describeFloat32FieldError(FieldLookup result, const char* name, const nvinfer1::PluginField* f) {
    if (result == FieldLookup::kWrongType) {
        return concat("field '", name, "' must be PluginFieldType::kFLOAT32, got ",
                      f != nullptr ? fieldTypeName(f->type) : "?", " (from Python, build it from np.float32)");
    }
    // The remaining cases do not depend on the field's type.
    return describeInt32FieldError(result, name, f);
}

// A required scalar field, read into `value`; on failure the reason is logged
// (prefixed by `tag`) and false returned — the creators' common case.
inline bool readRequiredField(const std::string& tag, const nvinfer1::PluginFieldCollection* fc, const char* name,
                              int32_t& value) {
    const nvinfer1::PluginField* f = nullptr;
    const FieldLookup result = readInt32Field(fc, name, value, &f);
    if (result != FieldLookup::kFound) logError(tag, ": ", describeInt32FieldError(result, name, f));
    return result == FieldLookup::kFound;
}

inline bool readRequiredField(const std::string& tag, const nvinfer1::PluginFieldCollection* fc, const char* name,
                              float& value) {
    const nvinfer1::PluginField* f = nullptr;
    const FieldLookup result = readFloat32Field(fc, name, value, &f);
    if (result != FieldLookup::kFound) logError(tag, ": ", describeFloat32FieldError(result, name, f));
    return result == FieldLookup::kFound;
}

// ---------------------------------------------------------------- error handling

// Thrown inside the library only; guard() turns it into a log line and a
// return code before control goes back to TensorRT.
class PluginError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Logs the exception currently being handled. Only valid inside a catch block.
inline void reportCurrentException(const char* where) noexcept {
    try {
        throw;
    } catch (const PluginError& e) {
        logError(where, ": ", e.what());
    } catch (const std::exception& e) {
        logError(where, ": unexpected exception: ", e.what());
    } catch (...) {
        logError(where, ": unknown exception");
    }
}

// Runs `body` and returns its result, or `failure` if it threw. Every virtual
// that TensorRT calls is noexcept, and an exception escaping one would call
// std::terminate inside the user's process, so each of them goes through here.
template <typename R, typename Body>
R guard(const char* where, R failure, Body&& body) noexcept {
    try {
        return std::forward<Body>(body)();
    } catch (...) {
        reportCurrentException(where);
        return failure;
    }
}

}  // namespace plugin
}  // namespace vidtrt

// Throws PluginError (caught by guard) when `cond` is false. The arguments
// after the condition (at least one) are streamed into the message.
#define VIDTRT_PLUGIN_CHECK(cond, ...)                                                  \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            throw ::vidtrt::plugin::PluginError(::vidtrt::plugin::concat(               \
                "check failed: " #cond " (" __FILE__ ":", __LINE__, "): ", __VA_ARGS__)); \
        }                                                                               \
    } while (0)

// Throws PluginError when a CUDA runtime call fails. Needs the CUDA runtime at
// link time, so only code that links cudart may expand it.
#define VIDTRT_CUDA_CHECK(call)                                                            \
    do {                                                                                   \
        const cudaError_t vidtrt_cuda_status_ = (call);                                    \
        if (vidtrt_cuda_status_ != cudaSuccess) {                                          \
            throw ::vidtrt::plugin::PluginError(::vidtrt::plugin::concat(                  \
                #call " failed (" __FILE__ ":", __LINE__, "): ",                           \
                cudaGetErrorName(vidtrt_cuda_status_), ": ",                               \
                cudaGetErrorString(vidtrt_cuda_status_)));                                 \
        }                                                                                  \
    } while (0)
