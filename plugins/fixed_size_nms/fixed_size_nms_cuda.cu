// CUDA launcher of the fixed-size NMS kernel body: three kernels on one
// stream, all scratch in the caller's workspace (layout in
// fixed_size_nms_launch.h), no host synchronisation.
//
//   1 place   one thread per box: stable rank by counting, then the box,
//             area and index written at that position (neighbouring threads
//             read the same score at a time: broadcasts)
//   2 mask    one thread per (row, word) at or right of the diagonal; the
//             threads of a block are neighbouring rows of one word, so they
//             read the same 64 column boxes
//   3 scan    one warp in one block: lanes share the removed bits in shared
//             memory and split each kept row's words between them
//
// torchvision's CUDA NMS copies its mask to the host and scans there; keeping
// the scan on the device costs a sequential walk (at most K steps, short for
// the usual max_output) and makes enqueue asynchronous and graph-capturable.
#include <cuda_runtime.h>

#include "fixed_size_nms_launch.h"

namespace vidtrt {
namespace fixed_size_nms {
namespace {

constexpr int kPlaceThreads = 128;
constexpr int kMaskThreads = 64;  // rows per block
constexpr int kWarp = 32;
// K <= kMaxBoxes keeps both grids far inside CUDA's limits (at most 1024
// row blocks and 1024 words).
static_assert(kMaxBoxes / kMaskThreads <= 65535 && kMaxBoxes / kWordBits <= 65535, "mask grid too large");

struct WarpSync {
    __host__ __device__ void operator()() const {
#if defined(__CUDA_ARCH__)
        __syncwarp();
#endif
    }
};

__global__ void __launch_bounds__(kPlaceThreads) place_kernel(Input in, Sorted sorted, int64_t K) {
    const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
    if (i < K) place_entry(in, sorted, K, i);
}

// blockIdx.x is a block of 64 rows (one mask word high), blockIdx.y the word.
__global__ void __launch_bounds__(kMaskThreads) mask_kernel(Sorted sorted, int64_t K, float threshold) {
    const int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
    const int64_t w = blockIdx.y;
    // Words wholly left of the diagonal are never read (whole blocks leave here).
    if (p >= K || w < p / kWordBits) return;
    sorted.mask[p * mask_words(K) + w] = mask_word(sorted, K, threshold, p, w);
}

__global__ void __launch_bounds__(kWarp) scan_kernel(Sorted sorted, Shape shape, int32_t* keep, int64_t keep_stride) {
    extern __shared__ uint64_t removed[];
    scan(sorted, shape, keep, keep_stride, removed, static_cast<int>(threadIdx.x), kWarp, WarpSync{});
}

template <typename T>
T* carve(unsigned char*& cursor, size_t count) {
    T* p = reinterpret_cast<T*>(cursor);
    cursor += cuda_align(count * sizeof(T));
    return p;
}

}  // namespace

int forward_cuda(const float* boxes, const float* scores, int32_t* keep, const Problem& problem, void* workspace,
                 size_t workspace_bytes, void* stream) {
    const Shape& shape = problem.shape;
    if (!valid_shape(shape)) return kInvalidArgument;
    const int64_t K = shape.K;
    if (K > 0 && (workspace == nullptr || workspace_bytes < cuda_workspace_bytes(K))) return kInvalidArgument;
    auto s = static_cast<cudaStream_t>(stream);
    const int64_t words = mask_words(K);

    Sorted sorted{};
    if (K > 0) {
        unsigned char* cursor = static_cast<unsigned char*>(workspace);
        sorted.boxes = carve<float>(cursor, static_cast<size_t>(4 * K));
        sorted.area = carve<float>(cursor, static_cast<size_t>(K));
        sorted.index = carve<int32_t>(cursor, static_cast<size_t>(K));
        sorted.mask = carve<uint64_t>(cursor, static_cast<size_t>(K * words));

        const Input in{boxes, problem.boxes, scores, problem.scores};
        const int64_t place_blocks = (K + kPlaceThreads - 1) / kPlaceThreads;
        place_kernel<<<static_cast<unsigned>(place_blocks), kPlaceThreads, 0, s>>>(in, sorted, K);
        if (cudaGetLastError() != cudaSuccess) return kCudaError;

        const int64_t row_blocks = (K + kMaskThreads - 1) / kMaskThreads;
        const dim3 grid(static_cast<unsigned>(row_blocks), static_cast<unsigned>(words));
        mask_kernel<<<grid, kMaskThreads, 0, s>>>(sorted, K, shape.iou_threshold);
        if (cudaGetLastError() != cudaSuccess) return kCudaError;
    }
    // Runs for K = 0 too: keep is still filled with -1.
    const size_t shared = static_cast<size_t>(words) * sizeof(uint64_t);
    scan_kernel<<<1, kWarp, shared, s>>>(sorted, shape, keep, problem.keep);
    return cudaGetLastError() == cudaSuccess ? kSuccess : kCudaError;
}

}  // namespace fixed_size_nms
}  // namespace vidtrt
