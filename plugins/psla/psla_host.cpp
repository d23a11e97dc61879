// Host launcher of the PSLA kernel body: OpenMP over positions.
#include <omp.h>

#include "../common/vidtrt_host_half.h"
#include "psla_launch.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define VIDTRT_PSLA_X86_DISPATCH 1
#else
#define VIDTRT_PSLA_X86_DISPATCH 0
#endif

namespace vidtrt {
namespace psla {
namespace {

// Runs of kRun neighbouring positions per call (and per OpenMP chunk): they
// share most key and value cells in cache. (Accumulating one channel tile for
// the whole run before the next tile was measured slower, 1.8x, than whole
// positions in turn.)
constexpr int64_t kRun = 16;

template <typename T, int kCStride>
void positions_generic(const Args<T>& a, int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) psla_position<T, kCStride, 32>(a, p);  // 8 SSE registers of sums
}

#if VIDTRT_PSLA_X86_DISPATCH
// The same body compiled for AVX2 + FMA (+ F16C for the FP16 conversions):
// the dot products and the weighted sums are 8 lanes wide with fused
// multiply-adds instead of SSE2's 4. Picked at run time, so the library
// still runs on any x86-64.
template <typename T, int kCStride>
__attribute__((target("avx2,fma,f16c"))) void positions_avx2(const Args<T>& a, int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) psla_position<T, kCStride, 64>(a, p);  // 8 AVX registers of sums
}

bool cpu_has_avx2() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}
#endif

template <typename T>
int run(const void* query, const void* key, const void* value, void* out, const Problem& p, int num_threads,
        HostIsa isa) {
    Args<T> a{static_cast<const T*>(query), static_cast<const T*>(key), static_cast<const T*>(value),
              static_cast<T*>(out), p.query, p.key, p.value, p.out, p.shape};
    const int64_t positions = p.shape.N * p.shape.H * p.shape.W;
    // The inputs' channel strides decide the instantiation; the output's is read at run time.
    const bool unit = p.query.c == 1 && p.key.c == 1 && p.value.c == 1;
    const int threads = num_threads > 0 ? num_threads : omp_get_max_threads();
    using RangeFn = void (*)(const Args<T>&, int64_t, int64_t);
    RangeFn range = unit ? &positions_generic<T, kUnitChannelStride> : &positions_generic<T, kAnyChannelStride>;
#if VIDTRT_PSLA_X86_DISPATCH
    if (isa == HostIsa::kAuto && cpu_has_avx2()) {
        range = unit ? &positions_avx2<T, kUnitChannelStride> : &positions_avx2<T, kAnyChannelStride>;
    }
#else
    (void)isa;
#endif
    const int64_t runs = (positions + kRun - 1) / kRun;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t r = 0; r < runs; ++r) {
        const int64_t begin = r * kRun;
        range(a, begin, begin + kRun < positions ? begin + kRun : positions);
    }
    return kSuccess;
}

}  // namespace

int forward_host(DType dtype, const void* query, const void* key, const void* value, void* out,
                 const Problem& problem, int num_threads, HostIsa isa) {
    if (!valid_shape(problem.shape)) return kInvalidArgument;
    if (problem.shape.N * problem.shape.H * problem.shape.W == 0 || problem.shape.C == 0) return kSuccess;
    switch (dtype) {
        case DType::kFloat32:
            return run<float>(query, key, value, out, problem, num_threads, isa);
        case DType::kFloat16:
            return run<HostHalf>(query, key, value, out, problem, num_threads, isa);
    }
    return kUnsupportedDType;
}

}  // namespace psla
}  // namespace vidtrt
