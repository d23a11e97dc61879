// Host launcher of the PSLA kernel body: OpenMP over positions.
#include <omp.h>

#include <memory>
#include <vector>

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

// ------------------------------------------- NCHW rows read in place (FP32, AVX2)
//
// The schedule above hands the body one position at a time, each reading its
// cells' channel vectors; on NCHW tensors those are a plane apart per element,
// so callers copy the inputs channels-last first, and at paper scale those
// copies took 6-7 ms of PSLA's 16.7 (benchmarks/results/ops_paper_scale_cpu.json,
// 2026-12-03). This schedule reads NCHW rows where they are instead, the way a
// CUDA warp reads 32 neighbouring positions: each AVX2 lane is one position
// (column x) of 8 neighbours, and Eq. 1 and Eq. 5 run over whole row
// segments per channel. Eq. 4 is the body's own softmax_in_place, and the
// cells, their order and the inside test are the body's. (A prototype of this
// plan ran at 5.5 ms on the paper's problem against 16.7 ms as then called.)
//
// Work items are tiles of kBlockRows rows x up to 64 columns (8 chunks of 8)
// of one image. Per tile:
// 1. Eq. 1: the logits of every cell and position of the tile, kept in
//    `logits` ([cells][kBlockRows][64], ~21 KB for d = 4). Channels go in
//    blocks of kLogitChannels, so that the block's query rows stay in L1
//    while every cell's key rows pass by; per (cell, row) 8 accumulators over
//    the block, added to `logits` once per block.
// 2. Eq. 4 per position, over its inside cells; the other cells' weights and
//    those of columns past the row's end become 0.
// 3. Eq. 5 two channels at a time: per output row, 8 accumulators per channel
//    over the cells, reading the cells' value rows in place (the rows a tile
//    needs, (kBlockRows + 2d) per channel, stay in L1 beside the weights).
// A chunk of 8 lanes reads columns x0 + 8j + dx .. + 7; lanes outside the row
// read nothing (masked loads) and carry weight 0, so no padded copy is made.
namespace nchw_rows {

constexpr int kBlockRows = 2;
constexpr int kMaxChunks = 8;
constexpr int64_t kTileColumns = 8 * kMaxChunks;
constexpr int64_t kLogitChannels = 16;

#define VIDTRT_AVX2_INLINE __attribute__((target("avx2,fma"), always_inline)) inline

// Which chunks may reach past a row's ends: with tiles starting at multiples
// of 64 and |dx| <= 8, chunk 0 of the first tile reads left of column 0, and
// only the last two chunks of the last tile can read past column W - 1 (or
// hold columns past it). Every other chunk is whole and read unmasked.
template <int kChunks>
constexpr bool chunk_may_be_partial(int j) {
    return j == 0 || j >= kChunks - 2;
}

template <int kChunks>
VIDTRT_AVX2_INLINE __m256 load_chunk(const float* row, int j, const __m256i* masks) {
    return chunk_may_be_partial<kChunks>(j) ? _mm256_maskload_ps(row + 8 * j, masks[j]) : _mm256_loadu_ps(row + 8 * j);
}

struct Tile {
    int64_t n, y0, y1, x0;
};

struct alignas(32) ChunkMask {
    __m256i lanes;
};
static_assert(sizeof(ChunkMask) == sizeof(__m256i) && alignof(ChunkMask) == 32, "ChunkMask arrays are __m256i arrays");

// One tile, kChunks chunks wide. masks[(dx + d) * kMaxChunks + j]: the lanes
// of chunk j whose column x and x + dx are both inside the row.
template <int kChunks>
__attribute__((target("avx2,fma"))) void tile(const Args<float>& a, const Tile& t, float* logits,
                                              const __m256i* masks) {
    const Shape& s = a.shape;
    const int d = s.max_disp;
    const int cells = num_cells(d);
    const __m256i* own = masks + d * kMaxChunks;  // dx = 0: the tile's own columns
    auto logit_row = [&](int i, int64_t y) {
        return logits + (static_cast<int64_t>(i) * kBlockRows + (y - t.y0)) * kTileColumns;
    };
    for (int64_t i = 0; i < static_cast<int64_t>(cells) * kBlockRows * kTileColumns; ++i) logits[i] = 0.f;

    // 1. Eq. 1.
    for (int64_t c0 = 0; c0 < s.c; c0 += kLogitChannels) {
        const int64_t c1 = c0 + kLogitChannels < s.c ? c0 + kLogitChannels : s.c;
        for (int i = 0; i < cells; ++i) {
            int dy, dx;
            cell_offset(i, dy, dx);
            const __m256i* shifted = masks + (dx + d) * kMaxChunks;
            for (int64_t y = t.y0; y < t.y1; ++y) {
                const int64_t yy = y + dy;
                if (yy < 0 || yy >= s.H) continue;
                __m256 acc[kChunks];
                for (int j = 0; j < kChunks; ++j) acc[j] = _mm256_setzero_ps();
                const float* q = a.query + t.n * a.sq.n + y * a.sq.y + t.x0 + c0 * a.sq.c;
                const float* k = a.key + t.n * a.sk.n + yy * a.sk.y + t.x0 + dx + c0 * a.sk.c;
                for (int64_t ch = c0; ch < c1; ++ch, q += a.sq.c, k += a.sk.c) {
#pragma GCC unroll 8
                    for (int j = 0; j < kChunks; ++j)
                        acc[j] = _mm256_fmadd_ps(load_chunk<kChunks>(q, j, own), load_chunk<kChunks>(k, j, shifted),
                                                 acc[j]);
                }
                float* l = logit_row(i, y);
                for (int j = 0; j < kChunks; ++j)
                    _mm256_storeu_ps(l + 8 * j, _mm256_add_ps(_mm256_loadu_ps(l + 8 * j), acc[j]));
            }
        }
    }

    // 2. Eq. 4.
    const int64_t columns = s.W - t.x0 < 8 * kChunks ? s.W - t.x0 : 8 * kChunks;
    for (int64_t y = t.y0; y < t.y1; ++y) {
        for (int64_t x = 0; x < 8 * kChunks; ++x) {
            float weight[kMaxCells];
            bool inside[kMaxCells];
            int count = 0;
            for (int i = 0; i < cells; ++i) {
                int dy, dx;
                cell_offset(i, dy, dx);
                const int64_t yy = y + dy, xx = t.x0 + x + dx;
                inside[i] = x < columns && yy >= 0 && yy < s.H && xx >= 0 && xx < s.W;
                float& l = logit_row(i, y)[x];
                if (inside[i]) {
                    weight[count++] = l;
                } else {
                    l = 0.f;
                }
            }
            if (count == 0) continue;  // a column past the row's end
            softmax_in_place(weight, count);
            count = 0;
            for (int i = 0; i < cells; ++i) {
                if (inside[i]) logit_row(i, y)[x] = weight[count++];
            }
        }
    }

    // 3. Eq. 5, channels ch and ch + 1 (ch alone for an odd last one).
    for (int64_t ch = 0; ch < s.C; ch += 2) {
        const bool pair = ch + 1 < s.C;
        const float* v0 = a.value + t.n * a.sv.n + ch * a.sv.c + t.x0;
        const float* v1 = pair ? v0 + a.sv.c : v0;
        for (int64_t y = t.y0; y < t.y1; ++y) {
            __m256 acc0[kChunks], acc1[kChunks];
            for (int j = 0; j < kChunks; ++j) acc0[j] = acc1[j] = _mm256_setzero_ps();
            for (int i = 0; i < cells; ++i) {
                int dy, dx;
                cell_offset(i, dy, dx);
                const int64_t yy = y + dy;
                if (yy < 0 || yy >= s.H) continue;
                const __m256i* shifted = masks + (dx + d) * kMaxChunks;
                const float* w = logit_row(i, y);
                const float* r0 = v0 + yy * a.sv.y + dx;
                const float* r1 = v1 + yy * a.sv.y + dx;
#pragma GCC unroll 8
                for (int j = 0; j < kChunks; ++j) {
                    const __m256 wj = _mm256_loadu_ps(w + 8 * j);
                    acc0[j] = _mm256_fmadd_ps(wj, load_chunk<kChunks>(r0, j, shifted), acc0[j]);
                    acc1[j] = _mm256_fmadd_ps(wj, load_chunk<kChunks>(r1, j, shifted), acc1[j]);
                }
            }
            float* o = a.out + t.n * a.so.n + ch * a.so.c + y * a.so.y + t.x0;
            for (int j = 0; j < kChunks - 1; ++j) _mm256_storeu_ps(o + 8 * j, acc0[j]);
            _mm256_maskstore_ps(o + 8 * (kChunks - 1), own[kChunks - 1], acc0[kChunks - 1]);
            if (pair) {
                o += a.so.c;
                for (int j = 0; j < kChunks - 1; ++j) _mm256_storeu_ps(o + 8 * j, acc1[j]);
                _mm256_maskstore_ps(o + 8 * (kChunks - 1), own[kChunks - 1], acc1[kChunks - 1]);
            }
        }
    }
}

// The lane masks of every shift dx in [-d, d] and chunk of the tile at x0.
__attribute__((target("avx2,fma"))) void chunk_masks(const Shape& s, int64_t x0, __m256i* masks) {
    for (int dx = -s.max_disp; dx <= s.max_disp; ++dx) {
        for (int j = 0; j < kMaxChunks; ++j) {
            alignas(32) int32_t lanes[8];
            for (int lane = 0; lane < 8; ++lane) {
                const int64_t x = x0 + 8 * j + lane;
                lanes[lane] = x < s.W && x + dx >= 0 && x + dx < s.W ? -1 : 0;
            }
            masks[(dx + s.max_disp) * kMaxChunks + j] = _mm256_load_si256(reinterpret_cast<const __m256i*>(lanes));
        }
    }
}

using TileFn = void (*)(const Args<float>&, const Tile&, float*, const __m256i*);
constexpr TileFn kTiles[kMaxChunks] = {&tile<1>, &tile<2>, &tile<3>, &tile<4>,
                                       &tile<5>, &tile<6>, &tile<7>, &tile<8>};

int run(const Args<float>& a, int threads) {
    const Shape& s = a.shape;
    const int64_t row_blocks = (s.H + kBlockRows - 1) / kBlockRows;
    const int64_t column_tiles = (s.W + kTileColumns - 1) / kTileColumns;
    const int64_t tiles = s.N * row_blocks * column_tiles;
#pragma omp parallel num_threads(threads)
    {
        std::vector<float> logits(static_cast<size_t>(num_cells(s.max_disp)) * kBlockRows * kTileColumns);
        // (A vector of __m256i would lose the type's 32-byte alignment: template
        // arguments drop vector attributes.)
        std::vector<ChunkMask> masks(static_cast<size_t>(2 * s.max_disp + 1) * kMaxChunks);
        int64_t masks_x0 = -1;
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < tiles; ++item) {
            const int64_t column_tile = item % column_tiles, row_block = item / column_tiles % row_blocks;
            Tile t{item / column_tiles / row_blocks, row_block * kBlockRows, 0, column_tile * kTileColumns};
            t.y1 = t.y0 + kBlockRows < s.H ? t.y0 + kBlockRows : s.H;
            if (t.x0 != masks_x0) {
                chunk_masks(s, t.x0, &masks[0].lanes);
                masks_x0 = t.x0;
            }
            const int64_t chunks = (s.W - t.x0 + 7) / 8;
            kTiles[(chunks < kMaxChunks ? chunks : kMaxChunks) - 1](a, t, logits.data(), &masks[0].lanes);
        }
    }
    return kSuccess;
}

#undef VIDTRT_AVX2_INLINE

}  // namespace nchw_rows
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
#if VIDTRT_HOST_X86_DISPATCH
    if constexpr (sizeof(T) == 4) {
        // The NCHW-rows schedule wherever every tensor's columns are unit-stride.
        const bool rows = p.query.x == 1 && p.key.x == 1 && p.value.x == 1 && p.out.x == 1;
        if (rows && host_reads_nchw(DType::kFloat32, isa)) return nchw_rows::run(a, threads);
    }
#endif
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

bool host_reads_nchw(DType dtype, HostIsa isa) {
#if VIDTRT_HOST_X86_DISPATCH
    static const bool avx2 = cpu_has_avx2();
    return dtype == DType::kFloat32 && isa == HostIsa::kAuto && avx2;
#else
    (void)dtype;
    (void)isa;
    return false;
#endif
}

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
