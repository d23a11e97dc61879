// Launchers of the position-sensitive RoI Align kernel body. Plain C++
// signatures (no CUDA, TensorRT or Python types) so the TensorRT plugin, the
// Python binding and tests can all call them.
#pragma once

#include "../common/vidtrt_kernel_common.h"
#include "ps_roi_align_kernel.h"

namespace vidtrt {
namespace ps_roi_align {

struct Problem {
    Shape shape;
    Strides4 features;  // element strides (n, channel, y, x)
    RoiStrides rois;    // element strides (r, column)
    Strides4 out;       // element strides (r, c, i, j)
};

// The RoI table is either FP32 or the features' type: FP16 image coordinates
// are 1 px apart above 1024, so callers with FP16 features may keep FP32 RoIs.
inline bool supported_types(DType features, DType rois) {
    return (features == DType::kFloat32 || features == DType::kFloat16) &&
           (rois == DType::kFloat32 || rois == features);
}

// Runs on the calling thread's CPU with OpenMP over output elements.
// num_threads <= 0 uses OpenMP's default. Returns a vidtrt::Status.
int forward_host(DType features_dtype, DType rois_dtype, const void* features, const void* rois, void* out,
                 const Problem& problem, int num_threads);

// Enqueues on `stream` (a cudaStream_t). Returns a vidtrt::Status; kCudaError
// when the launch itself failed. Defined only when the CUDA sources are built.
int forward_cuda(DType features_dtype, DType rois_dtype, const void* features, const void* rois, void* out,
                 const Problem& problem, void* stream);

}  // namespace ps_roi_align
}  // namespace vidtrt
