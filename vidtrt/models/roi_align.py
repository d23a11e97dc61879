"""RoI Align (Mask R-CNN) from plain torch ops that trace to standard ONNX ops.

torchvision.ops.roi_align exports to ONNX ``RoiAlign``, which TensorRT's ONNX
parser turns into NVIDIA's stock ``ROIAlign_TRT`` plugin: TensorRT-RTX has no
such plugin, and standard TensorRT has it only with libnvinfer_plugin, which
vidtrt never loads. This version traces to Gather and element-wise arithmetic
only, so every exported stage builds with the core TensorRT-RTX layers.

Semantics are torchvision's (and mmcv's) for a fixed ``sampling_ratio > 0``.
With s = sampling_ratio, offset = 0.5 if aligned else 0 and for each RoI
(batch, x1, y1, x2, y2):

  start = (x1, y1)·spatial_scale − offset
  size  = (x2, y2)·spatial_scale − offset − start   (at least 1 when not aligned)
  bin   = size / (oh, ow)
  sample (iy, ix) of bin (i, j): y = (start_y + i·bin_h) + ((iy + 0.5)·bin_h) / s, x likewise
  out[r, c, i, j] = (Σ over the s² samples of the bilinear value at (y, x)) / s²

Bilinear value at y (x likewise): 0 if y < −1 or y > H; y is clamped at 0;
y_low = ⌊y⌋, y_high = y_low + 1, except that y_low ≥ H − 1 reads row H − 1
only. The batch index truncates toward zero. torchvision's adaptive sampling
(sampling_ratio ≤ 0: ⌈RoI size / bins⌉ samples) makes the number of samples
depend on each RoI at run time, which a static graph cannot follow.

Memory: every (sample, corner) pair is one Gather of C-channel rows from the
channels-last feature map, weighted and added to a running sum, so the largest
intermediate is [R, oh, ow, C] — one output's worth (241 MB for MFSA's 300
RoIs × 14×14 × 1024 channels in FP32), not s²·4 times that. Coordinates and
per-axis weights are [R, bins] (rank 2), which the FP16 conversion keeps in
FP32 (export/precision.py converts rank ≥ 3 tensors only); in an FP16 graph
the per-tap weights [R, oh, ow, 1] and the weighted sums are FP16.

Eager calls run the same arithmetic a block of RoIs at a time (cache-sized
running sums); at MFSA's scale on 2 CPU threads that takes about 0.8 s
against torchvision's kernel's 0.45 s, and at the test configs' scale both
take 1-2 ms, so the models use this function always: eager and exported
graphs compute the same thing.

A batch index that does not truncate into [0, N) raises in eager calls; in an
exported graph, which cannot raise, such a RoI reads zeros.
"""

from __future__ import annotations

import numbers

import torch

# Eager calls pool this many output elements (RoIs × oh × ow × C) at a time.
_EAGER_BLOCK = 1 << 21


def _pair(output_size) -> tuple[int, int]:
    if isinstance(output_size, numbers.Integral) and not isinstance(output_size, bool):
        size = (int(output_size), int(output_size))
    elif isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        size = tuple(output_size)
    else:
        raise ValueError(f"roi_align: output_size must be an int or a pair of ints, got {output_size!r}")
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in size):
        raise ValueError(f"roi_align: output_size must be positive, got {output_size!r}")
    return int(size[0]), int(size[1])


def check_inputs(features, rois, sampling_ratio, spatial_scale) -> None:
    if not isinstance(features, torch.Tensor) or features.dim() != 4:
        raise ValueError(f"roi_align: features must be a tensor [N, C, H, W], got {getattr(features, 'shape', features)}")
    if not isinstance(rois, torch.Tensor) or rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(
            f"roi_align: rois must be a tensor [R, 5] (batch_index, x1, y1, x2, y2), got {getattr(rois, 'shape', rois)}"
        )
    if not features.is_floating_point() or not rois.is_floating_point():
        raise ValueError(f"roi_align: features and rois must be floating point, got {features.dtype} and {rois.dtype}")
    if isinstance(sampling_ratio, bool) or not isinstance(sampling_ratio, numbers.Integral) or sampling_ratio < 1:
        raise ValueError(
            f"roi_align: sampling_ratio must be a positive int, got {sampling_ratio!r}; torchvision's adaptive "
            "sampling (<= 0) makes the number of samples depend on each RoI at run time"
        )
    if isinstance(spatial_scale, bool) or not isinstance(spatial_scale, numbers.Real) or not spatial_scale > 0:
        raise ValueError(f"roi_align: spatial_scale must be a positive float, got {spatial_scale!r}")


def _check_batch_indices(rois: torch.Tensor, batch: int) -> None:
    if rois.shape[0] == 0:
        return
    index = rois[:, 0].double()
    bad = ~((index > -1) & (index < batch))  # truncation toward zero lands in [0, batch); NaN is bad
    if bool(bad.any()):
        r = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"roi_align: rois[{r}, 0] = {rois[r, 0].item()} is not a batch index of features with N = {batch}"
        )


def _axis_taps(start, bin_size, sample: int, sampling_ratio: int, bins: int, size):
    """The two bilinear taps of sample ``sample`` of every bin along one axis.

    start, bin_size: [R]; size: the map's extent (a traced value when
    exporting, so H and W stay dynamic). Returns (low, high) indices (int64)
    and their weights, each [R, bins]; both weights are 0 outside [−1, size].
    """
    index = torch.arange(bins, dtype=start.dtype, device=start.device)
    coord = (start[:, None] + index[None, :] * bin_size[:, None]) + ((sample + 0.5) * bin_size[:, None]) / sampling_ratio
    inside = (coord >= -1) & (coord <= size)  # NaN is outside
    # Outside samples are moved to 0 so that their (zero-weighted) indices stay in range.
    clamped = torch.where(inside, coord.clamp(min=0), 0.0)
    last = size - 1
    # At or past the last row both taps read it, so their weights (summing to 1)
    # need not be changed to torchvision's (1, 0).
    low = clamped.floor().clamp(max=last)
    high = (low + 1).clamp(max=last)
    frac = clamped - low
    inside = inside.to(coord.dtype)
    return low.long(), high.long(), (1 - frac) * inside, frac * inside


def roi_align(features, rois, output_size, spatial_scale: float = 1.0, sampling_ratio: int = 2, aligned: bool = False):
    """features [N, C, H, W], rois [R, 5] (batch_index, x1, y1, x2, y2) → [R, C, oh, ow].

    torchvision.ops.roi_align's semantics for a fixed sampling_ratio > 0 (see
    the module docstring); output_size is an int or (oh, ow). Computes in FP32
    for FP16 input. Differentiable w.r.t. features; the RoIs are constants.
    """
    check_inputs(features, rois, sampling_ratio, spatial_scale)
    out_h, out_w = _pair(output_size)
    tracing = torch.jit.is_tracing()
    if not tracing:
        _check_batch_indices(rois, features.shape[0])
    compute = torch.float32 if features.dtype in (torch.float16, torch.bfloat16) else features.dtype
    f = features.to(compute)
    r = rois.detach().to(compute)
    # While tracing, these sizes are recorded as values of the graph (Shape → Gather).
    batch_size, channels, height, width = f.shape

    offset = 0.5 if aligned else 0.0
    corners = r[:, 1:5] * spatial_scale - offset  # x1, y1, x2, y2 in feature-map pixels
    start_x, start_y = corners[:, 0], corners[:, 1]
    roi_w, roi_h = corners[:, 2] - start_x, corners[:, 3] - start_y
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_w, bin_h = roi_w / out_w, roi_h / out_h

    batch = r[:, 0].to(torch.int64)  # truncation toward zero, as torchvision
    batch_ok = (batch >= 0) & (batch < batch_size)
    batch = torch.where(batch_ok, batch, torch.zeros_like(batch))
    batch_ok = batch_ok.to(compute)

    # Row (b·H + y)·W + x of the channels-last map holds the C values of pixel (y, x) of image b.
    pixels = f.permute(0, 2, 3, 1).reshape(-1, channels)  # [N·H·W, C]
    per_roi = (batch, batch_ok, start_y, start_x, bin_h, bin_w)
    rows = None if tracing else max(1, _EAGER_BLOCK // max(1, out_h * out_w * channels))
    if tracing or r.shape[0] <= rows:  # one pass (R is a dynamic extent of a traced graph)
        out = _pool(pixels, *per_roi, height, width, out_h, out_w, sampling_ratio)
    else:
        # The same arithmetic a block of RoIs at a time, so that the running sum
        # stays in cache: at MFSA's scale (300 RoIs, 14×14, C = 1024, 2 CPU
        # threads) 0.8 s instead of 3-8 s in one pass, torchvision's kernel 0.45 s.
        out = torch.cat(
            [
                _pool(pixels, *(t[i : i + rows] for t in per_roi), height, width, out_h, out_w, sampling_ratio)
                for i in range(0, r.shape[0], rows)
            ]
        )
    return out.to(features.dtype)


def _pool(pixels, batch, batch_ok, start_y, start_x, bin_h, bin_w, height, width, out_h: int, out_w: int, s: int):
    """RoI Align of the RoIs given by the per-RoI tensors ([R] each) → [R, C, oh, ow]."""
    x_taps = [_axis_taps(start_x, bin_w, ix, s, out_w, width) for ix in range(s)]
    total = None
    for iy in range(s):
        y_low, y_high, wy_low, wy_high = _axis_taps(start_y, bin_h, iy, s, out_h, height)
        for y_index, wy in ((y_low, wy_low), (y_high, wy_high)):
            row_base = ((batch[:, None] * height + y_index) * width)[:, :, None]  # [R, oh, 1]
            wy = (wy * batch_ok[:, None])[:, :, None]
            for x_low, x_high, wx_low, wx_high in x_taps:
                for x_index, wx in ((x_low, wx_low), (x_high, wx_high)):
                    weight = (wy * wx[:, None, :])[..., None]  # [R, oh, ow, 1]
                    value = pixels[row_base + x_index[:, None, :]]  # [R, oh, ow, C]
                    if total is None:
                        total = value * weight
                    elif torch.jit.is_tracing():
                        total = total + value * weight  # addcmul would export a Mul by 1 more
                    else:
                        total = torch.addcmul(total, value, weight)  # one pass over the sum, not two
    return (total / (s * s)).permute(0, 3, 1, 2).contiguous()  # [R, C, oh, ow]
