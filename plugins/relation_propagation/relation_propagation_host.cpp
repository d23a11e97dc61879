// Host launcher of relation propagation: two cache-blocked passes over blocks
// of kRowBlock rows (one OpenMP work item each), built from the shared
// register tile mma_tile and epilogues in relation_propagation_kernel.h.
//
//   stage 0  per row: masked inverse norms of sigma and phi; phi transposed
//            into kNR-column FP32 panels; regions in FP32 when they are not
//            already FP32 rows a register tile can read in place
//   pass 1   per row block I, per column tile J: A_IJ from sigma_I and the
//            phi panels (affinity epilogue), then Y_I += A_IJ · R_J and
//            a_I += A_IJ · 1
//   pass 2   the same A_IJ again, Z_I = Y_I + Σ_J A_IJ · Y_J and
//            z_I = a_I + Σ_J A_IJ · a_J, then out_I = Z_I / z_I
//
// A never exists beyond one kRowBlock × kColBlock tile per thread (recomputing
// it in pass 2 costs 2·N²·d multiply-adds, against the N² floats a stored A
// would take), and A·A is never formed (see the kernel header). Every row's
// arithmetic is the same whatever the thread count, so results do not depend
// on it.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../common/vidtrt_host_half.h"
#include "relation_propagation_launch.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define VIDTRT_RP_X86_DISPATCH 1
#else
#define VIDTRT_RP_X86_DISPATCH 0
#endif

namespace vidtrt {
namespace relation_propagation {
namespace {

// 6×16 accumulators are 12 AVX registers, leaving room for the two B vectors
// and a broadcast; on SSE2 the same tile is 24 half-width vectors and spills
// a little, which the portable build accepts.
constexpr int kMR = 6;
constexpr int kNR = 16;
constexpr int64_t kRowBlock = 48;  // multiple of kMR; Z_I is kRowBlock × D floats (192 KB at D = 1024, in L2)
constexpr int64_t kColBlock = 64;  // multiple of kNR; the A tile (12 KB) and one B panel (4 KB) stay in L1
static_assert(kRowBlock % kMR == 0 && kColBlock % kNR == 0, "blocks must hold whole register tiles");

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Read-only during a pass; built by stage 0 and pass 1.
struct Shared {
    int64_t N, d, D;
    int64_t Np;  // N rounded up to kNR: the padded length of every per-row array
    int64_t Dp;  // row length of every FP32 [·, D] buffer (D, or D rounded up to kNR when packed)
    const float* inv_sigma;   // [Np], 0 for invalid or padded rows
    const float* inv_phi;     // [Np]
    const float* phi_panels;  // [Np / kNR][d][kNR]: phi^T in panels of kNR columns, zero padded
    const float* rhs;         // pass 1's right-hand side: regions as FP32 rows of ldr floats
    int64_t ldr;
    float* y;   // [N][Dp]  Y = A·R
    float* a1;  // [Np]     A·1, zero padded
};

template <typename T>
struct Io {
    const T* sigma;
    Strides2 ss;
    T* out;
    Strides2 so;
};

// One thread's buffers (kRowBlock rows of everything).
struct Local {
    float* sigma;   // [kRowBlock][d] this block's sigma rows in FP32, zero past N
    float* inv;     // [kRowBlock]
    float* a;       // [kRowBlock][kColBlock] one tile of A
    float* acc;     // [kRowBlock][Dp] Y_I (pass 1) or Z_I (pass 2)
    float* rowsum;  // [kRowBlock] a_I (pass 1) or z_I (pass 2)

    static int64_t floats(int64_t d, int64_t Dp) {
        return kRowBlock * d + kRowBlock + kRowBlock * kColBlock + kRowBlock * Dp + kRowBlock;
    }
    Local(float* base, int64_t d, int64_t Dp)
        : sigma(base),
          inv(sigma + kRowBlock * d),
          a(inv + kRowBlock),
          acc(a + kRowBlock * kColBlock),
          rowsum(acc + kRowBlock * Dp) {}
};

// Pass kPass (1 or 2) over the rows [block·kRowBlock, +kRowBlock).
template <typename T, int kPass>
VIDTRT_FORCEINLINE void row_block_body(const Shared& sh, const Io<T>& io, int64_t block, Local& L) {
    using Num = NumTraits<T>;
    const int64_t N = sh.N, d = sh.d, Dp = sh.Dp;
    const int64_t i0 = block * kRowBlock;
    const int64_t m = std::min(kRowBlock, N - i0);

    // Padded rows get zero inverse norms, so their A rows are 0 and nothing
    // below needs a bound on r.
    for (int64_t r = 0; r < kRowBlock; ++r) {
        float* s = L.sigma + r * d;
        if (r < m) {
            const T* src = io.sigma + (i0 + r) * io.ss.row;
            for (int64_t k = 0; k < d; ++k) s[k] = Num::to_float(src[k * io.ss.col]);
            L.inv[r] = sh.inv_sigma[i0 + r];
        } else {
            std::fill(s, s + d, 0.f);
            L.inv[r] = 0.f;
        }
        float* acc = L.acc + r * Dp;
        if (kPass == 2 && r < m) {
            std::memcpy(acc, sh.y + (i0 + r) * Dp, sizeof(float) * Dp);  // the "+ A·R" term
            L.rowsum[r] = sh.a1[i0 + r];                                 // the "+ A·1" term
        } else {
            std::fill(acc, acc + Dp, 0.f);
            L.rowsum[r] = 0.f;
        }
    }

    const float* rhs = kPass == 1 ? sh.rhs : sh.y;
    const int64_t ldb = kPass == 1 ? sh.ldr : Dp;
    for (int64_t j0 = 0; j0 < N; j0 += kColBlock) {
        const int64_t nb = std::min(kColBlock, N - j0);
        const int64_t panels = (nb + kNR - 1) / kNR;

        // A_IJ. Columns past N read zero panels and zero inverse norms, so
        // they come out 0 and add nothing to the row sums.
        for (int64_t p = 0; p < panels; ++p) {
            const int64_t jp = j0 + p * kNR;
            const float* panel = sh.phi_panels + (jp / kNR) * d * kNR;
            for (int64_t r0 = 0; r0 < kRowBlock; r0 += kMR) {
                float dots[kMR][kNR] = {};
                mma_tile<kMR, kNR>(dots, L.sigma + r0 * d, d, 1, panel, kNR, d);
                for (int r = 0; r < kMR; ++r) {
                    float* a_row = L.a + (r0 + r) * kColBlock + p * kNR;
                    float sum = 0.f;
                    for (int c = 0; c < kNR; ++c) {
                        const float v = affinity(dots[r][c], L.inv[r0 + r], sh.inv_phi[jp + c]);
                        a_row[c] = v;
                        sum += kPass == 1 ? v : v * sh.a1[jp + c];
                    }
                    L.rowsum[r0 + r] += sum;
                }
            }
        }

        // acc_I += A_IJ · rhs_J. The kNR-wide rhs panel (nb × 64 bytes) is
        // reused by every row tile before moving right.
        const float* rhs_j = rhs + j0 * ldb;
        for (int64_t c0 = 0; c0 < Dp; c0 += kNR) {
            for (int64_t r0 = 0; r0 < kRowBlock; r0 += kMR) {
                float acc[kMR][kNR];
                VIDTRT_RP_UNROLL
                for (int r = 0; r < kMR; ++r) {
                    VIDTRT_RP_UNROLL
                    for (int c = 0; c < kNR; ++c) acc[r][c] = L.acc[(r0 + r) * Dp + c0 + c];
                }
                mma_tile<kMR, kNR>(acc, L.a + r0 * kColBlock, kColBlock, 1, rhs_j + c0, ldb, nb);
                VIDTRT_RP_UNROLL
                for (int r = 0; r < kMR; ++r) {
                    VIDTRT_RP_UNROLL
                    for (int c = 0; c < kNR; ++c) L.acc[(r0 + r) * Dp + c0 + c] = acc[r][c];
                }
            }
        }
    }

    if (kPass == 1) {
        for (int64_t r = 0; r < m; ++r) {
            std::memcpy(sh.y + (i0 + r) * Dp, L.acc + r * Dp, sizeof(float) * Dp);
            sh.a1[i0 + r] = L.rowsum[r];
        }
    } else {
        for (int64_t r = 0; r < m; ++r) {
            T* o = io.out + (i0 + r) * io.so.row;
            const float* z = L.acc + r * Dp;
            const float den = L.rowsum[r];
            for (int64_t c = 0; c < sh.D; ++c) o[c * io.so.col] = Num::from_float(propagated(z[c], den));
        }
    }
}

template <typename T, int kPass>
void row_block_generic(const Shared& sh, const Io<T>& io, int64_t block, Local& L) {
    row_block_body<T, kPass>(sh, io, block, L);
}

#if VIDTRT_RP_X86_DISPATCH
// The same body compiled for AVX2 + FMA (+ F16C for the FP16 conversions);
// picked at run time so the library still runs on any x86-64.
template <typename T, int kPass>
__attribute__((target("avx2,fma,f16c"))) void row_block_avx2(const Shared& sh, const Io<T>& io, int64_t block,
                                                             Local& L) {
    row_block_body<T, kPass>(sh, io, block, L);
}

bool cpu_has_avx2() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}
#endif

template <typename T>
int run(const void* sigma_v, const void* phi_v, const void* regions_v, const void* valid_v, void* out_v,
        const Problem& p, int num_threads, HostIsa isa) {
    using Num = NumTraits<T>;
    const T* sigma = static_cast<const T*>(sigma_v);
    const T* phi = static_cast<const T*>(phi_v);
    const T* regions = static_cast<const T*>(regions_v);
    const T* valid = static_cast<const T*>(valid_v);
    const int64_t N = p.shape.N, d = p.shape.d, D = p.shape.D;
    const int64_t Np = round_up(N, kNR);

    // FP32 rows with unit column stride and a width the register tile can
    // read without running past the row are used in place; anything else
    // is converted once.
    const bool rhs_in_place =
        std::is_same<T, float>::value && p.regions.col == 1 && D % kNR == 0 && p.regions.row >= D;
    const int64_t Dp = rhs_in_place ? D : round_up(D, kNR);

    std::vector<float> inv_sigma(Np), inv_phi(Np), a1(Np, 0.f);
    std::vector<float> phi_panels(static_cast<size_t>(Np * d));
    std::vector<float> packed_rhs(rhs_in_place ? 0 : static_cast<size_t>(N * Dp));
    std::vector<float> y(static_cast<size_t>(N * Dp));

    using BlockFn = void (*)(const Shared&, const Io<T>&, int64_t, Local&);
    BlockFn pass1 = &row_block_generic<T, 1>;
    BlockFn pass2 = &row_block_generic<T, 2>;
#if VIDTRT_RP_X86_DISPATCH
    if (isa == HostIsa::kAuto && cpu_has_avx2()) {
        pass1 = &row_block_avx2<T, 1>;
        pass2 = &row_block_avx2<T, 2>;
    }
#else
    (void)isa;
#endif

    Shared sh{N,
              d,
              D,
              Np,
              Dp,
              inv_sigma.data(),
              inv_phi.data(),
              phi_panels.data(),
              rhs_in_place ? reinterpret_cast<const float*>(regions) : packed_rhs.data(),
              rhs_in_place ? p.regions.row : Dp,
              y.data(),
              a1.data()};
    const Io<T> io{sigma, p.sigma, static_cast<T*>(out_v), p.out};

    const int threads = num_threads > 0 ? num_threads : omp_get_max_threads();
    const int64_t blocks = (N + kRowBlock - 1) / kRowBlock;
    std::vector<float> local_buffers(static_cast<size_t>(threads * Local::floats(d, Dp)));

#pragma omp parallel num_threads(threads)
    {
        Local local(local_buffers.data() + omp_get_thread_num() * Local::floats(d, Dp), d, Dp);

        // Stage 0.
#pragma omp for schedule(static)
        for (int64_t i = 0; i < Np; ++i) {
            float* panel = phi_panels.data() + (i / kNR) * d * kNR + i % kNR;
            if (i >= N) {
                inv_sigma[i] = inv_phi[i] = 0.f;
                for (int64_t k = 0; k < d; ++k) panel[k * kNR] = 0.f;
                continue;
            }
            const bool ok = is_valid(valid[i * p.valid]);
            const T* s = sigma + i * p.sigma.row;
            const T* f = phi + i * p.phi.row;
            inv_sigma[i] = inverse_norm(s, p.sigma.col, d, ok);
            inv_phi[i] = inverse_norm(f, p.phi.col, d, ok);
            for (int64_t k = 0; k < d; ++k) panel[k * kNR] = Num::to_float(f[k * p.phi.col]);
            if (!rhs_in_place) {
                float* dst = packed_rhs.data() + i * Dp;
                const T* src = regions + i * p.regions.row;
                for (int64_t c = 0; c < D; ++c) dst[c] = Num::to_float(src[c * p.regions.col]);
                std::fill(dst + D, dst + Dp, 0.f);
            }
        }

        // Pass 2 reads every row of Y and a, so it waits for all of pass 1
        // (the implicit barrier at the end of each omp for).
#pragma omp for schedule(dynamic, 1)
        for (int64_t b = 0; b < blocks; ++b) pass1(sh, io, b, local);
#pragma omp for schedule(dynamic, 1)
        for (int64_t b = 0; b < blocks; ++b) pass2(sh, io, b, local);
    }
    return kSuccess;
}

}  // namespace

int forward_host(DType dtype, const void* sigma, const void* phi, const void* regions, const void* valid, void* out,
                 const Problem& problem, int num_threads, HostIsa isa) {
    if (!valid_shape(problem.shape)) return kInvalidArgument;
    if (problem.shape.N == 0 || problem.shape.D == 0) return kSuccess;
    switch (dtype) {
        case DType::kFloat32:
            return run<float>(sigma, phi, regions, valid, out, problem, num_threads, isa);
        case DType::kFloat16:
            return run<HostHalf>(sigma, phi, regions, valid, out, problem, num_threads, isa);
    }
    return kUnsupportedDType;
}

}  // namespace relation_propagation
}  // namespace vidtrt
