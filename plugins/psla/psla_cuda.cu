// CUDA launcher of the PSLA kernel body: one thread per output position, NCHW
// strides (neighbouring threads read neighbouring x, so loads coalesce).
#include <cuda_runtime.h>

#include "../common/vidtrt_device_half.cuh"
#include "psla_launch.h"

namespace vidtrt {
namespace psla {
namespace {

constexpr int kThreads = 128;

template <typename T>
__global__ void __launch_bounds__(kThreads) psla_kernel(Args<T> a, int64_t positions) {
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < positions;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        psla_position<T, kAnyChannelStride>(a, i);
    }
}

template <typename T>
int run(const void* query, const void* key, const void* value, void* out, const Problem& p,
        cudaStream_t stream) {
    Args<T> a{static_cast<const T*>(query), static_cast<const T*>(key), static_cast<const T*>(value),
              static_cast<T*>(out), p.query, p.key, p.value, p.out, p.shape};
    const int64_t positions = p.shape.N * p.shape.H * p.shape.W;
    const int64_t wanted = (positions + kThreads - 1) / kThreads;
    const int blocks = static_cast<int>(wanted < 65535 ? wanted : 65535);
    psla_kernel<T><<<blocks, kThreads, 0, stream>>>(a, positions);
    return cudaGetLastError() == cudaSuccess ? kSuccess : kCudaError;
}

}  // namespace

int forward_cuda(DType dtype, const void* query, const void* key, const void* value, void* out,
                 const Problem& problem, void* stream) {
    if (!valid_shape(problem.shape)) return kInvalidArgument;
    if (problem.shape.N * problem.shape.H * problem.shape.W == 0 || problem.shape.C == 0) return kSuccess;
    auto s = static_cast<cudaStream_t>(stream);
    switch (dtype) {
        case DType::kFloat32:
            return run<float>(query, key, value, out, problem, s);
        case DType::kFloat16:
            return run<__half>(query, key, value, out, problem, s);
    }
    return kUnsupportedDType;
}

}  // namespace psla
}  // namespace vidtrt
