// plugins/vidtrt_ops.def as compile-time constants. A plugin header takes its
// TensorRT identity from here, e.g.
//   inline constexpr const char* kPslaPluginName = describedOp("psla").pluginName;
// so that an op's name and version are written once, in the .def file, for
// C++, CMake and Python alike. No TensorRT or CUDA types: any source may
// include it.
#pragma once

#include <cstddef>

namespace vidtrt {
namespace plugin {

struct OpDescription {
    const char* directory;      // plugins/<directory>/
    const char* pluginName;     // TensorRT plugin name == ONNX op_type
    const char* pluginVersion;  // == the node's plugin_version attribute
    const char* creator;        // the creator class's name (without namespace)
};

inline constexpr OpDescription kOpTable[] = {
#define VIDTRT_OP(directory, name, version, Creator) {#directory, #name, version, #Creator},
#include "../vidtrt_ops.def"
#undef VIDTRT_OP
};

inline constexpr std::size_t kOpCount = sizeof(kOpTable) / sizeof(kOpTable[0]);

constexpr bool sameText(const char* a, const char* b) {
    while (*a != '\0' && *a == *b) {
        ++a;
        ++b;
    }
    return *a == *b;
}

// The line of plugins/<directory>/. Used in a constant expression, a directory
// the table does not list is a compile error (the throw is not constant).
constexpr const OpDescription& describedOp(const char* directory) {
    for (const OpDescription& op : kOpTable) {
        if (sameText(op.directory, directory)) return op;
    }
    throw "plugins/vidtrt_ops.def has no line for this directory";
}

// The line naming `creator` as its creator class; a compile error likewise.
constexpr const OpDescription& describedCreator(const char* creator) {
    for (const OpDescription& op : kOpTable) {
        if (sameText(op.creator, creator)) return op;
    }
    throw "plugins/vidtrt_ops.def has no line naming this creator class";
}

}  // namespace plugin
}  // namespace vidtrt
