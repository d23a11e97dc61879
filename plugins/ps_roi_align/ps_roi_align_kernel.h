// Position-sensitive RoI Align (R-FCN score maps pooled with RoI Align
// sampling), with torchvision.ops.ps_roi_align's semantics: the one kernel
// body shared by the host launcher (ps_roi_align_host.cpp) and the CUDA
// launcher (ps_roi_align_cuda.cu).
//
// features [N, C·k·k, H, W], rois [R, 5] = (batch, x1, y1, x2, y2) in image
// coordinates, out [R, C, k, k]. For RoI r, output channel c and bin (i, j):
//   start  = (x1, y1) · spatial_scale − 0.5        (no rounding, no minimum size)
//   bin    = ((x2, y2) · spatial_scale − 0.5 − start) / k   (may be ≤ 0)
//   grid   = (gh, gw) = (s, s) for sampling_ratio s > 0; for s ≤ 0
//            torchvision's adaptive grid (ceil(bin_h), ceil(bin_w)), per RoI
//   sample (iy, ix) ∈ [0, gh) × [0, gw):
//            y = (i·bin_h + start_y) + ((iy + 0.5)·bin_h) / gh, x likewise with gw
//   out[r, c, i, j] = (sum over the samples of bilinear(features[batch, c·k·k + i·k + j], y, x)) / (gh·gw)
// where a sample with y ∉ [−1, H] or x ∉ [−1, W] (or NaN) contributes 0 but
// still counts in gh·gw, and inside that band coordinates below 0 snap to
// 0 and those at or past the last row/column snap to it. An adaptive grid
// of 0 or less on an axis (a RoI of zero or negative extent there) samples
// nothing, and the sum 0 is divided by gh·gw as torchvision does: NaN when
// the product is 0, −0 when it is negative, +0 when it is positive.
// The expressions keep torchvision's order of FP32 operations so results
// agree to rounding. All arithmetic is FP32 whatever the storage type.
#pragma once

#include "../common/vidtrt_kernel_common.h"

namespace vidtrt {
namespace ps_roi_align {

// Element strides of the [R, 5] RoI table.
struct RoiStrides {
    int64_t r, col;
};

struct Shape {
    int64_t N;         // batch of the feature map
    int64_t channels;  // C·k·k
    int64_t H;
    int64_t W;
    int64_t R;  // number of RoIs
    int output_size;  // k
    int sampling_ratio;  // s > 0: s×s samples per bin; s <= 0: adaptive (ceil of the bin size, per RoI)
    float spatial_scale;
};

VIDTRT_HD VIDTRT_FORCEINLINE int64_t out_channels(const Shape& s) {
    return s.channels / (static_cast<int64_t>(s.output_size) * s.output_size);
}

template <typename T, typename TRoi>
struct Args {
    const T* features;  // [N, C·k·k, H, W]
    const TRoi* rois;   // [R, 5]
    T* out;             // [R, C, k, k]
    Strides4 sf;        // features (n, channel, y, x)
    RoiStrides sr;
    Strides4 so;  // out (r, c, i, j)
    Shape shape;
};

inline bool valid_shape(const Shape& s) {
    // H, W >= 1 because bilinear sampling snaps to the last row/column, which
    // an empty map does not have.
    // Every sampling_ratio is valid: <= 0 selects the adaptive grid.
    return s.N >= 0 && s.channels >= 0 && s.H >= 1 && s.W >= 1 && s.R >= 0 && s.output_size >= 1 &&
           std::isfinite(s.spatial_scale) && s.spatial_scale > 0.f &&
           s.channels % (static_cast<int64_t>(s.output_size) * s.output_size) == 0;
}

// Bilinear interpolation along one axis: the two neighbouring rows (or
// columns) and their weights; `inside` is false outside [-1, size].
struct AxisSample {
    int64_t low, high;
    float weight_low, weight_high;
    bool inside;
};

VIDTRT_HD VIDTRT_FORCEINLINE AxisSample axis_sample(float v, int64_t size) {
    // Written as !(inside) so that NaN takes this branch before any integer cast.
    if (!(v >= -1.f && v <= static_cast<float>(size))) return AxisSample{0, 0, 0.f, 0.f, false};
    if (v <= 0.f) v = 0.f;
    int64_t low = static_cast<int64_t>(v);
    int64_t high;
    if (low >= size - 1) {
        low = high = size - 1;
        v = static_cast<float>(low);
    } else {
        high = low + 1;
    }
    const float frac = v - static_cast<float>(low);
    return AxisSample{low, high, 1.f - frac, frac, true};
}

// Samples per bin along one axis. A fixed sampling_ratio > 0 is used as it
// is. Otherwise torchvision's adaptive rule, ceil(roi_size / k) converted to
// int, where roi_size / k is the bin size computed by the same FP32
// expression. torchvision's conversion is undefined for NaN and for values
// outside int; here NaN gives 0 (no samples: the output is NaN, as for a
// zero-size RoI) and the rest is clamped to the int32 range, which only RoIs
// whose every bin holds 2^31 samples reach.
VIDTRT_HD VIDTRT_FORCEINLINE int64_t samples_per_bin(int sampling_ratio, float bin_size) {
    if (sampling_ratio > 0) return sampling_ratio;
    const float up = ceilf(bin_size);
    if (!(up == up)) return 0;
    if (up >= 2147483647.f) return 2147483647;
    if (up <= -2147483648.f) return -2147483648LL;
    return static_cast<int64_t>(up);
}

// Computes out[r, c, i, j] for element index e = ((r·C + c)·k + i)·k + j.
// A RoI whose batch index does not truncate into [0, N) gets zeros: the
// Python layer reports such input, and the device launcher cannot afford to
// (it would need the RoIs on the host), so the body only has to stay in bounds.
template <typename T, typename TRoi>
VIDTRT_HD void ps_roi_align_element(const Args<T, TRoi>& a, int64_t e) {
    using Num = NumTraits<T>;
    using RoiNum = NumTraits<TRoi>;
    const Shape& s = a.shape;
    const int k = s.output_size;
    const int64_t C = out_channels(s);
    const int64_t j = e % k;
    const int64_t i = (e / k) % k;
    const int64_t c = (e / (static_cast<int64_t>(k) * k)) % C;
    const int64_t r = e / (static_cast<int64_t>(k) * k * C);
    T* o = a.out + r * a.so.n + c * a.so.c + i * a.so.y + j * a.so.x;

    const TRoi* roi = a.rois + r * a.sr.r;
    const float batch = RoiNum::to_float(roi[0]);
    if (!(batch > -1.f && batch < static_cast<float>(s.N))) {
        *o = Num::from_float(0.f);
        return;
    }
    const int64_t n = static_cast<int64_t>(batch);  // truncation, like torchvision
    const float start_x = RoiNum::to_float(roi[1 * a.sr.col]) * s.spatial_scale - 0.5f;
    const float start_y = RoiNum::to_float(roi[2 * a.sr.col]) * s.spatial_scale - 0.5f;
    const float end_x = RoiNum::to_float(roi[3 * a.sr.col]) * s.spatial_scale - 0.5f;
    const float end_y = RoiNum::to_float(roi[4 * a.sr.col]) * s.spatial_scale - 0.5f;
    const float bin_w = (end_x - start_x) / static_cast<float>(k);
    const float bin_h = (end_y - start_y) / static_cast<float>(k);
    const float bin_x0 = static_cast<float>(j) * bin_w + start_x;
    const float bin_y0 = static_cast<float>(i) * bin_h + start_y;
    const int64_t grid_h = samples_per_bin(s.sampling_ratio, bin_h);
    const int64_t grid_w = samples_per_bin(s.sampling_ratio, bin_w);
    const float grid_h_f = static_cast<float>(grid_h);
    const float grid_w_f = static_cast<float>(grid_w);

    const int64_t channel = (c * k + i) * k + j;
    const T* plane = a.features + n * a.sf.n + channel * a.sf.c;
    float sum = 0.f;
    for (int64_t iy = 0; iy < grid_h; ++iy) {
        const float y = bin_y0 + (static_cast<float>(iy) + 0.5f) * bin_h / grid_h_f;
        const AxisSample sy = axis_sample(y, s.H);
        if (!sy.inside) continue;  // the row of samples contributes 0, still counted in the mean
        const T* row_low = plane + sy.low * a.sf.y;
        const T* row_high = plane + sy.high * a.sf.y;
        for (int64_t ix = 0; ix < grid_w; ++ix) {
            const float x = bin_x0 + (static_cast<float>(ix) + 0.5f) * bin_w / grid_w_f;
            const AxisSample sx = axis_sample(x, s.W);
            if (!sx.inside) continue;
            const float w1 = sy.weight_low * sx.weight_low;
            const float w2 = sy.weight_low * sx.weight_high;
            const float w3 = sy.weight_high * sx.weight_low;
            const float w4 = sy.weight_high * sx.weight_high;
            sum += w1 * Num::to_float(row_low[sx.low * a.sf.x]) + w2 * Num::to_float(row_low[sx.high * a.sf.x]) +
                   w3 * Num::to_float(row_high[sx.low * a.sf.x]) + w4 * Num::to_float(row_high[sx.high * a.sf.x]);
        }
    }
    // torchvision's count: the product of the two grids, whatever their signs
    // (0 samples over a count of 0 is NaN, over a negative count −0).
    *o = Num::from_float(sum / static_cast<float>(grid_h * grid_w));
}

}  // namespace ps_roi_align
}  // namespace vidtrt
