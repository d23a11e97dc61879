// FP16 storage on the device: CUDA's __half.
#pragma once

#include <cuda_fp16.h>

#include "vidtrt_kernel_common.h"

namespace vidtrt {

template <>
struct NumTraits<__half> {
    __host__ __device__ static __forceinline__ float to_float(__half v) { return __half2float(v); }
    __host__ __device__ static __forceinline__ __half from_float(float v) { return __float2half_rn(v); }
};

}  // namespace vidtrt
