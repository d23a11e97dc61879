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

// Computes out[n, :, y, x] for position index p = (n * H + y) * W + x.
template <typename T, int kCStride>
VIDTRT_HD void psla_position(const Args<T>& a, int64_t p) {
    using Num = NumTraits<T>;
    const Shape& s = a.shape;
    const int64_t x = p % s.W;
    const int64_t ny = p / s.W;
    const int64_t y = ny % s.H;
    const int64_t n = ny / s.H;
    const int64_t qc = channel_stride<kCStride>(a.sq.c);
    const int64_t kc = channel_stride<kCStride>(a.sk.c);
    const int64_t vc = channel_stride<kCStride>(a.sv.c);
    const int64_t oc = channel_stride<kCStride>(a.so.c);

    // Step 1 (Eq. 1, 4): logits of the cells inside the map, then softmax.
    float weight[kMaxCells];
    int64_t value_offset[kMaxCells];
    int count = 0;
    const T* q = a.query + n * a.sq.n + y * a.sq.y + x * a.sq.x;
    const int cells = num_cells(s.max_disp);
    for (int i = 0; i < cells; ++i) {
        int dy, dx;
        cell_offset(i, dy, dx);
        const int64_t yy = y + dy;
        const int64_t xx = x + dx;
        if (yy < 0 || yy >= s.H || xx < 0 || xx >= s.W) continue;
        const T* k = a.key + n * a.sk.n + yy * a.sk.y + xx * a.sk.x;
        float dot = 0.f;
        VIDTRT_SIMD_SUM(dot)
        for (int64_t ch = 0; ch < s.c; ++ch) {
            dot += Num::to_float(q[ch * qc]) * Num::to_float(k[ch * kc]);
        }
        weight[count] = dot;
        value_offset[count] = n * a.sv.n + yy * a.sv.y + xx * a.sv.x;
        ++count;
    }
    // The centre cell is always inside the map, so count >= 1.
    float top = weight[0];
    for (int j = 1; j < count; ++j) top = weight[j] > top ? weight[j] : top;
    float total = 0.f;
    for (int j = 0; j < count; ++j) {
        weight[j] = expf(weight[j] - top);
        total += weight[j];
    }
    const float inv_total = 1.f / total;
    for (int j = 0; j < count; ++j) weight[j] *= inv_total;

    // Step 2 (Eq. 5): weighted sum of value over the same cells, a tile of
    // output channels at a time so the accumulators stay in registers.
    T* o = a.out + n * a.so.n + y * a.so.y + x * a.so.x;
    for (int64_t c0 = 0; c0 < s.C; c0 += kChannelTile) {
        const int64_t width = (s.C - c0) < kChannelTile ? (s.C - c0) : kChannelTile;
        float acc[kChannelTile];
        for (int t = 0; t < kChannelTile; ++t) acc[t] = 0.f;
        for (int j = 0; j < count; ++j) {
            const T* v = a.value + value_offset[j] + c0 * vc;
            const float w = weight[j];
            if (width == kChannelTile) {
                VIDTRT_SIMD
                for (int t = 0; t < kChannelTile; ++t) acc[t] += w * Num::to_float(v[t * vc]);
            } else {
                for (int t = 0; t < width; ++t) acc[t] += w * Num::to_float(v[t * vc]);
            }
        }
        for (int t = 0; t < width; ++t) o[(c0 + t) * oc] = Num::from_float(acc[t]);
    }
}

}  // namespace psla
}  // namespace vidtrt
