// Most-similar RoI align (Temporal RoI Align, Gong et al., AAAI 2021, Eq. 2-4,
// with open-mmlab/mmtracking's semantics): the one kernel body shared by the
// host launcher (most_similar_roi_align_host.cpp) and the CUDA launcher
// (most_similar_roi_align_cuda.cu).
//
// roi_feats [R, C, h, w], support_feats [T, C, H, W] → out [T, R, C, h, w].
// For every query cell q = (r, y, x) and support frame t:
//   n(v)      = v / max(‖v‖₂, 1e-12)                 (torch.nn.functional.normalize)
//   s_j       = <n(roi[r, :, y, x]), n(support[t, :, j])>   j = 0 … H·W−1 (row-major cells)
//   J         = the top_k cells of largest s_j; of equal similarities the lower j wins
//   w_j       = exp(s_j) / Σ_{i ∈ J} exp(s_i)          (no temperature)
//   out[t, r, :, y, x] = Σ_{j ∈ J} w_j · support[t, :, j]   (the un-normalised features)
// All arithmetic is FP32 whatever the storage type.
//
// The (R·h·w) × (T·H·W) similarity matrix is never stored: a query streams
// over the support cells of one frame keeping a sorted top-k of at most
// kMaxTopK entries. Both sides are normalised once into FP32 scratch buffers
// (the launcher's workspace) so that the inner loop is a plain FP32 dot
// product whatever the storage type.
#pragma once

#include "../common/vidtrt_kernel_common.h"

namespace vidtrt {
namespace most_similar_roi_align {

// Largest supported top_k: bounds the per-query arrays below. mmtracking uses
// 2, the paper 4.
constexpr int kMaxTopK = 8;
// Support cells per packed panel of the normalised support scratch (see
// Scratch): a panel's channel row is one 64-byte line, which the host tile
// loads as two AVX vectors and the device reads as one broadcast.
constexpr int kPanel = 16;
// The guard of torch.nn.functional.normalize: a zero vector normalises to
// zero (so it has similarity 0 with everything) instead of to NaN.
constexpr float kNormEps = 1e-12f;

// Element strides of the [T, R, C, h, w] output.
struct Strides5 {
    int64_t t, r, c, y, x;
};

struct Shape {
    int64_t R;  // RoIs (target-frame proposals)
    int64_t C;  // channels of both inputs
    int64_t h;  // RoI feature height
    int64_t w;  // RoI feature width
    int64_t T;  // support frames
    int64_t H;  // support map height
    int64_t W;  // support map width
    int top_k;
};

VIDTRT_HD VIDTRT_FORCEINLINE int64_t num_queries(const Shape& s) { return s.R * s.h * s.w; }
VIDTRT_HD VIDTRT_FORCEINLINE int64_t num_cells(const Shape& s) { return s.H * s.W; }
VIDTRT_HD VIDTRT_FORCEINLINE int64_t num_panels(const Shape& s) { return (num_cells(s) + kPanel - 1) / kPanel; }

// top_k <= H·W: a query needs top_k distinct cells. H·W must fit the int32
// cell indices of the top-k arrays.
inline bool valid_shape(const Shape& s) {
    return s.R >= 0 && s.C >= 0 && s.h >= 0 && s.w >= 0 && s.T >= 0 && s.H >= 0 && s.W >= 0 && s.top_k >= 1 &&
           s.top_k <= kMaxTopK && s.H * s.W >= s.top_k && s.H * s.W <= INT32_MAX;
}

// Normalised FP32 copies of both inputs.
//   support  [T][P][C][kPanel], P = ceil(H·W / kPanel): cell j of frame t sits in
//            panel j / kPanel, lane j % kPanel; lanes past H·W hold 0 (never
//            ranked). Panels make the host tile's inner loop a unit-stride
//            vector over 16 cells with the query value broadcast, and the
//            device's warp (one frame) read one address at a time.
//   query    element (q, c) at q·query_q + c·query_c, q = (r·h + y)·w + x; the
//            host uses [Q][C], the device [C][Q] (neighbouring threads,
//            neighbouring q, coalesced).
struct Scratch {
    float* support;
    float* query;
    int64_t query_q, query_c;
};

inline int64_t support_scratch_elements(const Shape& s) { return s.T * num_panels(s) * s.C * kPanel; }
inline int64_t query_scratch_elements(const Shape& s) { return num_queries(s) * s.C; }

template <typename T>
struct Args {
    const T* roi;      // [R, C, h, w]
    const T* support;  // [T, C, H, W]
    T* out;            // [T, R, C, h, w]
    Strides4 sr;       // roi (r, c, y, x)
    Strides4 ss;       // support (t, c, y, x)
    Strides5 so;       // out (t, r, c, y, x)
    Scratch scratch;
    Shape shape;
};

// dst[c·dst_stride] = src[c·src_stride] / max(‖src‖₂, kNormEps), in FP32.
template <typename T, int kCStride>
VIDTRT_HD VIDTRT_FORCEINLINE void normalize_vector(const T* src, int64_t src_stride, int64_t C, float* dst,
                                                   int64_t dst_stride) {
    using Num = NumTraits<T>;
    const int64_t sc = channel_stride<kCStride>(src_stride);
    float squares = 0.f;
    VIDTRT_SIMD_SUM(squares)
    for (int64_t c = 0; c < C; ++c) {
        const float v = Num::to_float(src[c * sc]);
        squares += v * v;
    }
    // Divide (not multiply by a reciprocal) as F.normalize and the ONNX
    // function do, so the layers differ only in the order of the sum above.
    const float denom = fmaxf(sqrtf(squares), kNormEps);
    for (int64_t c = 0; c < C; ++c) dst[c * dst_stride] = Num::to_float(src[c * sc]) / denom;
}

// Item i of [0, T·P·kPanel): one lane of one support panel.
template <typename T, int kCStride>
VIDTRT_HD VIDTRT_FORCEINLINE void normalize_support_item(const Args<T>& a, int64_t i) {
    const Shape& s = a.shape;
    const int64_t per_frame = num_panels(s) * kPanel;
    const int64_t t = i / per_frame;
    const int64_t j = i % per_frame;
    const int64_t panel = j / kPanel;
    const int64_t lane = j % kPanel;
    float* dst = a.scratch.support + ((t * num_panels(s) + panel) * s.C) * kPanel + lane;
    if (j >= num_cells(s)) {
        for (int64_t c = 0; c < s.C; ++c) dst[c * kPanel] = 0.f;
        return;
    }
    const T* src = a.support + t * a.ss.n + (j / s.W) * a.ss.y + (j % s.W) * a.ss.x;
    normalize_vector<T, kCStride>(src, a.ss.c, s.C, dst, kPanel);
}

// Query q = (r·h + y)·w + x.
template <typename T, int kCStride>
VIDTRT_HD VIDTRT_FORCEINLINE void normalize_query_item(const Args<T>& a, int64_t q) {
    const Shape& s = a.shape;
    const int64_t x = q % s.w;
    const int64_t y = (q / s.w) % s.h;
    const int64_t r = q / (s.w * s.h);
    const T* src = a.roi + r * a.sr.n + y * a.sr.y + x * a.sr.x;
    normalize_vector<T, kCStride>(src, a.sr.c, s.C, a.scratch.query + q * a.scratch.query_q, a.scratch.query_c);
}

// The top_k largest similarities seen so far, sorted in descending order.
// Cells must be pushed in increasing index order: an equal similarity never
// displaces or overtakes an earlier one, which is what makes the lower index
// win a tie (the ONNX function's TopK and the reference follow the same rule).
struct TopK {
    float value[kMaxTopK];
    int32_t index[kMaxTopK];
    int count;

    VIDTRT_HD VIDTRT_FORCEINLINE void reset() { count = 0; }

    // Whether push(v, ·, k) could change the list; lets a caller skip whole
    // groups of cells with vector compares. Never excludes a value push would
    // take (NaN included: it enters only while the list is not full).
    VIDTRT_HD VIDTRT_FORCEINLINE bool full(int k) const { return count == k; }
    VIDTRT_HD VIDTRT_FORCEINLINE float threshold(int k) const { return value[k - 1]; }

    VIDTRT_HD VIDTRT_FORCEINLINE void push(float v, int32_t j, int k) {
        if (count == k && !(v > value[k - 1])) return;
        int p = count < k ? count : k - 1;
        while (p > 0 && value[p - 1] < v) {
            value[p] = value[p - 1];
            index[p] = index[p - 1];
            --p;
        }
        value[p] = v;
        index[p] = j;
        if (count < k) ++count;
    }
};

// sim[i][l] = similarity of query q0 + i with cell panel·kPanel + l of frame t
// (lanes past H·W come out 0 and must not be pushed). kQ queries share every
// load of the panel; the accumulators are local so that they stay in
// registers (kQ·kPanel floats: 96 on the host, 16 on the device).
// kQueryCStride: kUnitChannelStride when query_c == 1 (the host layout).
template <int kQ, int kQueryCStride>
VIDTRT_HD VIDTRT_FORCEINLINE void similarity_tile(const Scratch& sc, const Shape& s, int64_t t, int64_t q0,
                                                  int64_t panel, float (&sim)[kQ][kPanel]) {
    const float* p = sc.support + (t * num_panels(s) + panel) * s.C * kPanel;
    const float* q = sc.query + q0 * sc.query_q;
    const int64_t qc = channel_stride<kQueryCStride>(sc.query_c);
    float acc[kQ][kPanel];
    for (int i = 0; i < kQ; ++i) {
        for (int l = 0; l < kPanel; ++l) acc[i][l] = 0.f;
    }
    for (int64_t c = 0; c < s.C; ++c) {
        const float* row = p + c * kPanel;
        for (int i = 0; i < kQ; ++i) {
            const float qv = q[i * sc.query_q + c * qc];
            VIDTRT_SIMD
            for (int l = 0; l < kPanel; ++l) acc[i][l] += qv * row[l];
        }
    }
    for (int i = 0; i < kQ; ++i) {
        for (int l = 0; l < kPanel; ++l) sim[i][l] = acc[i][l];
    }
}

// Eq. 3-4 for query q of frame t: softmax over the kept similarities, then
// the weighted sum of the un-normalised support vectors of those cells.
template <typename T, int kCStride>
VIDTRT_HD VIDTRT_FORCEINLINE void write_output(const Args<T>& a, int64_t t, int64_t q, const TopK& top) {
    using Num = NumTraits<T>;
    const Shape& s = a.shape;
    const int k = top.count;
    float weight[kMaxTopK];
    const T* cell[kMaxTopK];
    // value[0] is the largest, so every exponent is <= 0.
    float total = 0.f;
    for (int i = 0; i < k; ++i) {
        weight[i] = expf(top.value[i] - top.value[0]);
        total += weight[i];
    }
    for (int i = 0; i < k; ++i) {
        weight[i] /= total;
        const int64_t j = top.index[i];
        cell[i] = a.support + t * a.ss.n + (j / s.W) * a.ss.y + (j % s.W) * a.ss.x;
    }
    const int64_t x = q % s.w;
    const int64_t y = (q / s.w) % s.h;
    const int64_t r = q / (s.w * s.h);
    T* o = a.out + t * a.so.t + r * a.so.r + y * a.so.y + x * a.so.x;
    const int64_t vc = channel_stride<kCStride>(a.ss.c);
    const int64_t oc = channel_stride<kCStride>(a.so.c);
    VIDTRT_SIMD
    for (int64_t c = 0; c < s.C; ++c) {
        float acc = 0.f;
        for (int i = 0; i < k; ++i) acc += weight[i] * Num::to_float(cell[i][c * vc]);
        o[c * oc] = Num::from_float(acc);
    }
}

// Ranks one panel's similarities for one query, cells in increasing order.
VIDTRT_HD VIDTRT_FORCEINLINE void push_panel(TopK& top, const float (&sim)[kPanel], int64_t panel, int lanes, int k) {
    if (top.full(k)) {
        // Most panels hold nothing better than the current k-th value once the
        // list has filled; one vectorisable test skips them.
        const float bar = top.threshold(k);
        bool any = false;
        for (int l = 0; l < kPanel; ++l) any |= sim[l] > bar;
        if (!any) return;
    }
    const int32_t first = static_cast<int32_t>(panel * kPanel);
    for (int l = 0; l < lanes; ++l) top.push(sim[l], first + l, k);
}

// Everything for query q of frame t in one call: the device launcher's
// per-thread work (the host launcher tiles the same steps over many queries).
template <typename T>
VIDTRT_HD VIDTRT_FORCEINLINE void query_frame(const Args<T>& a, int64_t t, int64_t q) {
    const Shape& s = a.shape;
    const int k = s.top_k;
    const int64_t cells = num_cells(s);
    const int64_t panels = num_panels(s);
    TopK top;
    top.reset();
    for (int64_t panel = 0; panel < panels; ++panel) {
        float sim[1][kPanel];
        similarity_tile<1, kAnyChannelStride>(a.scratch, s, t, q, panel, sim);
        const int64_t left = cells - panel * kPanel;
        push_panel(top, sim[0], panel, static_cast<int>(left < kPanel ? left : kPanel), k);
    }
    write_output<T, kAnyChannelStride>(a, t, q, top);
}

}  // namespace most_similar_roi_align
}  // namespace vidtrt
