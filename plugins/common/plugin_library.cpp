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

#include "../fixed_size_nms/fixed_size_nms_plugin.h"
#include "../most_similar_roi_align/most_similar_roi_align_plugin.h"
#include "../ps_roi_align/ps_roi_align_plugin.h"
#include "../psla/psla_plugin.h"
#include "../relation_propagation/relation_propagation_plugin.h"
#include "plugin_utils.h"
#include "tensorrt_version.h"

#define VIDTRT_PLUGIN_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

// One creator object per plugin for the lifetime of the process: TensorRT keeps
// the pointers after getCreators() returns. Adding an op means adding its
// creator here, and nothing else in this file.
nvinfer1::IPluginCreatorInterface* const* creatorTable(int32_t& count) noexcept {
    static vidtrt::plugin::PslaPluginCreator psla;
    static vidtrt::plugin::PsRoiAlignPluginCreator psRoiAlign;
    static vidtrt::plugin::MostSimilarRoiAlignPluginCreator mostSimilarRoiAlign;
    static vidtrt::plugin::RelationPropagationPluginCreator relationPropagation;
    static vidtrt::plugin::FixedSizeNmsPluginCreator fixedSizeNms;
    static nvinfer1::IPluginCreatorInterface* const table[] = {
        &psla,
        &psRoiAlign,
        &mostSimilarRoiAlign,
        &relationPropagation,
        &fixedSizeNms,
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
