// FP16 storage on the host: GCC/Clang's _Float16 (x86-64 with SSE2, AArch64).
#pragma once

#include "vidtrt_kernel_common.h"

namespace vidtrt {

using HostHalf = _Float16;

template <>
struct NumTraits<_Float16> {
    static inline float to_float(_Float16 v) { return static_cast<float>(v); }
    static inline _Float16 from_float(float v) { return static_cast<_Float16>(v); }
};

}  // namespace vidtrt
