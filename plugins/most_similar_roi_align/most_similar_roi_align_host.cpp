// Host launcher of the most-similar RoI align kernel body.
//
// 1. Both inputs are normalised once into FP32 scratch (support as panels of
//    16 cells, queries as [Q][C] rows), OpenMP over cells.
// 2. Work units of (support frame, block of kBlock queries), OpenMP over units.
//    A unit streams the frame's panels once; each panel is scored against the
//    block kGroup queries at a time (similarity_tile: a 6×16 register tile,
//    GEMM-style), and every query's running top-k takes the panel's 16 cells.
//    The block's query rows (96 × C floats) stay in L2 while panels stream.
// 3. Softmax and weighted sum per (frame, query) from the un-normalised input.
// The similarity tile is also compiled for AVX2+FMA and chosen at run time:
// the library is built for the baseline x86-64 ISA (SSE2, 4 lanes, no FMA),
// where the tile runs at a third of the speed.
#include <omp.h>

#include <memory>

#include "../common/vidtrt_host_half.h"
#include "most_similar_roi_align_launch.h"

namespace vidtrt {
namespace most_similar_roi_align {
namespace {

// 6 queries × 16 cells = 12 AVX accumulators, plus 2 panel loads and a
// broadcast: the 16 AVX registers without spilling.
constexpr int kGroup = 6;
constexpr int kBlock = 16 * kGroup;

template <typename T, int kCStride>
VIDTRT_FORCEINLINE void process_unit_impl(const Args<T>& a, int64_t t, int64_t q_begin, int64_t q_end) {
    const Shape& s = a.shape;
    const int k = s.top_k;
    const int64_t cells = num_cells(s);
    const int64_t panels = num_panels(s);
    const int64_t n = q_end - q_begin;
    TopK top[kBlock];
    for (int64_t i = 0; i < n; ++i) top[i].reset();
    for (int64_t panel = 0; panel < panels; ++panel) {
        const int64_t left = cells - panel * kPanel;
        const int lanes = static_cast<int>(left < kPanel ? left : kPanel);
        int64_t i = 0;
        for (; i + kGroup <= n; i += kGroup) {
            float sim[kGroup][kPanel];
            similarity_tile<kGroup, kUnitChannelStride>(a.scratch, s, t, q_begin + i, panel, sim);
            for (int g = 0; g < kGroup; ++g) push_panel(top[i + g], sim[g], panel, lanes, k);
        }
        for (; i < n; ++i) {
            float sim[1][kPanel];
            similarity_tile<1, kUnitChannelStride>(a.scratch, s, t, q_begin + i, panel, sim);
            push_panel(top[i], sim[0], panel, lanes, k);
        }
    }
    for (int64_t i = 0; i < n; ++i) write_output<T, kCStride>(a, t, q_begin + i, top[i]);
}

template <typename T, int kCStride>
void process_unit_baseline(const Args<T>& a, int64_t t, int64_t q_begin, int64_t q_end) {
    process_unit_impl<T, kCStride>(a, t, q_begin, q_end);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define VIDTRT_MSRA_AVX2 1
// The same code: the always-inline body is compiled here for AVX2 + FMA.
template <typename T, int kCStride>
__attribute__((target("avx2,fma"))) void process_unit_avx2(const Args<T>& a, int64_t t, int64_t q_begin,
                                                            int64_t q_end) {
    process_unit_impl<T, kCStride>(a, t, q_begin, q_end);
}

bool cpu_has_avx2_fma() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#else
#define VIDTRT_MSRA_AVX2 0
#endif

template <typename T, int kCStride>
void run_layout(const Args<T>& a, int threads) {
    const Shape& s = a.shape;
    const int64_t queries = num_queries(s);
    const int64_t support_items = s.T * num_panels(s) * kPanel;
    const int64_t blocks = (queries + kBlock - 1) / kBlock;
    const int64_t units = s.T * blocks;
    using Unit = void (*)(const Args<T>&, int64_t, int64_t, int64_t);
    Unit process = &process_unit_baseline<T, kCStride>;
#if VIDTRT_MSRA_AVX2
    if (cpu_has_avx2_fma()) process = &process_unit_avx2<T, kCStride>;
#endif
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(static) nowait
        for (int64_t i = 0; i < support_items; ++i) normalize_support_item<T, kCStride>(a, i);
#pragma omp for schedule(static)
        for (int64_t q = 0; q < queries; ++q) normalize_query_item<T, kCStride>(a, q);
        // Units of one frame are handed out together, so both threads read the
        // same frame's panels from the shared cache.
#pragma omp for schedule(dynamic, 1)
        for (int64_t u = 0; u < units; ++u) {
            const int64_t q_begin = (u % blocks) * kBlock;
            const int64_t q_end = q_begin + kBlock < queries ? q_begin + kBlock : queries;
            process(a, u / blocks, q_begin, q_end);
        }
    }
}

template <typename T>
int run(const void* roi, const void* support, void* out, const Problem& p, int num_threads) {
    const Shape& s = p.shape;
    // Uninitialised on purpose: the normalisation pass writes every element
    // (padding lanes included).
    const int64_t support_elements = support_scratch_elements(s);
    std::unique_ptr<float[]> scratch(new float[support_elements + query_scratch_elements(s)]);
    Args<T> a{static_cast<const T*>(roi),
              static_cast<const T*>(support),
              static_cast<T*>(out),
              p.roi,
              p.support,
              p.out,
              Scratch{scratch.get(), scratch.get() + support_elements, s.C, 1},
              s};
    const int threads = num_threads > 0 ? num_threads : omp_get_max_threads();
    if (p.roi.c == 1 && p.support.c == 1 && p.out.c == 1) {
        run_layout<T, kUnitChannelStride>(a, threads);
    } else {
        run_layout<T, kAnyChannelStride>(a, threads);
    }
    return kSuccess;
}

}  // namespace

int forward_host(DType dtype, const void* roi, const void* support, void* out, const Problem& problem,
                 int num_threads) {
    if (!valid_shape(problem.shape)) return kInvalidArgument;
    if (problem.shape.T * num_queries(problem.shape) == 0 || problem.shape.C == 0) return kSuccess;
    switch (dtype) {
        case DType::kFloat32:
            return run<float>(roi, support, out, problem, num_threads);
        case DType::kFloat16:
            return run<HostHalf>(roi, support, out, problem, num_threads);
    }
    return kUnsupportedDType;
}

}  // namespace most_similar_roi_align
}  // namespace vidtrt
