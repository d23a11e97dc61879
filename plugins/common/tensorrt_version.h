// The TensorRT version the plugin sources are being compiled against, and the
// oldest one they accept.
//
// One build of libvidtrt_plugins.so serves one TensorRT major. The plugin
// interfaces it implements (IPluginV3, IPluginV3One*, IPluginCreatorV3One) are
// declared identically by the 10.8, 10.16 and 11.1 headers, so the sources
// compile unchanged against all of them; but TensorRT 11 made ILogger and
// ILoggerFinder versioned interfaces (they gained IVersionedInterface as a base
// class), so their vtables differ between 10 and 11. The library calls
// ILoggerFinder::findLogger and ILogger::log through those vtables, and a
// library compiled for one major would call the wrong slot in the other. That
// is why the version is recorded in the library (vidtrtPluginLibraryInfo) and
// checked before TensorRT loads it.
#pragma once

#include <NvInferVersion.h>

// Every supported header set defines NV_TENSORRT_MAJOR/MINOR: 10.8 as plain
// numbers, 10.16 and 11.x as aliases of TRT_MAJOR_ENTERPRISE/TRT_MINOR_ENTERPRISE.
#if !defined(NV_TENSORRT_MAJOR) || !defined(NV_TENSORRT_MINOR)
#error "NvInferVersion.h defines no NV_TENSORRT_MAJOR/NV_TENSORRT_MINOR: not a TensorRT 10.8+ header set"
#endif

#define VIDTRT_TENSORRT_AT_LEAST(major, minor) \
    (NV_TENSORRT_MAJOR > (major) || (NV_TENSORRT_MAJOR == (major) && NV_TENSORRT_MINOR >= (minor)))

// 10.8 introduced DataType::kFP4 and PluginFieldType::kFP4, which the log
// helpers name; CMake refuses older headers with the same message.
#if !VIDTRT_TENSORRT_AT_LEAST(10, 8)
#error "vidtrt's TensorRT plugins need TensorRT 10.8 or newer headers"
#endif
