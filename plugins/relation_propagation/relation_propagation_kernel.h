// Relation propagation (MFSA, Ye et al., §2.2, Eq. 1-3): the routines shared
// by the host launcher (relation_propagation_host.cpp) and the CUDA launcher
// (relation_propagation_cuda.cu).
//
// sigma, phi [N, d] (σ(R), φ(R)), regions [N, D], valid [N] (nonzero = valid):
//   A_ij = max(0, cos(sigma_i, phi_j)) if valid_i and valid_j, else 0      (Eq. 1)
//   Â    = rownorm(A·A + A), a row summing to 0 stays 0                     (Eq. 2)
//   out  = Â·regions                                                        (Eq. 3)
// cos is the dot product of L2-normalised vectors; a zero vector normalises
// to zero, so its cosines are 0 (and so are they when its squared norm
// overflows or underflows FP32).
//
// Why no kernel ever forms A·A (an N³ product): with B = A·A + A and 1 the
// all-ones vector, row i of the output is
//   out_i = Σ_j B_ij R_j / Σ_j B_ij
//         = (A·(A·R) + A·R)_i / (A·(A·1) + A·1)_i        (associativity)
// so with Y = A·R (N×D) and a = A·1 (N):
//   out_i = (A·Y + Y)_i / (A·a + a)_i
// two N²·D products instead of N³ + N²·D. The denominator is 0 exactly when
// row i of A is 0 (A ≥ 0 elementwise), and then the numerator is 0 too.
//
// Shared here: the per-row inverse norm with the mask folded in (masking the
// normalised vectors zeroes exactly the rows and columns of A that Eq. 1
// excludes), the affinity epilogue, the final division, and the register
// tile both GEMM-like steps are built from (the host compiles an FP32
// overload of it spelled with vector extensions, below).
//
// What differs: the host keeps A out of memory (it recomputes each A tile
// from sigma and phi in both passes, ~11% more arithmetic at d = D/4, and
// holds O(N·D) scratch), while the device writes A once to the plugin's
// workspace (N² FP32), because a CUDA block cannot hold a whole D-wide row
// of accumulators and recomputing A per 64-column tile would cost d/64 times
// the product itself. All arithmetic is FP32 whatever the storage type.
#pragma once

#include "../common/vidtrt_kernel_common.h"

#if defined(__CUDACC__)
#define VIDTRT_RP_UNROLL _Pragma("unroll")
#elif defined(__clang__)
#define VIDTRT_RP_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define VIDTRT_RP_UNROLL _Pragma("GCC unroll 64")
#else
#define VIDTRT_RP_UNROLL
#endif

namespace vidtrt {
namespace relation_propagation {

// Element strides of a 2-D tensor.
struct Strides2 {
    int64_t row, col;
};

struct Shape {
    int64_t N;  // regions (K frames × M proposals)
    int64_t d;  // channels of sigma and phi
    int64_t D;  // channels of regions and the output
};

inline bool valid_shape(const Shape& s) { return s.N >= 0 && s.d >= 1 && s.D >= 0; }

// 1/‖x‖ for a valid row with a positive, finite squared norm; 0 otherwise.
// Folding the mask into the inverse norm turns invalid rows into zero
// vectors, whose cosines (and hence affinities) are 0.
template <typename T>
VIDTRT_HD VIDTRT_FORCEINLINE float inverse_norm(const T* row, int64_t col_stride, int64_t d, bool valid) {
    using Num = NumTraits<T>;
    if (!valid) return 0.f;
    float sum = 0.f;
    for (int64_t k = 0; k < d; ++k) {
        const float v = Num::to_float(row[k * col_stride]);
        sum += v * v;
    }
    // !(sum <= max) also sends NaN to 0.
    if (!(sum > 0.f) || !(sum <= 3.4028234e38f)) return 0.f;
    return 1.f / sqrtf(sum);
}

template <typename T>
VIDTRT_HD VIDTRT_FORCEINLINE bool is_valid(T flag) {
    return NumTraits<T>::to_float(flag) != 0.f;
}

// A_ij from the raw dot product and the two inverse norms (Eq. 1).
VIDTRT_HD VIDTRT_FORCEINLINE float affinity(float dot, float inv_i, float inv_j) {
    const float c = dot * inv_i * inv_j;
    return c > 0.f ? c : 0.f;
}

// out_ij from (A·Y + Y)_ij and (A·a + a)_i; a zero row of Â stays zero.
VIDTRT_HD VIDTRT_FORCEINLINE float propagated(float numerator, float denominator) {
    return denominator > 0.f ? numerator / denominator : 0.f;
}

// The register tile of every product here:
//   acc[r][c] += Σ_{k < kcount} a[r·a_row + k·a_k] · b[k·b_k + c]
// b is unit-stride along c, so on the host the c loop is one or two vector
// registers and the a values are broadcasts; on the device a and b point into
// shared memory and each thread owns one MR×NR tile.
template <int MR, int NR, typename TA, typename TB>
VIDTRT_HD VIDTRT_FORCEINLINE void mma_tile(float (&acc)[MR][NR], const TA* a, int64_t a_row, int64_t a_k, const TB* b,
                                           int64_t b_k, int64_t kcount) {
    for (int64_t k = 0; k < kcount; ++k) {
        const TB* bk = b + k * b_k;
        const TA* ak = a + k * a_k;
        VIDTRT_RP_UNROLL
        for (int r = 0; r < MR; ++r) {
            const float av = NumTraits<TA>::to_float(ak[r * a_row]);
            VIDTRT_RP_UNROLL
            for (int c = 0; c < NR; ++c) acc[r][c] += av * NumTraits<TB>::to_float(bk[c]);
        }
    }
}

#if !defined(__CUDACC__) && (defined(__GNUC__) || defined(__clang__))
// Host build of the same tile for FP32 operands (the host launcher converts
// everything it multiplies to FP32 first), same arithmetic in the same order
// per element. GCC's vectoriser does not handle the generic version reliably:
// depending on the surrounding code it vectorises the k loop with gathers or
// spills the accumulators, at a quarter of the speed. Spelling the c
// direction as 8-float vectors (GCC/Clang vector extensions: AVX registers in
// the AVX2 build, pairs of SSE or NEON registers otherwise) keeps all MR×NR
// accumulators in registers. Partial ordering picks this overload over the
// template above for float/float.
namespace host_simd {
typedef float V8 __attribute__((vector_size(32), aligned(4), may_alias));
}  // namespace host_simd

template <int MR, int NR>
VIDTRT_FORCEINLINE void mma_tile(float (&acc)[MR][NR], const float* a, int64_t a_row, int64_t a_k, const float* b,
                                 int64_t b_k, int64_t kcount) {
    using host_simd::V8;
    static_assert(NR % 8 == 0, "the host tile is whole 8-float vectors wide");
    constexpr int NV = NR / 8;
    V8 v[MR][NV];
    VIDTRT_RP_UNROLL
    for (int r = 0; r < MR; ++r) {
        VIDTRT_RP_UNROLL
        for (int q = 0; q < NV; ++q) v[r][q] = *reinterpret_cast<const V8*>(&acc[r][q * 8]);
    }
    for (int64_t k = 0; k < kcount; ++k) {
        const float* bk = b + k * b_k;
        const float* ak = a + k * a_k;
        V8 bv[NV];
        VIDTRT_RP_UNROLL
        for (int q = 0; q < NV; ++q) bv[q] = *reinterpret_cast<const V8*>(bk + q * 8);
        VIDTRT_RP_UNROLL
        for (int r = 0; r < MR; ++r) {
            const float av = ak[r * a_row];
            VIDTRT_RP_UNROLL
            for (int q = 0; q < NV; ++q) v[r][q] += av * bv[q];
        }
    }
    VIDTRT_RP_UNROLL
    for (int r = 0; r < MR; ++r) {
        VIDTRT_RP_UNROLL
        for (int q = 0; q < NV; ++q) *reinterpret_cast<V8*>(&acc[r][q * 8]) = v[r][q];
    }
}
#endif

}  // namespace relation_propagation
}  // namespace vidtrt
