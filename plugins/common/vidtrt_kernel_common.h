// Shared by every kernel body: compiled by the host compiler (CPU launchers)
// and by nvcc (CUDA launchers, TensorRT plugins). Nothing here depends on
// TensorRT, PyTorch or Python.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define VIDTRT_HD __host__ __device__
#define VIDTRT_FORCEINLINE __forceinline__
#else
#define VIDTRT_HD
#define VIDTRT_FORCEINLINE inline __attribute__((always_inline))
#endif

namespace vidtrt {

// Element strides of a 4-D tensor, in elements (not bytes). Kernel bodies take
// strides instead of assuming NCHW so that a launcher may pick the layout that
// suits its processor (the host launcher feeds channels-last tensors, where the
// per-position channel loops become unit-stride; the CUDA launcher keeps NCHW,
// where neighbouring threads read neighbouring x).
struct Strides4 {
    int64_t n, c, y, x;
};

// Conversions between a storage type and the FP32 every kernel computes in.
// Specialised per storage type; the host and device half types are specialised
// next to their launchers (vidtrt_host_half.h, vidtrt_device_half.cuh).
template <typename T>
struct NumTraits;

template <>
struct NumTraits<float> {
    VIDTRT_HD static VIDTRT_FORCEINLINE float to_float(float v) { return v; }
    VIDTRT_HD static VIDTRT_FORCEINLINE float from_float(float v) { return v; }
};

// Status codes returned by launchers (0 = success). Python and the plugins map
// them to their own error reporting.
enum Status : int {
    kSuccess = 0,
    kInvalidArgument = 1,
    kUnsupportedDType = 2,
    kCudaError = 3,
};

}  // namespace vidtrt

namespace vidtrt {

// Storage types a launcher accepts. Values are part of the host library's ABI.
enum class DType : int {
    kFloat32 = 0,
    kFloat16 = 1,
};

// Channel-stride policy of a kernel body: kUnitChannelStride lets the host
// compiler see unit-stride channel loops (and vectorise them); the generic
// instantiation reads the stride at run time.
enum ChannelStride : int {
    kAnyChannelStride = 0,
    kUnitChannelStride = 1,
};

template <int kPolicy>
VIDTRT_HD VIDTRT_FORCEINLINE int64_t channel_stride(int64_t runtime_stride) {
    return kPolicy == kUnitChannelStride ? 1 : runtime_stride;
}

}  // namespace vidtrt

#if defined(_OPENMP) && !defined(__CUDA_ARCH__)
#define VIDTRT_PRAGMA(x) _Pragma(#x)
#define VIDTRT_SIMD_SUM(var) VIDTRT_PRAGMA(omp simd reduction(+ : var))
#define VIDTRT_SIMD_SUM4(a, b, c, d) VIDTRT_PRAGMA(omp simd reduction(+ : a, b, c, d))
#define VIDTRT_SIMD VIDTRT_PRAGMA(omp simd)
#else
#define VIDTRT_SIMD_SUM(var)
#define VIDTRT_SIMD_SUM4(a, b, c, d)
#define VIDTRT_SIMD
#endif
