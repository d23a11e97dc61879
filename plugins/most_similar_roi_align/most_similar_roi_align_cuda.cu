// CUDA launcher of the most-similar RoI align kernel body, NCHW strides.
//   1. normalize_kernel: one thread per support panel lane and per query,
//      into the workspace (queries as [C][Q], so neighbouring threads read
//      neighbouring addresses in step 2).
//   2. query_kernel: one thread per (frame, query), frame-major, so a warp
//      shares its frame and every panel row it reads is one broadcast.
// The similarity matrix is never stored: each thread keeps its own top-k.
#include <cuda_runtime.h>

#include "../common/vidtrt_device_half.cuh"
#include "most_similar_roi_align_launch.h"

namespace vidtrt {
namespace most_similar_roi_align {
namespace {

constexpr int kThreads = 128;

int blocks_for(int64_t items) {
    const int64_t wanted = (items + kThreads - 1) / kThreads;
    return static_cast<int>(wanted < 65535 ? wanted : 65535);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) normalize_kernel(Args<T> a, int64_t support_items, int64_t items) {
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < items;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        if (i < support_items) {
            normalize_support_item<T, kAnyChannelStride>(a, i);
        } else {
            normalize_query_item<T, kAnyChannelStride>(a, i - support_items);
        }
    }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) query_kernel(Args<T> a, int64_t queries, int64_t items) {
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < items;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        query_frame<T>(a, i / queries, i % queries);
    }
}

template <typename T>
int run(const void* roi, const void* support, void* out, void* workspace, const Problem& p, cudaStream_t stream) {
    const Shape& s = p.shape;
    const int64_t queries = num_queries(s);
    float* scratch = static_cast<float*>(workspace);
    const int64_t support_elements = support_scratch_elements(s);
    Args<T> a{static_cast<const T*>(roi),
              static_cast<const T*>(support),
              static_cast<T*>(out),
              p.roi,
              p.support,
              p.out,
              Scratch{scratch, scratch + support_elements, 1, queries},
              s};
    const int64_t support_items = s.T * num_panels(s) * kPanel;
    const int64_t norm_items = support_items + queries;
    normalize_kernel<T><<<blocks_for(norm_items), kThreads, 0, stream>>>(a, support_items, norm_items);
    if (cudaGetLastError() != cudaSuccess) return kCudaError;
    const int64_t items = s.T * queries;
    query_kernel<T><<<blocks_for(items), kThreads, 0, stream>>>(a, queries, items);
    return cudaGetLastError() == cudaSuccess ? kSuccess : kCudaError;
}

}  // namespace

int forward_cuda(DType dtype, const void* roi, const void* support, void* out, void* workspace,
                 const Problem& problem, void* stream) {
    if (!valid_shape(problem.shape)) return kInvalidArgument;
    if (problem.shape.T * num_queries(problem.shape) == 0 || problem.shape.C == 0) return kSuccess;
    if (workspace == nullptr) return kInvalidArgument;
    auto s = static_cast<cudaStream_t>(stream);
    switch (dtype) {
        case DType::kFloat32:
            return run<float>(roi, support, out, workspace, problem, s);
        case DType::kFloat16:
            return run<__half>(roi, support, out, workspace, problem, s);
    }
    return kUnsupportedDType;
}

}  // namespace most_similar_roi_align
}  // namespace vidtrt
