// Entry points of libvidtrt_plugins.so as a TensorRT dynamic plugin library
// (trtexec --dynamicPlugins, IPluginRegistry::loadLibrary). TensorRT looks up
// exactly these two C symbols; everything else in the library is hidden, so
// the creators below are reachable only through getCreators().
//
// The library does not register anything at load time and never touches the
// CUDA runtime before enqueue, so it can be loaded (and inspected by tests)
// on a machine without a GPU or libnvinfer.
#include <NvInferRuntime.h>

#include <cstdint>
#include <iterator>

#include "../most_similar_roi_align/most_similar_roi_align_plugin.h"
#include "../ps_roi_align/ps_roi_align_plugin.h"
#include "../psla/psla_plugin.h"
#include "../relation_propagation/relation_propagation_plugin.h"
#include "plugin_utils.h"

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
    static nvinfer1::IPluginCreatorInterface* const table[] = {
        &psla,
        &psRoiAlign,
        &mostSimilarRoiAlign,
        &relationPropagation,
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
