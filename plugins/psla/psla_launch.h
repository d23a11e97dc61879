// Launchers of the PSLA kernel body. Plain C++ signatures (no CUDA, TensorRT
// or Python types) so the TensorRT plugin, the Python binding and tests can
// all call them.
#pragma once

#include "../common/vidtrt_kernel_common.h"
#include "psla_kernel.h"

namespace vidtrt {
namespace psla {

struct Problem {
    Shape shape;
    Strides4 query, key, value, out;  // element strides of each tensor
};

// Which build of the host body runs: kAuto takes the AVX2 + FMA one on CPUs
// that have it, kGeneric the baseline x86-64 one (tests compare the two).
enum class HostIsa : int { kAuto = 0, kGeneric = 1 };

// Whether forward_host's fastest schedule for `dtype` on this CPU reads NCHW
// tensors in place (columns unit-stride; FP32 with AVX2 + FMA): callers then
// pass NCHW tensors as they are. Otherwise channels-last inputs are fastest
// (the per-position body's channel loops run unit-stride on them). Any
// strides give the same result either way.
bool host_reads_nchw(DType dtype, HostIsa isa = HostIsa::kAuto);

// Runs on the calling thread's CPU with OpenMP over positions. num_threads <= 0
// uses OpenMP's default. Returns a vidtrt::Status.
int forward_host(DType dtype, const void* query, const void* key, const void* value, void* out,
                 const Problem& problem, int num_threads, HostIsa isa = HostIsa::kAuto);

// Enqueues on `stream` (a cudaStream_t). Returns a vidtrt::Status; kCudaError
// when the launch itself failed. Defined only when the CUDA sources are built.
int forward_cuda(DType dtype, const void* query, const void* key, const void* value, void* out,
                 const Problem& problem, void* stream);

}  // namespace psla
}  // namespace vidtrt
