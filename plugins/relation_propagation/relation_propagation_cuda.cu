// CUDA launcher of relation propagation: five launches on one stream, all
// scratch in the caller's workspace (layout in relation_propagation_launch.h).
//
//   1 inverse norms of sigma and phi, mask folded in          (one thread per row)
//   2 A = affinity(sigma · phi^T) into the workspace          (tiled GEMM, N×N×d)
//   3 a = A·1,  z = A·a + a                                   (one warp per row, twice)
//   4 Y = A·R                                                 (tiled GEMM, N×D×N)
//   5 out = (A·Y + Y) / z                                     (tiled GEMM, N×D×N, division in the epilogue)
//
// Our own tiled kernel rather than cuBLAS(Lt): the CUDA toolkit this builds
// against ships no cuBLAS, and with it the plugin library would need a
// second GPU library at load time (the shared one) or grow by hundreds of MB
// (the static one), plus a handle per execution context, which TensorRT 11's
// IPluginResourceContext no longer provides (it offers an allocator and an
// error recorder only). The GEMM is the textbook 64×64 shared-memory tile
// with a 4×4 register tile per thread, built from the same mma_tile the host
// uses; it is correct for any strides and shapes, not tuned to cuBLAS's speed.
#include <cuda_runtime.h>

#include "../common/vidtrt_device_half.cuh"
#include "relation_propagation_launch.h"

namespace vidtrt {
namespace relation_propagation {
namespace {

constexpr int kTile = 64;                            // rows and columns of C per block
constexpr int kDepth = 16;                           // k per shared-memory stage
constexpr int kThreadTile = 4;                       // C elements per thread along each axis
constexpr int kSide = kTile / kThreadTile;           // threads along each axis of the block
constexpr int kGemmThreads = kSide * kSide;          // 256
constexpr int kPad = 1;                              // keeps the transposed A stores off one bank
constexpr int kRowThreads = 128;
constexpr int64_t kMaxGridY = 65535;

// C[i][j] = Σ_k a(i, k) · b(k, j), handed element by element to `epilogue`.
// a(i, k) = a[i·a_row + k·a_k], b(k, j) = b[k·b_k + j·b_col]: any strides, so
// phi is read transposed in place. Out-of-range elements load as 0.
template <typename TA, typename TB, typename Epilogue>
__global__ void __launch_bounds__(kGemmThreads)
    gemm_kernel(int64_t M, int64_t cols, int64_t K, const TA* a, int64_t a_row, int64_t a_k, const TB* b,
                int64_t b_k, int64_t b_col, Epilogue epilogue) {
    __shared__ float As[kDepth][kTile + kPad];  // As[k][i]: the register tile reads a column of A per k
    __shared__ float Bs[kDepth][kTile];         // Bs[k][j]
    const int tid = threadIdx.x;
    const int tx = tid % kSide;
    const int ty = tid / kSide;
    const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kTile;
    const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kTile;
    float acc[kThreadTile][kThreadTile];
    for (int r = 0; r < kThreadTile; ++r)
        for (int c = 0; c < kThreadTile; ++c) acc[r][c] = 0.f;

    for (int64_t k0 = 0; k0 < K; k0 += kDepth) {
        for (int e = tid; e < kTile * kDepth; e += kGemmThreads) {
            // k fastest for A, j fastest for B: neighbouring threads read
            // neighbouring addresses when those strides are 1 (the usual case).
            const int ai = e / kDepth, ak = e % kDepth;
            const int64_t gi = m0 + ai, gk = k0 + ak;
            As[ak][ai] = gi < M && gk < K ? NumTraits<TA>::to_float(a[gi * a_row + gk * a_k]) : 0.f;
            const int bk = e / kTile, bj = e % kTile;
            const int64_t gkb = k0 + bk, gj = n0 + bj;
            Bs[bk][bj] = gkb < K && gj < cols ? NumTraits<TB>::to_float(b[gkb * b_k + gj * b_col]) : 0.f;
        }
        __syncthreads();
        mma_tile<kThreadTile, kThreadTile>(acc, &As[0][ty * kThreadTile], 1, kTile + kPad, &Bs[0][tx * kThreadTile],
                                           kTile, kDepth);
        __syncthreads();
    }
    for (int r = 0; r < kThreadTile; ++r) {
        const int64_t i = m0 + ty * kThreadTile + r;
        if (i >= M) continue;
        for (int c = 0; c < kThreadTile; ++c) {
            const int64_t j = n0 + tx * kThreadTile + c;
            if (j < cols) epilogue(i, j, acc[r][c]);
        }
    }
}

struct AffinityEpilogue {
    const float* inv_sigma;
    const float* inv_phi;
    float* A;
    int64_t N;
    __device__ void operator()(int64_t i, int64_t j, float dot) const {
        A[i * N + j] = affinity(dot, inv_sigma[i], inv_phi[j]);
    }
};

struct StoreEpilogue {
    float* y;
    int64_t ld;
    __device__ void operator()(int64_t i, int64_t j, float v) const { y[i * ld + j] = v; }
};

template <typename T>
struct PropagatedEpilogue {
    const float* y;  // the "+ A·R" term
    int64_t ld;
    const float* z;  // (A·a + a)_i
    T* out;
    Strides2 so;
    __device__ void operator()(int64_t i, int64_t j, float v) const {
        out[i * so.row + j * so.col] = NumTraits<T>::from_float(propagated(v + y[i * ld + j], z[i]));
    }
};

template <typename T>
__global__ void __launch_bounds__(kRowThreads)
    norms_kernel(const T* sigma, Strides2 ss, const T* phi, Strides2 sp, const T* valid, int64_t sv, int64_t N,
                 int64_t d, float* inv_sigma, float* inv_phi) {
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < N;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const bool ok = is_valid(valid[i * sv]);
        inv_sigma[i] = inverse_norm(sigma + i * ss.row, ss.col, d, ok);
        inv_phi[i] = inverse_norm(phi + i * sp.row, sp.col, d, ok);
    }
}

// out[i] = add[i] + Σ_j A[i][j] · x[j]; x = nullptr means all ones, add =
// nullptr means 0. One warp per row, so the row is read coalesced.
__global__ void __launch_bounds__(kRowThreads)
    row_dot_kernel(const float* A, int64_t N, const float* x, const float* add, float* out) {
    const int lane = threadIdx.x % 32;
    const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
    for (int64_t i = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32; i < N; i += warps) {
        const float* row = A + i * N;
        float sum = 0.f;
        for (int64_t j = lane; j < N; j += 32) sum += row[j] * (x != nullptr ? x[j] : 1.f);
        for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffffu, sum, offset);
        if (lane == 0) out[i] = sum + (add != nullptr ? add[i] : 0.f);
    }
}

int grid_1d(int64_t work, int64_t per_block) {
    const int64_t wanted = (work + per_block - 1) / per_block;
    return static_cast<int>(wanted < 65535 ? wanted : 65535);
}

dim3 gemm_grid(int64_t M, int64_t cols) {
    return dim3(static_cast<unsigned>((cols + kTile - 1) / kTile), static_cast<unsigned>((M + kTile - 1) / kTile));
}

bool launched() { return cudaGetLastError() == cudaSuccess; }

template <typename T>
int run(const void* sigma_v, const void* phi_v, const void* regions_v, const void* valid_v, void* out_v,
        const Problem& p, void* workspace, cudaStream_t stream) {
    const T* sigma = static_cast<const T*>(sigma_v);
    const T* phi = static_cast<const T*>(phi_v);
    const T* regions = static_cast<const T*>(regions_v);
    const T* valid = static_cast<const T*>(valid_v);
    T* out = static_cast<T*>(out_v);
    const int64_t N = p.shape.N, d = p.shape.d, D = p.shape.D;

    float* inv_sigma = static_cast<float*>(workspace);
    float* inv_phi = inv_sigma + cuda_align(N);
    float* a1 = inv_phi + cuda_align(N);
    float* z = a1 + cuda_align(N);
    float* A = z + cuda_align(N);
    float* y = A + cuda_align(N * N);

    norms_kernel<T><<<grid_1d(N, kRowThreads), kRowThreads, 0, stream>>>(sigma, p.sigma, phi, p.phi, valid, p.valid,
                                                                         N, d, inv_sigma, inv_phi);
    if (!launched()) return kCudaError;
    // b(k, j) = phi[j][k]: phi^T read through its strides.
    gemm_kernel<T, T><<<gemm_grid(N, N), kGemmThreads, 0, stream>>>(
        N, N, d, sigma, p.sigma.row, p.sigma.col, phi, p.phi.col, p.phi.row, AffinityEpilogue{inv_sigma, inv_phi, A, N});
    if (!launched()) return kCudaError;
    const int row_blocks = grid_1d(N, kRowThreads / 32);
    row_dot_kernel<<<row_blocks, kRowThreads, 0, stream>>>(A, N, nullptr, nullptr, a1);
    if (!launched()) return kCudaError;
    row_dot_kernel<<<row_blocks, kRowThreads, 0, stream>>>(A, N, a1, a1, z);
    if (!launched()) return kCudaError;
    gemm_kernel<float, T><<<gemm_grid(N, D), kGemmThreads, 0, stream>>>(N, D, N, A, N, 1, regions, p.regions.row,
                                                                        p.regions.col, StoreEpilogue{y, D});
    if (!launched()) return kCudaError;
    gemm_kernel<float, float><<<gemm_grid(N, D), kGemmThreads, 0, stream>>>(
        N, D, N, A, N, 1, y, D, 1, PropagatedEpilogue<T>{y, D, z, out, p.out});
    return launched() ? kSuccess : kCudaError;
}

}  // namespace

int forward_cuda(DType dtype, const void* sigma, const void* phi, const void* regions, const void* valid, void* out,
                 const Problem& problem, void* workspace, size_t workspace_bytes, void* stream) {
    if (!valid_shape(problem.shape)) return kInvalidArgument;
    const int64_t N = problem.shape.N;
    if (N == 0 || problem.shape.D == 0) return kSuccess;
    if ((N + kTile - 1) / kTile > kMaxGridY) return kInvalidArgument;
    if (workspace == nullptr || workspace_bytes < cuda_workspace_bytes(N, problem.shape.D)) return kInvalidArgument;
    auto s = static_cast<cudaStream_t>(stream);
    switch (dtype) {
        case DType::kFloat32:
            return run<float>(sigma, phi, regions, valid, out, problem, workspace, s);
        case DType::kFloat16:
            return run<__half>(sigma, phi, regions, valid, out, problem, workspace, s);
    }
    return kUnsupportedDType;
}

}  // namespace relation_propagation
}  // namespace vidtrt
