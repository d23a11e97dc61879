// Launchers of the most-similar RoI align kernel body. Plain C++ signatures
// (no CUDA, TensorRT or Python types) so the TensorRT plugin, the Python
// binding and tests can all call them.
#pragma once

#include <cstddef>

#include "../common/vidtrt_kernel_common.h"
#include "most_similar_roi_align_kernel.h"

namespace vidtrt {
namespace most_similar_roi_align {

struct Problem {
    Shape shape;
    Strides4 roi;      // element strides (r, c, y, x)
    Strides4 support;  // element strides (t, c, y, x)
    Strides5 out;      // element strides (t, r, c, y, x)
};

// Scratch the CUDA launcher needs: the normalised FP32 support panels, then
// the normalised FP32 queries. Depends on the shape only, so a plugin can size
// it from its largest shapes.
inline size_t workspace_bytes(const Shape& s) {
    return static_cast<size_t>(support_scratch_elements(s) + query_scratch_elements(s)) * sizeof(float);
}

// Runs on the calling thread's CPU with OpenMP; allocates its own scratch
// (workspace_bytes(problem.shape)), so it throws std::bad_alloc when that
// fails. num_threads <= 0 uses OpenMP's default. Returns a vidtrt::Status.
int forward_host(DType dtype, const void* roi, const void* support, void* out, const Problem& problem,
                 int num_threads);

// Enqueues on `stream` (a cudaStream_t). `workspace` is device memory of at
// least workspace_bytes(problem.shape) bytes, aligned to 16 bytes (it may be
// null when that is 0). Returns a vidtrt::Status; kCudaError when a launch
// itself failed. Defined only when the CUDA sources are built.
int forward_cuda(DType dtype, const void* roi, const void* support, void* out, void* workspace,
                 const Problem& problem, void* stream);

}  // namespace most_similar_roi_align
}  // namespace vidtrt
