"""Position-sensitive RoI Align (R-FCN's position-sensitive pooling with RoI
Align sampling), with the semantics of torchvision.ops.ps_roi_align.

features [N, C·k·k, H, W] and rois [R, 5] = (batch, x1, y1, x2, y2) in image
coordinates give out [R, C, k, k] (k = output_size):

  start = (x1, y1)·spatial_scale − 0.5; bin = ((x2, y2)·spatial_scale − 0.5 − start) / k
      (no rounding and no minimum size: a RoI with x2 < x1 has negative bins)
  grid (gh, gw) = (s, s) for sampling_ratio s > 0; for s ≤ 0 torchvision's
      adaptive grid (ceil(bin_h), ceil(bin_w)), chosen per RoI
  sample (iy, ix) of bin (i, j): y = (i·bin_h + start_y) + ((iy + 0.5)·bin_h) / gh, x likewise with gw
  out[r, c, i, j] = (sum over the gh·gw samples of the bilinear value of
      features[trunc(batch), c·k·k + i·k + j] at (y, x)) / (gh·gw)

A sample with y outside [−1, H] or x outside [−1, W] contributes 0 — the
features there are not read, so an inf or NaN at the border does not leak into
it, as in torchvision — but still counts in gh·gw; inside that band, coordinates below 0 snap to 0 and those at
or past the last row/column snap to it.

Adaptive sampling follows torchvision to the letter, including what its
count does for a RoI of zero or negative extent on an axis: that axis has a
grid of ceil(bin) ≤ 0, no sample is taken, and torchvision divides 0 by
gh·gw — NaN when the product is 0 (a zero-size RoI), −0 when it is negative,
+0 when it is positive. (torchvision's roi_align clamps its count at 1; its
ps_roi_align does not.) A NaN RoI size, undefined behaviour in torchvision's
int conversion, gives a grid of 0 here.

Adaptive sampling runs eagerly only (reference and native). Exporting it is
refused: the number of samples per bin would depend on each RoI's size at
run time, while the ONNX function holds the samples of all RoIs in one tensor
[R, C, k, k, s, s] (one s for every RoI), and a bounded grid with masked
samples would have to allocate the largest grid any RoI may need — or give
other numbers than torchvision when a RoI needs more, which a graph cannot
report. A fixed ratio (2 is the usual choice) keeps the graph static; the
plugin refuses sampling_ratio ≤ 0 for the same reason, so a node means the
same with and without the plugin library.

The call follows torchvision's: rois may be a [R, 5] tensor or a list of
[K_i, 4] boxes per image (batch index = position in the list), output_size an
int or a pair (k, k) (the kernels pool square grids only), spatial_scale
defaults to 1.0 and sampling_ratio to −1 (adaptive). torchvision's
ps_roi_align has no ``aligned`` argument (it always applies the −0.5 shift),
so neither does this one. ``PSRoIAlign`` is the module form.

Batch indices must truncate into [0, N). The Python entry point checks them
in eager mode (one reduction over R values); the ONNX function and the fused
kernel, which cannot report errors, write zeros for such RoIs instead of
reading outside the features.

Three implementations that agree (tests/test_ps_roi_align.py holds the naive oracle):
  reference  vectorised PyTorch below (differentiable w.r.t. features)
  portable   the ONNX function ``vidtrt.PSRoIAlign`` (``onnx_function``), fixed grid only
  fused      plugins/ps_roi_align/ps_roi_align_kernel.h, host build via
             vidtrt._kernels and CUDA build inside the TensorRT plugin
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import onnx
import torch

from .. import _native
from .function_builder import FunctionBuilder
from .registry import CustomOp, DOMAIN, refuse_autograd, register, untraced

OP_TYPE = "PSRoIAlign"
PLUGIN_VERSION = "1"
_STORAGE_TYPES = (torch.float32, torch.float16)
# float64 runs only in the reference, for gradient checks.
_REFERENCE_TYPES = _STORAGE_TYPES + (torch.float64,)


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(d) for d in t.shape) + "]"


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def square_output_size(output_size) -> int:
    """k from an int or a pair (k, k), as torchvision takes it; ValueError otherwise."""
    if isinstance(output_size, (tuple, list)):
        if len(output_size) != 2 or not all(_is_int(v) for v in output_size):
            raise ValueError(f"ps_roi_align: output_size must be an int or a pair of ints (k, k), got {output_size!r}")
        if output_size[0] != output_size[1]:
            raise ValueError(
                f"ps_roi_align: output_size {tuple(output_size)} is not square; the kernel, the ONNX function and "
                "the plugin pool k×k bins (R-FCN's layout), so give (k, k) or k"
            )
        output_size = output_size[0]
    if not _is_int(output_size):
        raise ValueError(f"ps_roi_align: output_size must be an int or a pair of ints (k, k), got {type(output_size).__name__}")
    if output_size < 1:
        raise ValueError(f"ps_roi_align: output_size must be >= 1, got {output_size}")
    return int(output_size)


def roi_table(rois) -> torch.Tensor:
    """rois as the [R, 5] table: a tensor is returned as it is (check_inputs
    checks it); a list or tuple of [K_i, 4] boxes, one per image, becomes
    (i, x1, y1, x2, y2) rows in list order, as torchvision converts it."""
    if isinstance(rois, torch.Tensor) or not isinstance(rois, (list, tuple)):
        return rois
    for i, boxes in enumerate(rois):
        if not isinstance(boxes, torch.Tensor):
            raise ValueError(f"ps_roi_align: rois[{i}] must be a torch.Tensor [K, 4], got {type(boxes).__name__}")
        if boxes.dim() != 2 or boxes.shape[1] != 4:
            raise ValueError(
                f"ps_roi_align: a list of boxes holds one [K, 4] tensor (x1, y1, x2, y2) per image, "
                f"got rois[{i}] of shape {_shape(boxes)}"
            )
        if boxes.dtype != rois[0].dtype or boxes.device != rois[0].device:
            raise ValueError(
                f"ps_roi_align: the boxes of every image must have one dtype and device, got {rois[0].dtype} on "
                f"{rois[0].device} for rois[0] and {boxes.dtype} on {boxes.device} for rois[{i}]"
            )
    if len(rois) == 0:
        raise ValueError("ps_roi_align: rois is an empty list; give one [K, 4] tensor per image (K may be 0)")
    return torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(rois)], dim=0)


def check_inputs(features, rois, output_size: int, spatial_scale, sampling_ratio) -> None:
    """Raises ValueError (naming the argument and the shapes) for invalid input.

    output_size is k as ``square_output_size`` returns it; rois the [R, 5]
    table. Batch indices are checked separately (``check_batch_indices``):
    that reads the RoI values, which export must not do.
    """
    for name, t, rank, layout in (("features", features, 4, "[N, C*k*k, H, W]"), ("rois", rois, 2, "[R, 5]")):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"ps_roi_align: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != rank:
            raise ValueError(f"ps_roi_align: {name} must have rank {rank} {layout}, got shape {_shape(t)}")
    if rois.shape[1] != 5:
        raise ValueError(
            f"ps_roi_align: rois must have shape [R, 5] (batch_index, x1, y1, x2, y2), got shape {_shape(rois)}"
        )
    if not _is_int(sampling_ratio):
        raise ValueError(f"ps_roi_align: sampling_ratio must be an int, got {type(sampling_ratio).__name__}")
    if isinstance(spatial_scale, bool) or not isinstance(spatial_scale, numbers.Real):
        raise ValueError(f"ps_roi_align: spatial_scale must be a float, got {type(spatial_scale).__name__}")
    if not (math.isfinite(spatial_scale) and spatial_scale > 0):
        raise ValueError(f"ps_roi_align: spatial_scale must be finite and > 0, got {spatial_scale}")
    _, channels, h, w = features.shape
    kk = output_size * output_size
    if channels % kk != 0:
        raise ValueError(
            f"ps_roi_align: features channels must be a multiple of output_size**2 = {kk} (C*k*k), "
            f"got features {_shape(features)} with output_size {output_size}"
        )
    if h < 1 or w < 1:
        raise ValueError(f"ps_roi_align: features must have H >= 1 and W >= 1, got features {_shape(features)}")
    if features.dtype not in _REFERENCE_TYPES:
        raise ValueError(f"ps_roi_align: features must be float32 or float16, got {features.dtype}")
    # float16 RoIs widen exactly to float32; float32 RoIs next to float16
    # features stay float32 (FP16 coordinates are 1 px apart above 1024).
    if rois.dtype not in (torch.float16, torch.float32, features.dtype):
        raise ValueError(
            f"ps_roi_align: rois must be float16, float32 or the features' dtype ({features.dtype}), got {rois.dtype}"
        )
    if features.device != rois.device:
        raise ValueError(
            f"ps_roi_align: features and rois must be on one device, got {features.device} and {rois.device}"
        )


def check_batch_indices(rois: torch.Tensor, batch: int) -> None:
    """Raises ValueError unless every batch index truncates into [0, batch)."""
    if rois.shape[0] == 0:
        return
    index = rois[:, 0].double()  # exact for every accepted dtype, so no index rounds across a boundary
    bad = ~((index > -1) & (index < batch))  # NaN is bad too
    if bool(bad.any()):
        r = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"ps_roi_align: rois[{r}, 0] = {rois[r, 0].item()} is not a batch index of features with N = {batch} "
            f"(it must truncate into [0, {batch}))"
        )


def _axis_samples(start, bin_size, size: int, output_size: int, sampling_ratio: int):
    """Bilinear taps along one axis for every (RoI, bin, sample): [R, k, s] each.

    Returns the lower and upper row (or column) indices, their weights, and
    whether each sample lies inside [−1, size] (both weights are 0 outside).
    """
    dtype = start.dtype
    bins = torch.arange(output_size, dtype=dtype, device=start.device)
    offsets = torch.arange(sampling_ratio, dtype=dtype, device=start.device) + 0.5
    bin_start = bins[None, :] * bin_size[:, None] + start[:, None]  # [R, k]
    coord = bin_start[:, :, None] + (offsets[None, None, :] * bin_size[:, None, None]) / sampling_ratio
    inside = (coord >= -1) & (coord <= size)  # NaN is outside
    snapped = torch.where(inside, coord.clamp(min=0), torch.zeros_like(coord))
    low = snapped.floor()
    at_end = low >= size - 1
    last = torch.full_like(low, size - 1)
    high = torch.where(at_end, last, low + 1)
    low = torch.where(at_end, last, low)
    frac = torch.where(at_end, torch.zeros_like(snapped), snapped - low)
    return low.long(), high.long(), (1 - frac) * inside, frac * inside, inside


def adaptive_grid(bin_size: torch.Tensor) -> torch.Tensor:
    """torchvision's adaptive samples per bin along one axis, ceil(bin size)
    as an int64 per RoI (≤ 0 for a RoI of zero or negative extent); NaN gives
    0 and the rest is clamped to the int32 range, as in the kernel body."""
    up = torch.nan_to_num(torch.ceil(bin_size).double(), nan=0.0)
    return up.clamp(-(2.0**31), 2.0**31 - 1).to(torch.int64)


# The reference holds [R, C, k, k, gh, gw] indices and values for a block of
# RoIs at once; blocks of at most this many elements bound its memory.
_BLOCK_ELEMENTS = 1 << 24


def _pool(flat, channels, height, width, k, batch, start_y, start_x, bin_h, bin_w, grid_h: int, grid_w: int):
    """RoIs sharing one grid (grid_h, grid_w ≥ 1) → [R, C, k, k], vectorised."""
    y_low, y_high, wy_low, wy_high, inside_y = _axis_samples(start_y, bin_h, height, k, grid_h)
    x_low, x_high, wx_low, wx_high, inside_x = _axis_samples(start_x, bin_w, width, k, grid_w)

    # Flat index of plane (batch, c·k·k + i·k + j): [R, C, k, k, 1, 1].
    device = flat.device
    out_channels = channels // (k * k)
    channel = torch.arange(out_channels, device=device)[None, :] * (k * k) + batch[:, None] * channels  # [R, C]
    bin_index = torch.arange(k * k, device=device).view(k, k)
    plane = ((channel[:, :, None, None] + bin_index) * (height * width))[..., None, None]

    def rows(t):  # [R, k(i), gh(iy)] → [R, 1, k, 1, gh, 1]
        return t[:, None, :, None, :, None]

    def cols(t):  # [R, k(j), gw(ix)] → [R, 1, 1, k, 1, gw]
        return t[:, None, None, :, None, :]

    # An outside sample's snapped taps hold a weight of 0, but 0 · inf is NaN:
    # its contribution is masked to 0, not weighted.
    inside = rows(inside_y) & cols(inside_x)
    total = None
    for y_index, wy in ((y_low, wy_low), (y_high, wy_high)):
        for x_index, wx in ((x_low, wx_low), (x_high, wx_high)):
            # The in-plane offset and weight are [R, 1, k, k, gh, gw]: only the
            # plane broadcast to C channels is full size.
            value = flat[plane + (rows(y_index) * width + cols(x_index))] * (rows(wy) * cols(wx))
            value = torch.where(inside, value, 0.0)
            total = value if total is None else total + value
    return total.sum(dim=(4, 5)) / (grid_h * grid_w)


def ps_roi_align_reference(features, rois, output_size: int, spatial_scale: float, sampling_ratio: int):
    """Vectorised over RoIs, channels, bins and samples (no Python loop over RoIs).

    rois: the [R, 5] table. With a fixed sampling_ratio every RoI has one
    grid and blocks of RoIs hold [R, C, k, k, s, s] indices and values at
    once, like the ONNX function; adaptive sampling (≤ 0) groups the RoIs by
    their (gh, gw) and pools each group the same way. Differentiable w.r.t.
    features; the RoIs are constants (as in torchvision). Computes in FP32 for
    FP16 input, like the kernel.
    """
    compute = torch.float32 if features.dtype == torch.float16 else features.dtype
    f = features.to(compute)
    _, channels, height, width = f.shape
    k = output_size
    out_channels = channels // (k * k)
    r = rois.detach().to(compute)
    batch = r[:, 0].to(torch.int64)  # truncation toward zero, like the kernel
    corners = r[:, 1:5] * spatial_scale - 0.5  # x1, y1, x2, y2 in feature-map pixels
    start_x, start_y = corners[:, 0], corners[:, 1]
    bin_w = (corners[:, 2] - start_x) / k
    bin_h = (corners[:, 3] - start_y) / k
    flat = f.reshape(-1)

    if sampling_ratio > 0:
        groups = [((sampling_ratio, sampling_ratio), None)]
    else:
        grids = torch.stack([adaptive_grid(bin_h), adaptive_grid(bin_w)], dim=1)  # [R, 2]
        unique, which = torch.unique(grids, dim=0, return_inverse=True)
        groups = [(tuple(int(v) for v in grid), (which == g).nonzero().squeeze(1)) for g, grid in enumerate(unique)]

    parts, order = [f.new_zeros(0, out_channels, k, k)], []  # the empty part: R may be 0
    for (grid_h, grid_w), index in groups:
        geometry = [t if index is None else t[index] for t in (batch, start_y, start_x, bin_h, bin_w)]
        count = geometry[0].numel()
        if grid_h < 1 or grid_w < 1:
            # No samples: torchvision's 0 / (gh·gw), NaN for a count of 0 and −0 for a negative one.
            parts.append(f.new_zeros(count, out_channels, k, k) / float(grid_h * grid_w))
        else:
            block = max(1, _BLOCK_ELEMENTS // (out_channels * k * k * grid_h * grid_w or 1))
            for first in range(0, count, block):
                chunk = [t[first : first + block] for t in geometry]
                parts.append(_pool(flat, channels, height, width, k, *chunk, grid_h, grid_w))
        if index is not None:
            order.append(index)
    out = torch.cat(parts) if len(parts) > 2 else parts[-1]
    if order:
        # Groups come out in grid order; put every RoI back in its row.
        position = torch.empty_like(batch)
        position[torch.cat(order)] = torch.arange(batch.numel(), device=batch.device)
        out = out[position]
    return out.to(features.dtype)


def ps_roi_align_native(features, rois, output_size: int, spatial_scale: float, sampling_ratio: int, num_threads=0):
    """The fused kernel body, host build. CPU tensors, FP32 or FP16; rois the
    [R, 5] table, FP32 or the features' dtype. No autograd: refuses features
    that require grad while grad mode is on."""
    refuse_autograd("ps_roi_align", features=features)
    if features.device.type != "cpu":
        raise ValueError(f"ps_roi_align: impl='native' runs on the CPU, got tensors on {features.device}")
    if features.dtype not in _STORAGE_TYPES:
        raise ValueError(f"ps_roi_align: impl='native' takes float32 or float16 features, got {features.dtype}")
    f, r = features.detach(), rois.detach()  # the body takes any strides
    n, channels, h, w = f.shape
    k = output_size
    out = torch.empty((r.shape[0], channels // (k * k), k, k), dtype=f.dtype)
    _native.kernels().ps_roi_align_forward(
        str(f.dtype).removeprefix("torch."), str(r.dtype).removeprefix("torch."),
        f.data_ptr(), r.data_ptr(), out.data_ptr(),
        (n, channels, h, w, r.shape[0]), k, float(spatial_scale), sampling_ratio,
        f.stride(), r.stride(), out.stride(),
        num_threads,
    )  # fmt: skip
    return out


class _PSRoIAlignExport(torch.autograd.Function):
    """Used only while exporting: emits one vidtrt::PSRoIAlign node."""

    @staticmethod
    def forward(ctx, features, rois, output_size, spatial_scale, sampling_ratio):
        with untraced():
            return ps_roi_align_reference(features, rois, output_size, spatial_scale, sampling_ratio)

    @staticmethod
    def symbolic(g, features, rois, output_size, spatial_scale, sampling_ratio):
        out = g.op(
            f"{DOMAIN}::{OP_TYPE}",
            features,
            rois,
            output_size_i=output_size,
            spatial_scale_f=spatial_scale,
            sampling_ratio_i=sampling_ratio,
            plugin_version_s=PLUGIN_VERSION,
            plugin_namespace_s=DOMAIN,
        )
        # [R, C, k, k]: R and C as traced (dynamic_axes renames them), k fixed.
        feature_sizes = features.type().varyingSizes() or [None] * 4
        roi_sizes = rois.type().varyingSizes() or [None] * 2
        channels = feature_sizes[1]
        out_channels = None if channels is None else channels // (output_size * output_size)
        out.setType(features.type().with_sizes([roi_sizes[0], out_channels, output_size, output_size]))
        return out


IMPLEMENTATIONS = ("reference", "native")


@torch.fx.wrap  # one leaf node when torch.fx traces a module that calls it (PSRoIAlign below)
def ps_roi_align(
    features: torch.Tensor,
    rois,
    output_size,
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    impl: str = "reference",
) -> torch.Tensor:
    """Position-sensitive RoI Align: torchvision.ops.ps_roi_align, same
    arguments and defaults, plus ``impl``.

    features: [N, C·k·k, H, W] (float32 or float16; float64 on the reference
    only). rois: [R, 5] = (batch_index, x1, y1, x2, y2) in image coordinates,
    or a list of [K_i, 4] boxes per image; float16, float32 or the features'
    dtype. output_size: k or (k, k). sampling_ratio: samples per bin along
    each axis; ≤ 0 is torchvision's adaptive ceil(RoI size / k) per RoI
    (eager only: exporting it raises, see the module docstring). Returns
    [R, C, k, k] in the features' dtype.
    impl: "reference" (PyTorch, differentiable) or "native" (fused host kernel,
    no gradients).
    """
    k = square_output_size(output_size)
    rois = roi_table(rois)
    check_inputs(features, rois, k, spatial_scale, sampling_ratio)
    if rois.dtype == torch.float16 and features.dtype != torch.float16:
        rois = rois.to(torch.float32)  # exact; the kernel and the plugin take FP32 or the features' type
    scale, s = float(spatial_scale), int(sampling_ratio)
    if torch.onnx.is_in_onnx_export():
        if s <= 0:
            raise ValueError(
                f"ps_roi_align: sampling_ratio = {s} (torchvision's adaptive sampling, ceil(RoI size / k) samples "
                "per bin for each RoI) cannot be exported: a static graph needs one sample grid for every RoI, "
                "known when it is built. Export with a fixed sampling_ratio > 0 (2 is the usual choice)"
            )
        return _PSRoIAlignExport.apply(features, rois, k, scale, s)
    check_batch_indices(rois, features.shape[0])
    if impl == "reference":
        return ps_roi_align_reference(features, rois, k, scale, s)
    if impl == "native":
        return ps_roi_align_native(features, rois, k, scale, s)
    raise ValueError(f"ps_roi_align: impl must be one of {IMPLEMENTATIONS}, got {impl!r}")


class PSRoIAlign(torch.nn.Module):
    """The module form of ``ps_roi_align``, as torchvision.ops.PSRoIAlign."""

    def __init__(self, output_size, spatial_scale: float = 1.0, sampling_ratio: int = -1, impl: str = "reference"):
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.impl = impl

    def forward(self, features: torch.Tensor, rois) -> torch.Tensor:
        return ps_roi_align(features, rois, self.output_size, self.spatial_scale, self.sampling_ratio, impl=self.impl)

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, impl={self.impl!r}"
        )


def onnx_function(opset: int) -> onnx.FunctionProto:
    """Portable decomposition of vidtrt.PSRoIAlign into standard ONNX ops, for
    a fixed sampling_ratio ≥ 1 (the only kind exported: see the module docstring).

    Bilinear taps per axis are computed for every (RoI, bin, sample) as
    [R, k, s]; the four corner values of every (RoI, channel, bin, sample) are
    gathered from the flattened features with one flat index each
    ([R, C, k, k, s, s]), weighted, summed over the samples and divided by s².
    FP32 inside whatever the input type; N, H, W, R (and C) stay dynamic.
    """
    b = FunctionBuilder(OP_TYPE, ["features", "rois"], ["out"], ["output_size", "spatial_scale", "sampling_ratio"], opset)
    f32, i64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
    zero, one = b.const(0), b.const(1)

    def fconst(v):
        return b.const(v, dtype=np.float32)

    k = b.attr_int("output_size")
    grid = b.attr_int("sampling_ratio")
    scale = b.attr_float("spatial_scale")
    k_f, grid_f = b.op("Cast", k, to=f32), b.op("Cast", grid, to=f32)
    kk = b.op("Mul", k, k)

    shape = b.op("Shape", "features")
    n_batch, channels, height, width = (b.op("Gather", shape, b.const(i), axis=0) for i in range(4))
    out_channels = b.op("Div", channels, kk)

    rois = b.op("Cast", "rois", to=f32)

    def column(i):  # [R]
        return b.op("Gather", rois, b.const(i), axis=1)

    # Out-of-range batch indices read plane 0 and are zeroed below (the kernel
    # writes zeros for them too); Cast to int64 truncates toward zero.
    batch = column(0)
    in_batch = b.op("And", b.op("Greater", batch, fconst(-1.0)), b.op("Less", batch, b.op("Cast", n_batch, to=f32)))
    batch = b.op("Cast", b.op("Where", in_batch, batch, fconst(0.0)), to=i64)

    def image_to_map(i):
        return b.op("Sub", b.op("Mul", column(i), scale), fconst(0.5))

    start_x, start_y, end_x, end_y = (image_to_map(i) for i in (1, 2, 3, 4))
    bin_w = b.op("Div", b.op("Sub", end_x, start_x), k_f)
    bin_h = b.op("Div", b.op("Sub", end_y, start_y), k_f)
    bins = b.op("Cast", b.op("Range", zero, k, one), to=f32)  # [k]
    offsets = b.op("Add", b.op("Cast", b.op("Range", zero, grid, one), to=f32), fconst(0.5))  # [s]

    def axis_samples(start, bin_size, size):
        """Bilinear taps along one axis: rows/columns (int64) and weights, each [R, k, s]."""
        bin_start = b.op("Add", b.op("Mul", b.unsqueeze(bins, [0]), b.unsqueeze(bin_size, [1])), b.unsqueeze(start, [1]))
        step = b.op("Div", b.op("Mul", b.unsqueeze(offsets, [0, 1]), b.unsqueeze(bin_size, [1, 2])), grid_f)
        coord = b.op("Add", b.unsqueeze(bin_start, [2]), step)  # [R, k, s]
        size_f = b.op("Cast", size, to=f32)
        last = b.op("Sub", size_f, fconst(1.0))
        # GreaterOrEqual/LessOrEqual are false for NaN, so NaN samples are outside.
        inside = b.op("And", b.op("GreaterOrEqual", coord, fconst(-1.0)), b.op("LessOrEqual", coord, size_f))
        snapped = b.op("Where", inside, b.op("Max", coord, fconst(0.0)), fconst(0.0))
        low = b.op("Floor", snapped)
        at_end = b.op("GreaterOrEqual", low, last)
        high = b.op("Where", at_end, last, b.op("Add", low, fconst(1.0)))
        low = b.op("Where", at_end, last, low)
        frac = b.op("Where", at_end, fconst(0.0), b.op("Sub", snapped, low))
        inside_f = b.op("Cast", inside, to=f32)
        w_low = b.op("Mul", b.op("Sub", fconst(1.0), frac), inside_f)
        w_high = b.op("Mul", frac, inside_f)
        return b.op("Cast", low, to=i64), b.op("Cast", high, to=i64), w_low, w_high, inside

    y_low, y_high, wy_low, wy_high, inside_y = axis_samples(start_y, bin_h, height)
    x_low, x_high, wx_low, wx_high, inside_x = axis_samples(start_x, bin_w, width)

    # Flat index of plane (batch, c·k·k + i·k + j) → [R, C, k, k, 1, 1].
    channel = b.op(
        "Add",
        b.unsqueeze(b.op("Mul", batch, channels), [1]),  # [R, 1]
        b.unsqueeze(b.op("Mul", b.op("Range", zero, out_channels, one), kk), [0]),  # [1, C]
    )
    bin_index = b.reshape(b.op("Range", zero, kk, one), b.op("Concat", b.unsqueeze(k, [0]), b.unsqueeze(k, [0]), axis=0))
    plane = b.op("Add", b.unsqueeze(channel, [2, 3]), bin_index)  # [R, C, k, k]
    plane = b.unsqueeze(b.op("Mul", plane, b.op("Mul", height, width)), [4, 5])

    def rows(t):  # [R, k(i), s(iy)] → [R, 1, k, 1, s, 1]
        return b.unsqueeze(t, [1, 3, 5])

    def cols(t):  # [R, k(j), s(ix)] → [R, 1, 1, k, 1, s]
        return b.unsqueeze(t, [1, 2, 4])

    flat = b.reshape("features", [-1])
    inside = b.op("And", rows(inside_y), cols(inside_x))  # as in the reference: 0 · inf would be NaN
    total = None
    for y_index, wy in ((y_low, wy_low), (y_high, wy_high)):
        for x_index, wx in ((x_low, wx_low), (x_high, wx_high)):
            index = b.op("Add", plane, b.op("Add", b.op("Mul", rows(y_index), width), cols(x_index)))
            value = b.op("Cast", b.op("Gather", flat, index, axis=0), to=f32)
            value = b.op("Mul", value, b.op("Mul", rows(wy), cols(wx)))
            value = b.op("Where", inside, value, fconst(0.0))
            total = value if total is None else b.op("Add", total, value)
    out = b.op("Div", b.reduce_sum(total, [4, 5]), b.op("Mul", grid_f, grid_f))  # [R, C, k, k]
    out = b.op("Where", b.unsqueeze(in_batch, [1, 2, 3]), out, fconst(0.0))
    b.op("CastLike", out, "features", out="out")
    return b.build(doc=__doc__.split("\n\n")[0])


def example(dtype: torch.dtype = torch.float32, seed: int = 0):
    """An R-FCN head at reduced size: C=8 classes of 7×7 score maps (392 channels)
    on a stride-16 map of a 600×1000 image, 300 RoIs, 2×2 samples per bin."""
    g = torch.Generator().manual_seed(seed)
    k, image_h, image_w, stride = 7, 600, 1000, 16
    features = torch.randn(1, 8 * k * k, image_h // stride, image_w // stride, generator=g)
    centre = torch.rand(300, 2, generator=g) * torch.tensor([image_w, image_h])
    size = 16 + torch.rand(300, 2, generator=g) * 300
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=1)  # partly outside the image at the borders
    rois = torch.cat([torch.zeros(300, 1), boxes], dim=1)
    attrs = {"output_size": k, "spatial_scale": 1.0 / stride, "sampling_ratio": 2}
    return (features.to(dtype), rois.to(dtype)), attrs


def paper_problem(seed: int = 0):
    """R-FCN's classification head on ImageNet VID: 31 classes (30 + background)
    of 7×7 score maps on the stride-16 map of a 600×1000 image, 300 RoIs, 2×2
    samples per bin."""
    g = torch.Generator().manual_seed(seed)
    k, classes, image_h, image_w, stride, rois = 7, 31, 600, 1000, 16, 300
    features = torch.randn(1, classes * k * k, image_h // stride, image_w // stride, generator=g)
    centre = torch.rand(rois, 2, generator=g) * torch.tensor([image_w, image_h])
    size = 16 + torch.rand(rois, 2, generator=g) * 300
    table = torch.cat([torch.zeros(rois, 1), centre - size / 2, centre + size / 2], dim=1)
    attrs = {"output_size": k, "spatial_scale": 1.0 / stride, "sampling_ratio": 2}
    return (features, table), attrs, work((features, table), attrs)


def work(tensors, attrs) -> dict:
    """Per output: s×s samples × (4 corner weights·values + the sum) ≈ 9·s²
    FLOPs (s = sampling_ratio; 2 when adaptive); traffic: the 4 corners of
    each sample read once, the output written."""
    features, rois = tensors
    ratio = int(attrs["sampling_ratio"])
    samples = (ratio if ratio > 0 else 2) ** 2  # adaptive grids vary per RoI: counted as 2×2
    outputs = rois.shape[0] * features.shape[1]  # R · C·k·k
    size = features.element_size()
    return {"flops": 9.0 * samples * outputs, "bytes": float(size * outputs * (4 * samples + 1) + 4 * rois.numel())}


register(
    CustomOp(
        op_type=OP_TYPE,
        plugin_version=PLUGIN_VERSION,
        attributes=("output_size", "spatial_scale", "sampling_ratio"),
        build_function=onnx_function,
        function=ps_roi_align,
        input_names=("features", "rois"),
        output_names=("out",),
        example=example,
        work=work,
        paper_problem=paper_problem,
        # RoI coordinates need FP32 (FP16 spacing is 0.5 px at 1000 px) and the
        # plugin takes one type on all inputs, so FP16 graphs keep this op FP32.
        fp16=False,
    )
)
