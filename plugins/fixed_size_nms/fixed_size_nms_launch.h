// Launchers of the fixed-size NMS kernel body. Plain C++ signatures (no CUDA,
// TensorRT or Python types) so the TensorRT plugin, the Python binding and
// tests can all call them. FP32 boxes and scores only: the IoU must be
// torchvision's FP32 expression to the bit.
#pragma once

#include <cstddef>

#include "../common/vidtrt_kernel_common.h"
#include "fixed_size_nms_kernel.h"

namespace vidtrt {
namespace fixed_size_nms {

struct Problem {
    Shape shape;
    BoxStrides boxes;  // element strides (box, coordinate)
    int64_t scores;    // element stride of scores [K]
    int64_t keep;      // element stride of keep [max_output]
};

// Runs on the calling thread: the order by a stable sort, then the scan,
// which computes mask words only when it reaches them (see
// fixed_size_nms_host.cpp). O(K) scratch, no mask. num_threads is accepted
// for the common launcher signature and ignored (one thread). Returns a
// vidtrt::Status.
int forward_host(const float* boxes, const float* scores, int32_t* keep, const Problem& problem, int num_threads);

// Device scratch, each array starting on a 256-byte boundary: sorted boxes
// (4·K floats), areas (K floats), indices (K int32) and the mask
// (K · mask_words(K) uint64).
constexpr size_t kCudaAlignBytes = 256;

inline size_t cuda_align(size_t bytes) { return (bytes + kCudaAlignBytes - 1) / kCudaAlignBytes * kCudaAlignBytes; }

inline size_t cuda_workspace_bytes(int64_t K) {
    if (K <= 0) return 0;
    const size_t k = static_cast<size_t>(K);
    return cuda_align(4 * k * sizeof(float)) + cuda_align(k * sizeof(float)) + cuda_align(k * sizeof(int32_t)) +
           cuda_align(k * static_cast<size_t>(mask_words(K)) * sizeof(uint64_t));
}

// Enqueues on `stream` (a cudaStream_t) three kernels: placement (one thread
// per box), mask (one thread per row word), scan (one warp). Nothing is
// copied to the host and nothing synchronises. `workspace` is device memory
// of at least cuda_workspace_bytes(K) bytes (none is needed for K = 0, where
// keep is filled with -1). Returns a vidtrt::Status: kInvalidArgument for a
// bad shape or a missing or short workspace, kCudaError when a launch failed.
// Defined only when the CUDA sources are built.
int forward_cuda(const float* boxes, const float* scores, int32_t* keep, const Problem& problem, void* workspace,
                 size_t workspace_bytes, void* stream);

}  // namespace fixed_size_nms
}  // namespace vidtrt
