// Launchers of the relation propagation kernels. Plain C++ signatures (no
// CUDA, TensorRT or Python types) so the TensorRT plugin, the Python binding
// and tests can all call them.
#pragma once

#include <cstddef>

#include "../common/vidtrt_kernel_common.h"
#include "relation_propagation_kernel.h"

namespace vidtrt {
namespace relation_propagation {

struct Problem {
    Shape shape;
    Strides2 sigma, phi, regions;  // element strides (row, column)
    int64_t valid;                 // element stride of valid [N]
    Strides2 out;
};

// Which build of the host body runs: kAuto takes the AVX2 + FMA one when the
// CPU has it; kGeneric forces the baseline one (tests compare the two).
enum class HostIsa : int { kAuto = 0, kGeneric = 1 };

// Runs on the calling thread's CPU with OpenMP over blocks of rows. Allocates
// O(N·(d + D)) FP32 scratch. num_threads <= 0 uses OpenMP's default. Returns a
// vidtrt::Status.
int forward_host(DType dtype, const void* sigma, const void* phi, const void* regions, const void* valid, void* out,
                 const Problem& problem, int num_threads, HostIsa isa = HostIsa::kAuto);

// Device scratch, in floats, each array starting on a 256-byte boundary:
// inverse norms of sigma and phi, A·1, A·(A·1) + A·1 (N each), A (N·N) and
// Y = A·R (N·D).
constexpr int64_t kCudaAlignFloats = 64;

inline int64_t cuda_align(int64_t floats) { return (floats + kCudaAlignFloats - 1) / kCudaAlignFloats * kCudaAlignFloats; }

inline size_t cuda_workspace_bytes(int64_t N, int64_t D) {
    if (N <= 0) return 0;
    const int64_t floats = 4 * cuda_align(N) + cuda_align(N * N) + cuda_align(N * (D > 0 ? D : 0));
    return static_cast<size_t>(floats) * sizeof(float);
}

// Enqueues on `stream` (a cudaStream_t). `workspace` is device memory of at
// least cuda_workspace_bytes(N, D) bytes. Returns a vidtrt::Status:
// kInvalidArgument for a bad shape or a missing or short workspace,
// kCudaError when a launch failed. Defined only when the CUDA sources are built.
int forward_cuda(DType dtype, const void* sigma, const void* phi, const void* regions, const void* valid, void* out,
                 const Problem& problem, void* workspace, size_t workspace_bytes, void* stream);

}  // namespace relation_propagation
}  // namespace vidtrt
