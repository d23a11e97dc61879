// Progressive Sparse Local Attention (PSLA, Guo et al., §3.2, Eq. 1-5): the
// one kernel body shared by the host launcher (psla_host.cpp) and the CUDA
// launcher (psla_cuda.cu).
//
// For every position p = (n, y, x) of the query map:
//   cells  Φ(y, x) = {(y, x)} ∪ ⋃_{s=1..d} {(y+a, x+b) : a, b ∈ {-s, 0, s}} \ {(y, x)}
//   logit  c_i  = <query[n, :, y, x], key[n, :, y+a_i, x+b_i]>   (no scaling)
//   weight ĉ_i = softmax over the cells inside the map (others take no part)
//   out[n, :, y, x] = Σ_i ĉ_i · value[n, :, y+a_i, x+b_i]
// All arithmetic is FP32 whatever the storage type.
#pragma once

#include "../common/vidtrt_kernel_common.h"

namespace vidtrt {
namespace psla {

// Largest supported max displacement: bounds the per-position arrays below
// (1 + 8 * 8 = 65 cells). The paper uses 4.
constexpr int kMaxDisp = 8;
constexpr int kMaxCells = 1 + 8 * kMaxDisp;
// Output channels accumulated together per pass over the cells.
constexpr int kChannelTile = 16;

VIDTRT_HD VIDTRT_FORCEINLINE int num_cells(int max_disp) { return 1 + 8 * max_disp; }

// Offset (dy, dx) of cell i. Cell 0 is the centre; cells 1 + 8(s-1) .. 8s are
// the ring of stride s, in row-major order of (a, b) ∈ {-1, 0, 1}² \ {(0, 0)}
// scaled by s. The Python reference and the ONNX function use the same order.
VIDTRT_HD VIDTRT_FORCEINLINE void cell_offset(int i, int& dy, int& dx) {
    if (i == 0) {
        dy = 0;
        dx = 0;
        return;
    }
    const int s = (i - 1) / 8 + 1;
    const int j = (i - 1) % 8;
    const int r = j < 4 ? j : j + 1;  // skip the centre of the 3x3 pattern
    dy = (r / 3 - 1) * s;
    dx = (r % 3 - 1) * s;
}

struct Shape {
    int64_t N;  // batch
    int64_t c;  // embedding channels of query and key
    int64_t C;  // channels of value and output
    int64_t H;
    int64_t W;
    int max_disp;
};

template <typename T>
struct Args {
    const T* query;  // [N, c, H, W]  g(F^{t+ε})
    const T* key;    // [N, c, H, W]  f(F^t)
    const T* value;  // [N, C, H, W]  F^t
    T* out;          // [N, C, H, W]
    Strides4 sq, sk, sv, so;
    Shape shape;
};

inline bool valid_shape(const Shape& s) {
    return s.N >= 0 && s.c >= 1 && s.C >= 0 && s.H >= 0 && s.W >= 0 && s.max_disp >= 0 &&
           s.max_disp <= kMaxDisp;
}

// Eq. 4 for one position: its inside cells' logits (count >= 1, in cell
// order) become their softmax weights, in place. Every launcher's schedule
// goes through this one function.
VIDTRT_HD VIDTRT_FORCEINLINE void softmax_in_place(float* weight, int count) {
    float top = weight[0];
    for (int i = 1; i < count; ++i) top = weight[i] > top ? weight[i] : top;
    float total = 0.f;
    for (int i = 0; i < count; ++i) {
        weight[i] = expf(weight[i] - top);
        total += weight[i];
    }
    const float inv_total = 1.f / total;
    for (int i = 0; i < count; ++i) weight[i] *= inv_total;
}

// Computes out[n, :, y, x] for position index p = (n * H + y) * W + x.
// The body in two steps (weights, then the weighted sum a tile of channels at
// a time), run back to back per position by the CUDA launcher and the host's
// per-position schedule (psla_host.cpp). Force-inlined so
// that a caller compiled for a wider ISA (the host's AVX2 build) compiles them
// for it too.

// The softmax weights of position p's cells inside the map, and where each
// cell's value vector starts. Returns the number of cells inside (>= 1).
template <typename T, int kCStride>
VIDTRT_HD VIDTRT_FORCEINLINE int psla_weights(const Args<T>& a, int64_t p, float* weight, int64_t* value_offset) {
    using Num = NumTraits<T>;
    const Shape& s = a.shape;
    const int64_t x = p % s.W;
    const int64_t ny = p / s.W;
    const int64_t y = ny % s.H;
    const int64_t n = ny / s.H;
    const int64_t qc = channel_stride<kCStride>(a.sq.c);
    const int64_t kc = channel_stride<kCStride>(a.sk.c);

    // Step 1 (Eq. 1, 4): logits of the cells inside the map, then softmax.
    int64_t key_offset[kMaxCells];
    int count = 0;
    const T* q = a.query + n * a.sq.n + y * a.sq.y + x * a.sq.x;
    const int cells = num_cells(s.max_disp);
    for (int i = 0; i < cells; ++i) {
        int dy, dx;
        cell_offset(i, dy, dx);
        const int64_t yy = y + dy;
        const int64_t xx = x + dx;
        if (yy < 0 || yy >= s.H || xx < 0 || xx >= s.W) continue;
        key_offset[count] = n * a.sk.n + yy * a.sk.y + xx * a.sk.x;
        value_offset[count] = n * a.sv.n + yy * a.sv.y + xx * a.sv.x;
        ++count;
    }
    // Four cells per pass over the channels: each query element is loaded
    // once for four keys, and the four sums are independent.
    int j = 0;
    for (; j + 4 <= count; j += 4) {
        const T* k0 = a.key + key_offset[j];
        const T* k1 = a.key + key_offset[j + 1];
        const T* k2 = a.key + key_offset[j + 2];
        const T* k3 = a.key + key_offset[j + 3];
        float d0 = 0.f, d1 = 0.f, d2 = 0.f, d3 = 0.f;
        VIDTRT_SIMD_SUM4(d0, d1, d2, d3)
        for (int64_t ch = 0; ch < s.c; ++ch) {
            const float qv = Num::to_float(q[ch * qc]);
            d0 += qv * Num::to_float(k0[ch * kc]);
            d1 += qv * Num::to_float(k1[ch * kc]);
            d2 += qv * Num::to_float(k2[ch * kc]);
            d3 += qv * Num::to_float(k3[ch * kc]);
        }
        weight[j] = d0;
        weight[j + 1] = d1;
        weight[j + 2] = d2;
        weight[j + 3] = d3;
    }
    for (; j < count; ++j) {
        const T* k = a.key + key_offset[j];
        float dot = 0.f;
        VIDTRT_SIMD_SUM(dot)
        for (int64_t ch = 0; ch < s.c; ++ch) {
            dot += Num::to_float(q[ch * qc]) * Num::to_float(k[ch * kc]);
        }
        weight[j] = dot;
    }
    // The centre cell is always inside the map, so count >= 1.
    softmax_in_place(weight, count);
    return count;
}

// Step 2 (Eq. 5) for output channels [c0, c0 + kTile) of one position: the
// weighted sum of value over its cells, the accumulators in registers,
// stored to o[(c0 + t) * oc] (o: the position's output, oc: its channel
// stride). kTile independent sums hide the FMA latency: the host's AVX2
// build takes 64 (8 vector registers), the CUDA launcher kChannelTile per
// thread.
template <typename T, int kCStride, int kTile>
VIDTRT_HD VIDTRT_FORCEINLINE void psla_accumulate(const Args<T>& a, int64_t c0, const float* weight,
                                                  const int64_t* value_offset, int count, T* o, int64_t oc) {
    using Num = NumTraits<T>;
    const int64_t vc = channel_stride<kCStride>(a.sv.c);
    const int64_t width = (a.shape.C - c0) < kTile ? (a.shape.C - c0) : kTile;
    float acc[kTile];
    for (int t = 0; t < kTile; ++t) acc[t] = 0.f;
    for (int i = 0; i < count; ++i) {
        const T* v = a.value + value_offset[i] + c0 * vc;
        const float w = weight[i];
        if (width == kTile) {
            VIDTRT_SIMD
            for (int t = 0; t < kTile; ++t) acc[t] += w * Num::to_float(v[t * vc]);
        } else {
            for (int t = 0; t < width; ++t) acc[t] += w * Num::to_float(v[t * vc]);
        }
    }
    for (int t = 0; t < width; ++t) o[(c0 + t) * oc] = Num::from_float(acc[t]);
}

// Where out[n, :, y, x] starts, p = (n * H + y) * W + x.
template <typename T>
VIDTRT_HD VIDTRT_FORCEINLINE T* psla_output(const Args<T>& a, int64_t p) {
    const int64_t x = p % a.shape.W;
    const int64_t ny = p / a.shape.W;
    return a.out + ny / a.shape.H * a.so.n + ny % a.shape.H * a.so.y + x * a.so.x;
}

// Both steps for out[n, :, y, x], p = (n * H + y) * W + x.
template <typename T, int kCStride, int kTile = kChannelTile>
VIDTRT_HD VIDTRT_FORCEINLINE void psla_position(const Args<T>& a, int64_t p) {
    float weight[kMaxCells];
    int64_t value_offset[kMaxCells];
    const int count = psla_weights<T, kCStride>(a, p, weight, value_offset);
    T* o = psla_output(a, p);
    // The output's channel stride is read at run time: written once per tile,
    // and ONNX Runtime's and TensorRT's outputs are NCHW.
    for (int64_t c0 = 0; c0 < a.shape.C; c0 += kTile) {
        psla_accumulate<T, kCStride, kTile>(a, c0, weight, value_offset, count, o, a.so.c);
    }
}

}  // namespace psla
}  // namespace vidtrt
