// Host launcher of the PSLA kernel body: OpenMP over positions.
#include <omp.h>

#include <memory>

#include "../common/vidtrt_host_half.h"
#include "../common/vidtrt_host_transpose.h"
#include "psla_launch.h"

namespace vidtrt {
namespace psla {
namespace {

// Runs of kRun neighbouring positions per call (and per OpenMP chunk): they
// share most key and value cells in cache. (Accumulating one channel tile for
// the whole run before the next tile was measured slower, 1.8x, than whole
// positions in turn.)
constexpr int64_t kRun = 16;

// Planar output (NCHW-like: x unit-stride, rows W apart, channel planes
// apart), for callers that hand the body channels-last inputs but want an
// NCHW result (ONNX Runtime). Storing each position's channels straight into
// the planes scatters one element per channel, planes 4·H·W bytes apart (a
// whole pass slower, measured); transposing a separate channels-last result
// afterwards moves the whole output twice more. Instead each chunk of
// kStagedRun positions is summed into `stage` ([chunk, C], per thread, in
// L2) and written out a block of channels at a time, each plane's segment
// contiguous. What costs is the store's writes, spread over many planes:
// each block of channels starts new streams the hardware prefetcher has not
// seen, so store_block_avx2 prefetches the next block for writing (at paper
// scale the store pass took 4-5 ms of PSLA's ~15 without that, in chunks of
// 16 or 128 positions alike, and about 2 ms with it; 128 positions make
// each plane's segment 512 bytes long instead of 64).
constexpr int64_t kStagedRun = 128;

// Rows of the stage are C + kStagePad elements apart, so that a column of it
// (one channel over the chunk's positions) does not fall into a single L1
// set when C·sizeof(T) is a multiple of 4 KiB (C = 1024 at paper scale).
constexpr int64_t kStagePad = 16;

template <typename T>
bool planar_output(const Args<T>& a) {
    return a.so.c != 1 && a.so.x == 1 && a.so.y == a.shape.W;
}

// The staged rows [begin, end) of positions to out's planes, split where the
// run crosses from one image of the batch to the next.
template <typename T, typename StoreBlock>
VIDTRT_FORCEINLINE void store_planes(const Args<T>& a, const T* stage, int64_t begin, int64_t end,
                                     StoreBlock store_block) {
    const int64_t plane = a.shape.H * a.shape.W;
    for (int64_t s0 = begin; s0 < end;) {
        const int64_t n = s0 / plane;
        const int64_t s1 = end < (n + 1) * plane ? end : (n + 1) * plane;
        store_block(stage + (s0 - begin) * (a.shape.C + kStagePad), a.shape.C + kStagePad,
                    a.out + n * a.so.n + (s0 - n * plane), a.so.c, s1 - s0, a.shape.C);
        s0 = s1;
    }
}

// Positions [begin, end) either straight to out (stage == nullptr) or through
// `stage`, then out's planes.
template <typename T, int kCStride, int kTile, typename StoreBlock>
VIDTRT_FORCEINLINE void positions_body(const Args<T>& a, int64_t begin, int64_t end, T* stage,
                                       StoreBlock store_block) {
    float weight[kMaxCells];
    int64_t value_offset[kMaxCells];
    const int64_t out_channel_stride = stage == nullptr ? a.so.c : 1;
    for (int64_t p = begin; p < end; ++p) {
        const int count = psla_weights<T, kCStride>(a, p, weight, value_offset);
        T* o = stage == nullptr ? psla_output(a, p) : stage + (p - begin) * (a.shape.C + kStagePad);
        for (int64_t c0 = 0; c0 < a.shape.C; c0 += kTile) {
            psla_accumulate<T, kCStride, kTile>(a, c0, weight, value_offset, count, o, out_channel_stride);
        }
    }
    if (stage != nullptr) store_planes(a, stage, begin, end, store_block);
}

template <typename T, int kCStride>
void positions_generic(const Args<T>& a, int64_t begin, int64_t end, T* stage) {
    positions_body<T, kCStride, 32>(a, begin, end, stage, transpose_block<T>);  // 8 SSE registers of sums
}

#if VIDTRT_HOST_X86_DISPATCH
// FP32 blocks of the staged output as 8x8 register transposes; the rest
// (edges, FP16) element by element. (prfchw: PREFETCHW, a hint that older
// CPUs execute as a no-op.)
template <typename T>
__attribute__((target("avx2,prfchw"))) void store_block_avx2(const T* s, int64_t src_stride, T* d, int64_t dst_stride,
                                                      int64_t rows, int64_t cols) {
    int64_t c0 = 0;
    if constexpr (sizeof(T) == 4) {
        // Channel blocks outer, positions inner: each plane's segment is
        // written in one go, not in 32-byte pieces a whole pass apart.
        const int64_t whole_rows = rows - rows % 8;
        for (; c0 + 8 <= cols; c0 += 8) {
            // The next block's plane segments, prefetched for writing: each
            // block starts 8 new store streams that the hardware prefetcher
            // has not seen (the store pass took 2-3x longer without it).
            if (c0 + 16 <= cols) {
                for (int64_t c = c0 + 8; c < c0 + 16; ++c)
                    for (int64_t r = 0; r < rows; r += 16) __builtin_prefetch(d + c * dst_stride + r, 1, 3);
            }
            for (int64_t r0 = 0; r0 < whole_rows; r0 += 8) {
                transpose_8x8(reinterpret_cast<const float*>(s + r0 * src_stride + c0), src_stride,
                              reinterpret_cast<float*>(d + c0 * dst_stride + r0), dst_stride);
            }
            transpose_block(s + whole_rows * src_stride + c0, src_stride, d + c0 * dst_stride + whole_rows,
                            dst_stride, rows - whole_rows, 8);
        }
    }
    transpose_block(s + c0, src_stride, d + c0 * dst_stride, dst_stride, rows, cols - c0);
}

// The same body compiled for AVX2 + FMA (+ F16C for the FP16 conversions):
// the dot products and the weighted sums are 8 lanes wide with fused
// multiply-adds instead of SSE2's 4. Picked at run time, so the library
// still runs on any x86-64.
template <typename T, int kCStride>
__attribute__((target("avx2,fma,f16c"))) void positions_avx2(const Args<T>& a, int64_t begin, int64_t end,
                                                               T* stage) {
    positions_body<T, kCStride, 64>(a, begin, end, stage, store_block_avx2<T>);  // 8 AVX registers of sums
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
    using RangeFn = void (*)(const Args<T>&, int64_t, int64_t, T*);
    RangeFn range = unit ? &positions_generic<T, kUnitChannelStride> : &positions_generic<T, kAnyChannelStride>;
#if VIDTRT_HOST_X86_DISPATCH
    if (isa == HostIsa::kAuto && cpu_has_avx2()) {
        range = unit ? &positions_avx2<T, kUnitChannelStride> : &positions_avx2<T, kAnyChannelStride>;
    }
#else
    (void)isa;
#endif
    const bool staged = planar_output(a);
    const int64_t run_length = staged ? kStagedRun : kRun;
    const int64_t runs = (positions + run_length - 1) / run_length;
#pragma omp parallel num_threads(threads)
    {
        std::unique_ptr<T[]> stage(staged ? new T[kStagedRun * (p.shape.C + kStagePad)] : nullptr);
#pragma omp for schedule(static)
        for (int64_t r = 0; r < runs; ++r) {
            const int64_t begin = r * run_length;
            range(a, begin, begin + run_length < positions ? begin + run_length : positions, stage.get());
        }
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
