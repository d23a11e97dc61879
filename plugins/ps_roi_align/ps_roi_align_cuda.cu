// CUDA launcher of the position-sensitive RoI Align kernel body: one thread
// per output element, neighbouring threads on neighbouring bins of the same
// RoI (they share the RoI row and read nearby points of neighbouring planes).
#include <cuda_runtime.h>

#include "../common/vidtrt_device_half.cuh"
#include "ps_roi_align_launch.h"

namespace vidtrt {
namespace ps_roi_align {
namespace {

constexpr int kThreads = 128;

template <typename T, typename TRoi>
__global__ void __launch_bounds__(kThreads) ps_roi_align_kernel(Args<T, TRoi> a, int64_t elements) {
    for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < elements;
         e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        ps_roi_align_element<T, TRoi>(a, e);
    }
}

template <typename T, typename TRoi>
int run(const void* features, const void* rois, void* out, const Problem& p, cudaStream_t stream) {
    Args<T, TRoi> a{static_cast<const T*>(features), static_cast<const TRoi*>(rois), static_cast<T*>(out),
                    p.features, p.rois, p.out, p.shape};
    const int64_t k = p.shape.output_size;
    const int64_t elements = p.shape.R * out_channels(p.shape) * k * k;
    const int64_t wanted = (elements + kThreads - 1) / kThreads;
    const int blocks = static_cast<int>(wanted < 65535 ? wanted : 65535);
    ps_roi_align_kernel<T, TRoi><<<blocks, kThreads, 0, stream>>>(a, elements);
    return cudaGetLastError() == cudaSuccess ? kSuccess : kCudaError;
}

}  // namespace

int forward_cuda(DType features_dtype, DType rois_dtype, const void* features, const void* rois, void* out,
                 const Problem& problem, void* stream) {
    if (!valid_shape(problem.shape)) return kInvalidArgument;
    if (!supported_types(features_dtype, rois_dtype)) return kUnsupportedDType;
    if (problem.shape.R == 0 || out_channels(problem.shape) == 0) return kSuccess;
    auto s = static_cast<cudaStream_t>(stream);
    if (features_dtype == DType::kFloat32) return run<float, float>(features, rois, out, problem, s);
    if (rois_dtype == DType::kFloat32) return run<__half, float>(features, rois, out, problem, s);
    return run<__half, __half>(features, rois, out, problem, s);
}

}  // namespace ps_roi_align
}  // namespace vidtrt
