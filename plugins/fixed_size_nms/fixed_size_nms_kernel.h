// Greedy NMS with a fixed-size output, with torchvision.ops.nms's semantics:
// the one kernel body shared by the host launcher (fixed_size_nms_host.cpp)
// and the CUDA launcher (fixed_size_nms_cuda.cu).
//
// boxes [K, 4] = (x1, y1, x2, y2) and scores [K], FP32, give keep
// [max_output] int32: the indices of the boxes greedy NMS keeps, in
// descending score order (equal scores: lower index first, a stable sort),
// then -1. A box is suppressed by an earlier kept box when their IoU is >
// iou_threshold. An entry scored -inf (or NaN) is never kept and suppresses
// nothing.
//
// A bitmask NMS in three phases:
//   1 place_entry   entry i finds its position in the order by counting the
//                   entries before it (O(K) per entry, deterministic, no sort
//                   library) and writes its box, area and index there
//   2 mask_word     word w of row p: bit b set when position q = 64·w + b is
//                   after p and IoU(p, q) > threshold (p valid); only words
//                   that reach past the diagonal are computed or read
//   3 scan          walks the positions in order with one bit per position
//                   (removed), keeping the ones not removed and OR-ing their
//                   rows in; stops at max_output kept or the first invalid
//                   position (invalid entries sort last)
//
// The IoU is torchvision's FP32 expression, each operation rounded once:
//   inter = max(0, min(x2) - max(x1)) · max(0, min(y2) - max(y1))
//   iou   = inter / ((area_p + area_q) - inter),  area = (x2 - x1) · (y2 - y1)
// The device path spells the operations as __fadd_rn & co. because nvcc would
// otherwise contract a product and a sum into one FMA; the host source is
// compiled with -ffp-contract=off (CMakeLists.txt) for the same reason.
#pragma once

#include <cstdint>

#include "../common/vidtrt_kernel_common.h"

namespace vidtrt {
namespace fixed_size_nms {

// At most this many boxes: the device scan keeps one bit per position in
// shared memory (8 KiB here) and the mask holds K² bits (512 MiB here).
constexpr int64_t kMaxBoxes = 65536;
constexpr int kWordBits = 64;

struct Shape {
    int64_t K;            // number of boxes (and scores)
    int64_t max_output;   // length of keep
    float iou_threshold;  // suppress when IoU > this (FP32; the Python layer rounds torchvision's double down)
};

// Element strides of the [K, 4] box table.
struct BoxStrides {
    int64_t box, coord;
};

inline bool valid_shape(const Shape& s) {
    return s.K >= 0 && s.K <= kMaxBoxes && s.max_output >= 1 && std::isfinite(s.iou_threshold);
}

VIDTRT_HD VIDTRT_FORCEINLINE int64_t mask_words(int64_t K) { return (K + kWordBits - 1) / kWordBits; }

// The boxes in score order, built by phase 1 (any storage: the host uses
// vectors, the device the plugin's workspace).
struct Sorted {
    float* boxes;    // [K, 4] x1, y1, x2, y2
    float* area;     // [K]
    int32_t* index;  // [K] input index, -1 for an invalid entry
    uint64_t* mask;  // [K, mask_words(K)]; row p holds words p / 64 .. end only (device; the host keeps none)
};

struct Input {
    const float* boxes;  // [K, 4]
    BoxStrides box_strides;
    const float* scores;  // [K]
    int64_t score_stride;
};

// ---------------------------------------------------------------- FP32 arithmetic as torchvision's CPU kernel

VIDTRT_HD VIDTRT_FORCEINLINE float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}

VIDTRT_HD VIDTRT_FORCEINLINE float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fsub_rn(a, b);
#else
    return a - b;
#endif
}

VIDTRT_HD VIDTRT_FORCEINLINE float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

VIDTRT_HD VIDTRT_FORCEINLINE float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fdiv_rn(a, b);
#else
    return a / b;
#endif
}

// std::max / std::min, which torchvision uses (fmaxf would treat NaN and
// signed zeros differently).
VIDTRT_HD VIDTRT_FORCEINLINE float max_of(float a, float b) { return a < b ? b : a; }
VIDTRT_HD VIDTRT_FORCEINLINE float min_of(float a, float b) { return b < a ? b : a; }

// ---------------------------------------------------------------- phase 1: order

VIDTRT_HD VIDTRT_FORCEINLINE bool is_valid(float score) { return score > -INFINITY; }  // false for NaN

// Invalid entries all get -inf, so keys are never NaN and the order is total.
VIDTRT_HD VIDTRT_FORCEINLINE float sort_key(float score) { return is_valid(score) ? score : -INFINITY; }

VIDTRT_HD VIDTRT_FORCEINLINE float score_at(const Input& in, int64_t i) { return in.scores[i * in.score_stride]; }

// Position of entry i in a stable descending sort of the keys: the entries
// with a larger key, plus those with an equal key and a lower index.
VIDTRT_HD inline int64_t stable_rank(const Input& in, int64_t K, int64_t i) {
    const float key = sort_key(score_at(in, i));
    int64_t rank = 0;
    for (int64_t j = 0; j < i; ++j) rank += sort_key(score_at(in, j)) >= key ? 1 : 0;
    for (int64_t j = i + 1; j < K; ++j) rank += sort_key(score_at(in, j)) > key ? 1 : 0;
    return rank;
}

// Phase 1 for entry i at position p (its stable_rank): writes its box, area
// and index there.
VIDTRT_HD inline void place_entry_at(const Input& in, const Sorted& out, int64_t i, int64_t p) {
    const float* box = in.boxes + i * in.box_strides.box;
    const int64_t c = in.box_strides.coord;
    const float x1 = box[0], y1 = box[c], x2 = box[2 * c], y2 = box[3 * c];
    float* dst = out.boxes + p * 4;
    dst[0] = x1;
    dst[1] = y1;
    dst[2] = x2;
    dst[3] = y2;
    out.area[p] = mul_rn(sub_rn(x2, x1), sub_rn(y2, y1));
    out.index[p] = is_valid(score_at(in, i)) ? static_cast<int32_t>(i) : -1;
}

// Phase 1 for entry i, its position found by counting (the device's way; the
// host sorts, fixed_size_nms_host.cpp).
VIDTRT_HD inline void place_entry(const Input& in, const Sorted& out, int64_t K, int64_t i) {
    place_entry_at(in, out, i, stable_rank(in, K, i));
}

// ---------------------------------------------------------------- phase 2: suppression mask

// IoU(a, b) > threshold with a the earlier box; a NaN IoU (two zero-area
// boxes) is not.
VIDTRT_HD VIDTRT_FORCEINLINE bool overlaps(const float* a, float area_a, const float* b, float area_b,
                                           float threshold) {
    const float xx1 = max_of(a[0], b[0]);
    const float yy1 = max_of(a[1], b[1]);
    const float xx2 = min_of(a[2], b[2]);
    const float yy2 = min_of(a[3], b[3]);
    const float w = max_of(0.f, sub_rn(xx2, xx1));
    const float h = max_of(0.f, sub_rn(yy2, yy1));
    const float inter = mul_rn(w, h);
    const float iou = div_rn(inter, sub_rn(add_rn(area_a, area_b), inter));
    return iou > threshold;
}

// Word w of row p: bit b for position q = 64·w + b, set when p < q < K, p is
// valid and IoU(p, q) > threshold. Invalid q may get bits; the scan never
// reaches them.
VIDTRT_HD inline uint64_t mask_word(const Sorted& s, int64_t K, float threshold, int64_t p, int64_t w) {
    if (s.index[p] < 0) return 0;  // an invalid entry suppresses nothing
    const float* a = s.boxes + p * 4;
    const float area_a = s.area[p];
    const int64_t first = w * kWordBits;
    const int64_t begin = p + 1 > first ? p + 1 : first;
    const int64_t end = first + kWordBits < K ? first + kWordBits : K;
    uint64_t bits = 0;
    for (int64_t q = begin; q < end; ++q) {
        if (overlaps(a, area_a, s.boxes + q * 4, s.area[q], threshold)) bits |= uint64_t{1} << (q - first);
    }
    return bits;
}

// ---------------------------------------------------------------- phase 3: scan

// The sequential walk, run by `lanes` cooperating threads (lane = 0 .. lanes-1;
// 1 on the host, a warp on the device) that share `removed` (mask_words(K)
// words) and call `sync()` (a no-op on the host, __syncwarp on the device)
// between reading and updating it. Control flow is uniform across lanes.
// Writes all max_output entries of keep.
template <typename Sync>
VIDTRT_HD inline void scan(const Sorted& s, const Shape& shape, int32_t* keep, int64_t keep_stride,
                           uint64_t* removed, int lane, int lanes, Sync sync) {
    const int64_t K = shape.K;
    const int64_t words = mask_words(K);
    for (int64_t w = lane; w < words; w += lanes) removed[w] = 0;
    sync();
    int64_t kept = 0;
    for (int64_t p = 0; p < K && kept < shape.max_output; ++p) {
        const int32_t index = s.index[p];
        if (index < 0) break;  // invalid entries sort last
        const bool is_removed = (removed[p / kWordBits] >> (p % kWordBits)) & 1;
        sync();  // every lane has read the bit before any lane updates its word
        if (is_removed) continue;
        if (lane == 0) keep[kept * keep_stride] = index;
        ++kept;
        const uint64_t* row = s.mask + p * words;
        for (int64_t w = p / kWordBits + lane; w < words; w += lanes) removed[w] |= row[w];
        sync();
    }
    for (int64_t r = kept + lane; r < shape.max_output; r += lanes) keep[r * keep_stride] = -1;
}

}  // namespace fixed_size_nms
}  // namespace vidtrt
