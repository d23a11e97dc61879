// Entry points of libvidtrt_plugins.so as a TensorRT dynamic plugin library
// (trtexec --dynamicPlugins, IPluginRegistry::loadLibrary). TensorRT looks up
// two C symbols, getCreators and setLoggerFinder; vidtrt's Python side looks up
// a third, vidtrtPluginLibraryInfo, to learn without TensorRT which TensorRT
// the library was built for. Everything else in the library is hidden, so the
// creators below are reachable only through getCreators().
//
// The library does not register anything at load time and never touches the
// CUDA runtime before enqueue, so it can be loaded (and inspected by tests)
// on a machine without a GPU or libnvinfer.
#include <NvInferRuntime.h>

#include <cstdint>
#include <cstring>
#include <iterator>
#include <string>

#include "plugin_base.h"
#include "plugin_utils.h"
#include "tensorrt_version.h"

#define VIDTRT_PLUGIN_EXPORT extern "C" __attribute__((visibility("default")))

// The creator classes of plugins/vidtrt_ops.def, known here by name only: each
// op's <op>_plugin.cpp defines creatorInstance<Creator>() (plugin_base.h,
// VIDTRT_PLUGIN_CREATOR), so this file includes no plugin header and a new op
// needs no edit here. (Including the headers through the .def is not possible:
// the preprocessor cannot #include from a macro expansion; and a header CMake
// generated would be missing where this file is compiled without CMake, as
// tests/test_plugin_tensorrt_headers.py does against every TensorRT header set.)
namespace vidtrt {
namespace plugin {
#define VIDTRT_OP(directory, name, version, Creator) \
    class Creator;                                     \
    template <>                                        \
    nvinfer1::IPluginCreatorV3One& creatorInstance<Creator>() noexcept;
#include "../vidtrt_ops.def"
#undef VIDTRT_OP
}  // namespace plugin
}  // namespace vidtrt

namespace {

// One creator object per plugin for the lifetime of the process (TensorRT keeps
// the pointers after getCreators() returns), in the .def file's order.
nvinfer1::IPluginCreatorInterface* const* creatorTable(int32_t& count) noexcept {
    static nvinfer1::IPluginCreatorInterface* const table[] = {
#define VIDTRT_OP(directory, name, version, Creator) &vidtrt::plugin::creatorInstance<vidtrt::plugin::Creator>(),
#include "../vidtrt_ops.def"
#undef VIDTRT_OP
    };
    count = static_cast<int32_t>(std::size(table));
    return table;
}

}  // namespace

VIDTRT_PLUGIN_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) noexcept {
    return creatorTable(nbCreators);
}

VIDTRT_PLUGIN_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept {
    vidtrt::plugin::setLoggerFinder(finder);
}

namespace {

// "tensorrt=<major>.<minor>;creators=<name>:<version>:<namespace>,..." with the
// creators in getCreators() order. Written from the creator table itself, so
// the list Python reads cannot drift from what TensorRT registers.
std::string describeLibrary() {
    std::string info = vidtrt::plugin::concat("tensorrt=", NV_TENSORRT_MAJOR, ".", NV_TENSORRT_MINOR, ";creators=");
    int32_t count = 0;
    nvinfer1::IPluginCreatorInterface* const* table = creatorTable(count);
    for (int32_t i = 0; i < count; ++i) {
        if (i > 0) info += ",";
        // Every creator in the table is an IPluginCreatorV3One today. One of
        // another generation would be listed under its interface kind (and
        // fail the op-coverage tests) rather than be misread through a cast.
        const char* kind = table[i]->getInterfaceInfo().kind;
        if (std::strcmp(kind, "PLUGIN CREATOR_V3ONE") != 0) {
            info += vidtrt::plugin::concat(kind, ":?:?");
            continue;
        }
        const auto* creator = static_cast<const nvinfer1::IPluginCreatorV3One*>(table[i]);
        info += vidtrt::plugin::concat(creator->getPluginName(), ":", creator->getPluginVersion(), ":",
                                       creator->getPluginNamespace());
    }
    return info;
}

}  // namespace

// What this build is, readable with dlopen/ctypes alone (no TensorRT, no GPU):
// the TensorRT major.minor of the headers it was compiled against and its
// creators. The string lives as long as the library; nullptr only if it could
// not be allocated.
VIDTRT_PLUGIN_EXPORT const char* vidtrtPluginLibraryInfo() noexcept {
    try {
        static const std::string info = describeLibrary();
        return info.c_str();
    } catch (...) {
        return nullptr;
    }
}
