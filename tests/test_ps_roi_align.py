"""Position-sensitive RoI Align: reference, native (fused host kernel) and ONNX
graph (ONNX Runtime) against a naive loop written from the equations, and
against torchvision.ops.ps_roi_align; fixed and adaptive (sampling_ratio ≤ 0)
sampling; and the forward scenarios of torchvision's own PSRoIAlign tests
(test/test_ops.py), restated here against this API."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from op_tester import EAGER_IMPLS, IMPLS, OpTester
from torchvision.models.feature_extraction import get_graph_node_names

from vidtrt import _native
from vidtrt.ops import ps_roi_align
from vidtrt.ops.ps_roi_align import PSRoIAlign, ps_roi_align_native


def bilinear_naive(plane, y, x):
    """Bilinear value of a [H, W] plane at (y, x), float64.

    Zero outside the band [-1, H] × [-1, W] (NaN is outside); inside it,
    coordinates below 0 read row/column 0 and those at or beyond the last
    row/column read it.
    """
    height, width = plane.shape
    if not (-1.0 <= y <= height and -1.0 <= x <= width):
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = math.floor(y), math.floor(x)
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return (
        (1 - ly) * (1 - lx) * plane[y0, x0]
        + (1 - ly) * lx * plane[y0, x1]
        + ly * (1 - lx) * plane[y1, x0]
        + ly * lx * plane[y1, x1]
    )


def samples_per_bin(bin_size, sampling_ratio):
    """The fixed ratio, or torchvision's adaptive grid: the bin size rounded
    up (≤ 0 for a RoI of zero or negative extent; NaN, for which torchvision's
    int conversion is undefined, counts as 0)."""
    if sampling_ratio > 0:
        return sampling_ratio
    return 0 if math.isnan(bin_size) else math.ceil(bin_size)


def ps_roi_align_naive(features, rois, output_size, spatial_scale, sampling_ratio):
    """RoI by RoI, channel by channel, bin by bin, sample by sample, float64.

    The sum of a bin's samples is divided by gh·gw as torchvision divides it:
    with no samples (an adaptive grid ≤ 0), 0/0 is NaN and 0 over a negative
    count is −0."""
    k = output_size
    f = np.asarray(features, dtype=np.float64)

    rois = np.asarray(rois, dtype=np.float64)
    _, channels, _, _ = f.shape
    out_channels = channels // (k * k)
    out = np.zeros((len(rois), out_channels, k, k))
    for r, (batch, x1, y1, x2, y2) in enumerate(rois):
        n = int(batch)  # truncation toward zero
        # Pixel centres sit at integer coordinates, hence the half-pixel shift.
        start_x, start_y = x1 * spatial_scale - 0.5, y1 * spatial_scale - 0.5
        bin_w = (x2 * spatial_scale - 0.5 - start_x) / k
        bin_h = (y2 * spatial_scale - 0.5 - start_y) / k
        gh, gw = samples_per_bin(bin_h, sampling_ratio), samples_per_bin(bin_w, sampling_ratio)
        for c in range(out_channels):
            for i in range(k):
                for j in range(k):
                    plane = f[n, c * k * k + i * k + j]  # position-sensitive score map of bin (i, j)
                    total = 0.0
                    for iy in range(gh):  # no samples when gh ≤ 0
                        y = start_y + (i + (iy + 0.5) / gh) * bin_h
                        for ix in range(gw):
                            x = start_x + (j + (ix + 0.5) / gw) * bin_w
                            total += bilinear_naive(plane, y, x)
                    out[r, c, i, j] = math.nan if gh * gw == 0 else total / (gh * gw)
    return out


def random_problem(seed, n, c, k, h, w, r, spatial_scale, dtype=torch.float32, rois_dtype=torch.float32):
    """Features ~ N(0, 1); RoIs anywhere from well outside the image to inside,
    with widths and heights from negative (x2 < x1) to larger than the image,
    and fractional batch indices (they truncate)."""
    rng = np.random.default_rng(seed)
    features = torch.from_numpy(rng.standard_normal((n, c * k * k, h, w)).astype(np.float32))
    image = np.array([w, h]) / spatial_scale
    start = rng.uniform(-0.6, 1.4, (r, 2)) * image
    size = rng.uniform(-0.3, 1.2, (r, 2)) * image
    batch = rng.integers(0, n, (r, 1)) + rng.uniform(0.0, 0.9, (r, 1))
    rois = torch.from_numpy(np.concatenate([batch, start, start + size], axis=1).astype(np.float32))
    return features.to(dtype), rois.to(rois_dtype)


def torchvision_ps_roi_align(features, rois, k, spatial_scale, sampling_ratio):
    return torchvision.ops.ps_roi_align(features, rois.to(features.dtype), k, spatial_scale, sampling_ratio)


def attrs(output_size, spatial_scale, sampling_ratio):
    return dict(output_size=output_size, spatial_scale=spatial_scale, sampling_ratio=sampling_ratio)


problems = st.tuples(
    st.integers(1, 3),  # N
    st.integers(1, 3),  # C
    st.sampled_from([1, 3, 7]),  # k
    st.integers(1, 9),  # H
    st.integers(1, 9),  # W
    st.integers(0, 6),  # R
    st.sampled_from([1.0 / 16, 1.0 / 8, 1.0]),  # spatial_scale
    st.integers(1, 3),  # sampling_ratio
)

# FP32 arithmetic against the float64 oracle: sample coordinates differ by
# FP32 rounding (~1e-6 px), times feature slopes of a few units.
FP32_TOL = dict(rtol=1e-5, atol=2e-5)
# FP16 storage, FP32 inside: rounding the output to FP16 (half an ulp, ≤ 2^-11
# relative) plus the FP32 deviations above.
FP16_TOL = dict(rtol=1e-3, atol=1e-3)

# RoIs on a 5×7 map at spatial_scale 1/8 (a 40×56 image), N = 2.
SPECIAL_ROIS = {
    "inside": [0, 8, 4, 30, 28],
    "whole_image": [1, 0, 0, 56, 40],
    "partly_left_above": [1, -20, -12, 12, 9],
    "partly_right_below": [0, 40, 30, 80, 70],
    "wholly_right": [1, 100, 0, 140, 30],
    "wholly_above": [0, 0, -200, 30, -100],
    "reversed": [1, 30, 25, 10, 5],
    "zero_size": [0, 20, 20, 20, 20],
    "zero_width": [1, 16, 4, 16, 36],
    "one_pixel_at_corner": [0, 52, 36, 56, 40],
    "straddles_right_border": [1, 50, 10, 60, 20],
    "nan_corner": [0, float("nan"), 4, 30, 28],
}
ZERO_ROIS = {"wholly_right", "wholly_above", "nan_corner"}


@pytest.fixture(scope="module")
def special_problem():
    g = torch.Generator().manual_seed(3)
    features = torch.randn(2, 2 * 9, 5, 7, generator=g)
    rois = torch.tensor(list(SPECIAL_ROIS.values()), dtype=torch.float32)
    return features, rois


GOOD = dict(features=torch.zeros(2, 18, 5, 6), rois=torch.tensor([[1.0, 0, 0, 8, 8]]), output_size=3,
            spatial_scale=0.5, sampling_ratio=2)  # fmt: skip


class TestPSRoIAlign(OpTester):
    op_type = "PSRoIAlign"
    META_STANDS_IN_FOR_A_GPU = False  # the input checks read the batch indices first
    TOLERANCE = {torch.float32: FP32_TOL, torch.float16: FP16_TOL}
    DYNAMIC_AXES = {
        "features": {0: "N", 1: "channels", 2: "H", 3: "W"},
        "rois": {0: "R"},
        "out": {0: "R", 1: "C"},
    }
    GRAPH_DTYPES = (torch.float32, torch.float32)
    GRAPH_ATTRS = attrs(7, 1.0 / 16, 2)
    GRAPH_NODE_ATTRIBUTES = dict(output_size=7, spatial_scale=0.0625, sampling_ratio=2)
    GRAPH_OUTPUT_DIMS = ["R", "C", 7, 7]
    GOOD = GOOD
    BAD_INPUTS = [
        (dict(features=torch.zeros(18, 5, 6)), r"features must have rank 4 \[N, C\*k\*k, H, W\], got shape \[18, 5, 6\]"),
        (dict(rois=torch.zeros(5)), r"rois must have rank 2 \[R, 5\], got shape \[5\]"),
        (dict(rois=torch.zeros(3, 4)), r"rois must have shape \[R, 5\] .*got shape \[3, 4\]"),
        (dict(rois=torch.zeros(3, 6)), r"rois must have shape \[R, 5\] .*got shape \[3, 6\]"),
        (dict(features=torch.zeros(2, 17, 5, 6)), r"multiple of output_size\*\*2 = 9 .*features \[2, 17, 5, 6\]"),
        (dict(features=torch.zeros(2, 18, 0, 6)), r"H >= 1 and W >= 1, got features \[2, 18, 0, 6\]"),
        (dict(features=torch.zeros(2, 18, 5, 0)), r"H >= 1 and W >= 1, got features \[2, 18, 5, 0\]"),
        (dict(output_size=0), r"output_size must be >= 1, got 0"),
        (dict(output_size=(0, 0)), r"output_size must be >= 1, got 0"),
        (dict(output_size=(3, 4)), r"output_size \(3, 4\) is not square; the kernel, the ONNX function and the plugin pool k×k bins"),
        (dict(output_size=(3,)), r"output_size must be an int or a pair of ints \(k, k\), got \(3,\)"),
        (dict(output_size=(3, 3.0)), r"output_size must be an int or a pair of ints \(k, k\), got \(3, 3.0\)"),
        (dict(output_size=3.0), r"output_size must be an int or a pair of ints \(k, k\), got float"),
        (dict(sampling_ratio=2.0), r"sampling_ratio must be an int, got float"),
        (dict(sampling_ratio=True), r"sampling_ratio must be an int, got bool"),
        (dict(spatial_scale=0.0), r"spatial_scale must be finite and > 0, got 0.0"),
        (dict(spatial_scale=-0.5), r"spatial_scale must be finite and > 0, got -0.5"),
        (dict(spatial_scale=float("inf")), r"spatial_scale must be finite and > 0, got inf"),
        (dict(spatial_scale=float("nan")), r"spatial_scale must be finite and > 0, got nan"),
        (dict(spatial_scale="0.5"), r"spatial_scale must be a float, got str"),
        (dict(features=torch.zeros(2, 18, 5, 6, dtype=torch.int64)), r"features must be float32 or float16, got torch.int64"),
        (dict(rois=torch.zeros(1, 5, dtype=torch.float64)),
         r"rois must be float16, float32 or the features' dtype \(torch.float32\), got torch.float64"),
        (dict(features=torch.zeros(2, 18, 5, 6, dtype=torch.float16), rois=torch.zeros(1, 5, dtype=torch.bfloat16)),
         r"rois must be float16, float32 or the features' dtype \(torch.float16\)"),
        # torchvision's boxes: a list of [K, 4] per image, not [K, 5] rows
        (dict(rois=torch.zeros(2, 4)), r"rois must have shape \[R, 5\] .*got shape \[2, 4\]"),
        (dict(rois=[torch.zeros(2, 4), torch.zeros(1, 5)]), r"one \[K, 4\] tensor .* per image, got rois\[1\] of shape \[1, 5\]"),
        (dict(rois=[torch.zeros(2, 4), [0.0, 0, 1, 1]]), r"rois\[1\] must be a torch.Tensor \[K, 4\], got list"),
        (dict(rois=[torch.zeros(2, 4), torch.zeros(1, 4, dtype=torch.float16)]),
         r"the boxes of every image must have one dtype and device, got torch.float32 on cpu for rois\[0\] and torch.float16"),
        (dict(rois=[]), r"rois is an empty list"),
        (dict(rois=[torch.zeros(1, 4), torch.zeros(1, 4), torch.zeros(1, 4)]),
         r"rois\[2, 0\] = 2.0 is not a batch index of features with N = 2"),
        (dict(features=torch.zeros(2, 18, 5, 6, device="meta")), r"must be on one device, got meta and cpu"),
        (dict(rois=torch.tensor([[0.0, 0, 0, 8, 8], [2.0, 0, 0, 8, 8]])), r"rois\[1, 0\] = 2.0 is not a batch index of features with N = 2"),
        (dict(rois=torch.tensor([[2.0, 0, 0, 8, 8]])), r"rois\[0, 0\] = 2.0 is not a batch index of features with N = 2"),  # one RoI
        # two bad RoIs: the message names the first
        (dict(rois=torch.tensor([[0.0, 0, 0, 8, 8], [3.0, 0, 0, 8, 8], [-1.0, 0, 0, 8, 8]])),
         r"rois\[1, 0\] = 3.0 is not a batch index of features with N = 2"),
        (dict(rois=torch.tensor([[-1.5, 0, 0, 8, 8]])), r"rois\[0, 0\] = -1.5 is not a batch index of features with N = 2"),
        (dict(output_size=(4, 3)), r"output_size \(4, 3\) is not square"),
        (dict(rois=[torch.zeros(2, 4), torch.zeros(2, 4, 1)]), r"one \[K, 4\] tensor .* per image, got rois\[1\] of shape \[2, 4, 1\]"),
        (dict(rois=[torch.zeros(2, 4), torch.zeros(4)]), r"one \[K, 4\] tensor .* per image, got rois\[1\] of shape \[4\]"),
        (dict(features=torch.zeros(1, 2, 18, 5, 6)), r"features must have rank 4 \[N, C\*k\*k, H, W\], got shape \[1, 2, 18, 5, 6\]"),
        (dict(rois=torch.zeros(1, 1, 5)), r"rois must have rank 2 \[R, 5\], got shape \[1, 1, 5\]"),
        (dict(rois=np.zeros((1, 5), np.float32)), r"rois must be a torch.Tensor, got ndarray"),
        (dict(output_size=(3, 3, 3)), r"output_size must be an int or a pair of ints \(k, k\), got \(3, 3, 3\)"),
        (dict(rois=[torch.zeros(2, 4), torch.zeros(1, 4, device="meta")]),
         r"one dtype and device, got torch.float32 on cpu for rois\[0\] and torch.float32 on meta for rois\[1\]$"),
    ]  # fmt: skip
    NATIVE_FLOAT64_MESSAGE = r"impl='native' takes float32 or float16 features, got torch.float64"
    FLOAT64_INPUTS = ("features",)
    DIFFERENTIABLE_INPUTS = ("features",)  # the RoIs are constants, as in torchvision

    oracle = staticmethod(ps_roi_align_naive)

    def export_inputs(self, dtypes, attrs):
        # Exported at one shape and run at others: N, H, W, R and C are dynamic.
        k = attrs["output_size"]
        features = torch.randn(2, 2 * k * k, 6, 5).to(dtypes[0])
        rois = torch.tensor([[0.0, 1, 2, 30, 40], [1.0, 3, 4, 5, 6], [1.0, -9, 0, 7, 7]]).to(dtypes[1])
        return features, rois

    def check_graph(self, model, node, function):
        references = {
            (a.ref_attr_name, a.name, a.type) for n in function.node if n.op_type == "Constant" for a in n.attribute
            if a.ref_attr_name
        }  # fmt: skip
        assert references == {
            ("output_size", "value_int", onnx.AttributeProto.INT),
            ("sampling_ratio", "value_int", onnx.AttributeProto.INT),
            ("spatial_scale", "value_float", onnx.AttributeProto.FLOAT),
        }

    @pytest.mark.parametrize("impl", IMPLS)
    @settings(max_examples=60, deadline=None)
    @given(problem=problems, seed=st.integers(0, 2**31 - 1))
    def test_matches_naive_and_torchvision(self, impl, problem, seed, onnx_dir):
        n, c, k, h, w, r, scale, s = problem
        features, rois = random_problem(seed, n, c, k, h, w, r, scale)
        got = self.check(impl, features, rois, directory=onnx_dir, **attrs(k, scale, s))
        assert got.shape == (r, c, k, k)
        expected = torchvision_ps_roi_align(features, rois, k, scale, s)
        torch.testing.assert_close(got, expected, **FP32_TOL)

    @pytest.mark.parametrize("impl", IMPLS)
    @pytest.mark.parametrize("sampling_ratio", [1, 2, 3])
    def test_special_rois(self, impl, sampling_ratio, special_problem, onnx_dir):
        features, rois = special_problem
        got = self.run(impl, features, rois, directory=onnx_dir, **attrs(3, 1.0 / 8, sampling_ratio))
        expected = ps_roi_align_naive(features, rois, 3, 1.0 / 8, sampling_ratio)
        for r, name in enumerate(SPECIAL_ROIS):
            np.testing.assert_allclose(got[r].numpy(), expected[r], **FP32_TOL, err_msg=name)
            if name in ZERO_ROIS:
                assert torch.equal(got[r], torch.zeros_like(got[r])), name
            else:
                assert got[r].abs().sum() > 0, name  # the case really samples the map
        # torchvision 0.29's CPU kernel reads out of bounds for NaN coordinates
        # (its band test lets NaN through to the integer cast); its current source
        # treats NaN as outside, like all three layers here.
        finite = rois.isfinite().all(dim=1)
        expected_tv = torchvision_ps_roi_align(features, rois[finite], 3, 1.0 / 8, sampling_ratio)
        torch.testing.assert_close(got[finite], expected_tv, **FP32_TOL)

    @pytest.mark.parametrize("bad_index", [1.0, -1.0, float("nan")])
    def test_out_of_range_batch_index_on_a_single_image(self, bad_index, onnx_dir):
        """With N = 1 there is no other image to read in place of a bad index:
        the graph and the kernel body read image 0 and write zeros."""
        features, rois = random_problem(32, 1, 2, 3, 5, 6, 3, 0.25)
        good = ps_roi_align(features, rois, 3, 0.25, 2)
        rois[1, 0] = bad_index
        for fused in (False, True) if "onnx-fused" in IMPLS else (False,):
            got = self.run_onnx(features, rois, directory=onnx_dir, fused=fused, **attrs(3, 0.25, 2))
            assert torch.equal(got[1], torch.zeros_like(got[1]))
            torch.testing.assert_close(got[[0, 2]], good[[0, 2]], **FP32_TOL)

    @pytest.mark.parametrize("impl", IMPLS)
    def test_outside_samples_read_nothing(self, impl, onnx_dir):
        """The map's border rows and columns hold ±inf and NaN; each RoI has
        samples past one border (outside the band: they contribute 0) and the
        rest on interior rows and columns. Every output is finite, as the
        naive loop and torchvision give it; weighting a snapped border tap by
        0 instead would give 0 · inf = NaN."""
        features = torch.randn(1, 2 * 4, 8, 9, generator=torch.Generator().manual_seed(31))
        features[..., 0, :], features[..., -1, :] = float("inf"), float("-inf")
        features[..., :, 0], features[..., :, -1] = float("nan"), float("inf")
        rois = torch.tensor([
            [0, 2, -13, 5, 5],  # above: samples at y −11.25, −6.75, −2.25 and 2.25
            [0, 2, 3.5, 5, 23.5],  # below: 5.5 inside, 10.5 and past it outside (H = 8)
            [0, -13, 2, 5, 5],  # left
            [0, 4, 2, 22, 5],  # right (W = 9)
            [0, 30, 30, 40, 40],  # wholly outside
        ])  # fmt: skip
        got = self.run(impl, features, rois, directory=onnx_dir, **attrs(2, 1.0, 2))
        expected = ps_roi_align_naive(features, rois, 2, 1.0, 2)
        assert np.isfinite(expected).all() and got.isfinite().all()
        np.testing.assert_allclose(got.numpy(), expected, **FP32_TOL)
        torch.testing.assert_close(got, torchvision_ps_roi_align(features, rois, 2, 1.0, 2), **FP32_TOL)
        assert torch.equal(got[4], torch.zeros(2, 2, 2))

    @pytest.mark.parametrize("impl", IMPLS)
    def test_sampling_band_edges(self, impl, onnx_dir):
        """k = s = 1 and scale 1 put the only sample at the RoI's centre − 0.5; the
        values below are exact in FP32. A sample at exactly −1 or exactly W (H)
        reads the border column (row); a quarter pixel further out reads nothing."""
        h, w = 4, 6
        features = torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w) + 1
        y_mid = [1.0, 3.0]  # sample row 1.5
        rois = torch.tensor(
            [
                [0, -1.0, y_mid[0], 0.0, y_mid[1]],  # x = -1
                [0, -1.25, y_mid[0], -0.25, y_mid[1]],  # x = -1.25
                [0, w, y_mid[0], w + 1.0, y_mid[1]],  # x = W
                [0, w + 0.25, y_mid[0], w + 1.25, y_mid[1]],  # x = W + 0.25
                [0, 2.0, -1.0, 3.0, 0.0],  # y = -1, x = 2
                [0, 2.0, h, 3.0, h + 1.0],  # y = H, x = 2
                [0, 2.0, h + 0.25, 3.0, h + 1.25],  # y = H + 0.25
            ]
        )
        row = lambda y: features[0, 0, y]  # noqa: E731
        between = lambda col: 0.5 * (features[0, 0, 1, col] + features[0, 0, 2, col])  # noqa: E731
        expected = torch.stack([between(0), torch.tensor(0.0), between(w - 1), torch.tensor(0.0), row(0)[2],
                                row(h - 1)[2], torch.tensor(0.0)])  # fmt: skip
        got = self.run(impl, features, rois, directory=onnx_dir, **attrs(1, 1.0, 1)).flatten()
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        torch.testing.assert_close(got, torchvision_ps_roi_align(features, rois, 1, 1.0, 1).flatten(), rtol=0, atol=0)

    @pytest.mark.parametrize("impl", IMPLS)
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
    def test_empty_roi_set(self, impl, dtype, onnx_dir):
        features = torch.randn(2, 3 * 9, 5, 4).to(dtype)
        rois = torch.zeros(0, 5, dtype=dtype)
        got = self.run(impl, features, rois, directory=onnx_dir, **attrs(3, 0.5, 2))
        assert got.shape == (0, 3, 3, 3) and got.dtype == dtype

    @pytest.mark.parametrize("impl", IMPLS)
    def test_batch_index_truncates(self, impl, onnx_dir):
        features, rois = random_problem(5, 3, 2, 3, 6, 6, 4, 0.5)
        rois[:, 0] = torch.tensor([-0.75, 0.999, 1.5, 2.9])  # → 0, 0, 1, 2
        got = self.check(impl, features, rois, directory=onnx_dir, **attrs(3, 0.5, 2))
        assert not torch.equal(got[1], got[2])

    @pytest.mark.parametrize("bad_index", [2.0, -1.0, float("nan"), 1e9])
    def test_out_of_range_batch_index(self, bad_index, onnx_dir):
        """The Python entry point refuses it; the graph and the kernel body, which
        cannot raise, write zeros for that RoI and leave the others alone."""
        features, rois = random_problem(9, 2, 2, 3, 5, 6, 3, 0.25)
        good = ps_roi_align(features, rois, 3, 0.25, 2)
        rois[1, 0] = bad_index
        for impl in ("reference", "native"):
            with pytest.raises(ValueError, match=r"rois\[1, 0\] = .* is not a batch index of features with N = 2"):
                ps_roi_align(features, rois, 3, 0.25, 2, impl=impl)

        out = torch.full_like(good, 7.0)
        _native.kernels().ps_roi_align_forward(
            "float32", "float32", features.data_ptr(), rois.data_ptr(), out.data_ptr(), (2, 18, 5, 6, 3), 3, 0.25, 2,
            features.stride(), rois.stride(), out.stride(),
        )  # fmt: skip
        from_graph = self.run_onnx(features, rois, directory=onnx_dir, **attrs(3, 0.25, 2))
        for got in (out, from_graph):
            assert torch.equal(got[1], torch.zeros_like(got[1]))
            torch.testing.assert_close(got[[0, 2]], good[[0, 2]], **FP32_TOL)

    @pytest.mark.parametrize("impl", IMPLS)
    @settings(max_examples=30, deadline=None)
    @given(problem=problems, seed=st.integers(0, 2**31 - 1), rois_dtype=st.sampled_from([torch.float16, torch.float32]))
    def test_fp16(self, impl, problem, seed, rois_dtype, onnx_dir):
        """Against the float64 oracle evaluated on the same FP16-rounded inputs."""
        n, c, k, h, w, r, scale, s = problem
        features, rois = random_problem(seed, n, c, k, h, w, r, scale, dtype=torch.float16, rois_dtype=rois_dtype)
        got = self.check(impl, features, rois, directory=onnx_dir, **attrs(k, scale, s))
        assert got.dtype == torch.float16 and got.shape == (r, c, k, k)

    def test_native_accepts_any_layout(self):
        features, rois = random_problem(4, 2, 3, 3, 7, 8, 5, 0.5)
        expected = ps_roi_align(features, rois, 3, 0.5, 2, impl="native")
        channels_last = features.contiguous(memory_format=torch.channels_last)
        wide = torch.zeros(5, 9)
        wide[:, 2:7] = rois
        column_major = rois.t().contiguous().t()
        for f, r in ((channels_last, rois), (features, wide[:, 2:7]), (features, column_major)):
            assert not (f.is_contiguous() and r.is_contiguous())
            torch.testing.assert_close(ps_roi_align(f, r, 3, 0.5, 2, impl="native"), expected, rtol=0, atol=0)

    def test_native_thread_count_does_not_change_results(self):
        features, rois = random_problem(6, 1, 4, 3, 9, 9, 7, 0.5)
        self.assert_thread_count_invariant(ps_roi_align_native, features, rois, 3, 0.5, 2)

    def test_reference_gradcheck(self):
        features, rois = random_problem(1, 2, 2, 2, 4, 5, 4, 0.5)
        features = features.double().requires_grad_()
        assert torch.autograd.gradcheck(lambda f: ps_roi_align(f, rois, 2, 0.5, 2), (features,))

    def test_reference_gradient_matches_torchvision(self):
        """An independent backward: torchvision's hand-written one (float64)."""
        features, rois = random_problem(2, 2, 3, 3, 6, 7, 6, 0.25)
        grad_out = torch.randn(6, 3, 3, 3, dtype=torch.float64)
        ours = features.double().requires_grad_()
        theirs = features.double().requires_grad_()
        (ps_roi_align(ours, rois.double(), 3, 0.25, 2) * grad_out).sum().backward()
        (torchvision.ops.ps_roi_align(theirs, rois.double(), 3, 0.25, 2) * grad_out).sum().backward()
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-12, atol=1e-12)
        assert ours.grad.abs().sum() > 0

    def test_kernel_library_refuses_what_python_would(self):
        """The binding's own checks, for callers that skip the Python layer."""
        f, r = GOOD["features"], GOOD["rois"]
        out = torch.empty(1, 2, 3, 3)
        call = self.binding(
            "ps_roi_align_forward", features_dtype="float32", rois_dtype="float32", features=f.data_ptr(),
            rois=r.data_ptr(), out=out.data_ptr(), shape=(2, 18, 5, 6, 1), output_size=3, spatial_scale=0.5,
            sampling_ratio=2, features_strides=f.stride(), rois_strides=r.stride(), out_strides=out.stride(),
        )  # fmt: skip
        call()
        torch.testing.assert_close(out, torch.zeros_like(out))
        for bad in (dict(output_size=4), dict(spatial_scale=0.0), dict(spatial_scale=math.inf),
                    dict(shape=(2, 18, 0, 6, 1))):  # fmt: skip
            with pytest.raises(ValueError, match="ps_roi_align: invalid shape or attribute"):
                call(**bad)
        with pytest.raises(ValueError, match="ps_roi_align: unsupported dtype"):
            call(features_dtype="float32", rois_dtype="float16")

    # ---- adaptive sampling (sampling_ratio ≤ 0): eager layers only

    @pytest.mark.parametrize("impl", EAGER_IMPLS)
    @settings(max_examples=60, deadline=None)
    @given(problem=problems, seed=st.integers(0, 2**31 - 1), sampling_ratio=st.sampled_from([0, -1, -7]))
    def test_adaptive_matches_naive_and_torchvision(self, impl, problem, seed, sampling_ratio):
        """Every sampling_ratio ≤ 0 is the adaptive grid. The random RoIs
        include reversed ones (a grid ≤ 0: NaN or ±0, as torchvision gives)."""
        n, c, k, h, w, r, scale, _ = problem
        features, rois = random_problem(seed, n, c, k, h, w, r, scale)
        got = self.check(impl, features, rois, directory=None, **attrs(k, scale, sampling_ratio))
        expected = torchvision_ps_roi_align(features, rois, k, scale, sampling_ratio)
        torch.testing.assert_close(got, expected, **FP32_TOL, equal_nan=True)
        # Where no sample is taken the result is exactly torchvision's, sign of zero included.
        empty = (expected == 0) | expected.isnan()
        assert torch.equal(got[empty].signbit() | got[empty].isnan(), expected[empty].signbit() | expected[empty].isnan())

    @pytest.mark.parametrize("impl", EAGER_IMPLS)
    @settings(max_examples=20, deadline=None)
    @given(problem=problems, seed=st.integers(0, 2**31 - 1), rois_dtype=st.sampled_from([torch.float16, torch.float32]))
    def test_adaptive_fp16(self, impl, problem, seed, rois_dtype):
        n, c, k, h, w, r, scale, _ = problem
        features, rois = random_problem(seed, n, c, k, h, w, r, scale, dtype=torch.float16, rois_dtype=rois_dtype)
        got = self.check(impl, features, rois, directory=None, **attrs(k, scale, -1))
        assert got.dtype == torch.float16

    @pytest.mark.parametrize("impl", EAGER_IMPLS)
    def test_adaptive_special_rois(self, impl, special_problem):
        """Per RoI grids on the special RoIs plus three reversed ones. A grid of
        0 on an axis (zero extent, or reversed by less than k map pixels)
        makes torchvision's count 0 and the output NaN; reversed by k pixels
        or more on one axis makes the count negative (−0), on both positive
        (+0). A NaN corner gives NaN here (torchvision's integer conversion of
        NaN is undefined)."""
        features, rois = special_problem
        scale = 1.0 / 8
        extra = {  # 3 × 3 bins at scale 1/8: reversed by 64 image px = 8 map px gives a grid of ceil(-8/3) = -2
            "reversed_far_both": [0, 40, 30, -24, -34],
            "reversed_far_x": [1, 40, 4, -24, 28],
            "reversed_far_y": [0, 8, 30, 30, -34],
        }
        rois = torch.cat([rois, torch.tensor(list(extra.values()))])
        names = list(SPECIAL_ROIS) + list(extra)
        got = ps_roi_align(features, rois, 3, scale, -1, impl=impl)
        expected = ps_roi_align_naive(features, rois, 3, scale, -1)
        for r, name in enumerate(names):
            np.testing.assert_allclose(got[r].numpy(), expected[r], **FP32_TOL, err_msg=name)

        def row(name):
            return got[names.index(name)]

        for name in ("zero_size", "zero_width", "reversed", "nan_corner"):
            assert row(name).isnan().all(), name
        assert torch.equal(row("reversed_far_both"), torch.zeros(2, 3, 3)) and not row("reversed_far_both").signbit().any()
        for name in ("reversed_far_x", "reversed_far_y"):
            assert torch.equal(row(name), torch.zeros(2, 3, 3)) and row(name).signbit().all(), name
        for name in ("inside", "whole_image", "partly_left_above", "one_pixel_at_corner"):
            assert row(name).isfinite().all() and row(name).abs().sum() > 0, name
        finite = rois.isfinite().all(dim=1)
        tv = torchvision_ps_roi_align(features, rois[finite], 3, scale, -1)
        torch.testing.assert_close(got[finite], tv, **FP32_TOL, equal_nan=True)
        assert torch.equal(got[finite].signbit() | got[finite].isnan(), tv.signbit() | tv.isnan())

    def test_adaptive_grid_is_per_roi_and_per_axis(self):
        """One RoI 6 map pixels tall and 3 wide at k = 2: the adaptive grid is
        3 × 2 (no fixed ratio gives it) and differs from the 2 × 2 a neighbour
        in the same call needs; that neighbour equals a fixed-ratio call."""
        features = torch.randn(1, 4, 12, 12, generator=torch.Generator().manual_seed(2))
        tall = torch.tensor([[0.0, 2.5, 1.5, 5.5, 7.5]])  # start (2, 1), height 6 and width 3 map pixels
        square = torch.tensor([[0.0, 1.5, 1.5, 5.5, 5.5]])  # 4 × 4: grid 2 × 2
        both = torch.cat([tall, square])
        for impl in EAGER_IMPLS:
            got = ps_roi_align(features, both, 2, 1.0, -1, impl=impl)
            torch.testing.assert_close(got[1:], ps_roi_align(features, square, 2, 1.0, 2, impl=impl), rtol=0, atol=0)
            np.testing.assert_allclose(got[:1].numpy(), ps_roi_align_naive(features, tall, 2, 1.0, -1), **FP32_TOL)
            for fixed in (1, 2, 3):
                assert not torch.allclose(got[:1], ps_roi_align(features, tall, 2, 1.0, fixed, impl=impl)), fixed

    def test_adaptive_zero_and_negative_are_the_same_grid(self):
        features, rois = random_problem(8, 2, 2, 3, 9, 9, 6, 0.5)
        for impl in EAGER_IMPLS:
            zero = ps_roi_align(features, rois, 3, 0.5, 0, impl=impl)
            torch.testing.assert_close(ps_roi_align(features, rois, 3, 0.5, -1, impl=impl), zero, rtol=0, atol=0, equal_nan=True)

    def test_adaptive_empty_roi_set(self):
        features = torch.randn(1, 9, 4, 4)
        for impl in EAGER_IMPLS:
            assert ps_roi_align(features, torch.zeros(0, 5), 3, impl=impl).shape == (0, 1, 3, 3)

    def test_adaptive_reference_gradient_matches_torchvision(self):
        features, rois = random_problem(12, 2, 2, 3, 7, 8, 5, 0.5)
        rois = rois[(rois[:, 3] > rois[:, 1]) & (rois[:, 4] > rois[:, 2])]  # a NaN output has a NaN gradient
        assert len(rois) > 0
        grad_out = torch.randn(len(rois), 2, 3, 3, dtype=torch.float64)
        ours = features.double().requires_grad_()
        theirs = features.double().requires_grad_()
        (ps_roi_align(ours, rois.double(), 3, 0.5, -1) * grad_out).sum().backward()
        (torchvision.ops.ps_roi_align(theirs, rois.double(), 3, 0.5, -1) * grad_out).sum().backward()
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-12, atol=1e-12)

    @pytest.mark.parametrize("sampling_ratio", [0, -1])
    def test_adaptive_export_is_refused(self, sampling_ratio, onnx_dir):
        """A static graph cannot follow a per-RoI grid: export says so and why."""
        with pytest.raises(ValueError, match=rf"ps_roi_align: sampling_ratio = {sampling_ratio} \(torchvision's adaptive "
                                             r"sampling.*cannot be exported.*fixed sampling_ratio > 0"):  # fmt: skip
            self.export_path(onnx_dir, (torch.float32, torch.float32), attrs(3, 0.5, sampling_ratio))

    def test_kernel_library_adaptive_binding(self):
        """The binding takes sampling_ratio ≤ 0 as the adaptive grid too."""
        features, rois = random_problem(10, 2, 2, 3, 6, 7, 4, 0.5)
        out = torch.empty(4, 2, 3, 3)
        _native.kernels().ps_roi_align_forward(
            "float32", "float32", features.data_ptr(), rois.data_ptr(), out.data_ptr(), (2, 18, 6, 7, 4), 3, 0.5, -1,
            features.stride(), rois.stride(), out.stride(), 1,
        )  # fmt: skip
        torch.testing.assert_close(out, ps_roi_align(features, rois, 3, 0.5, -1), rtol=0, atol=0, equal_nan=True)

    # ---- the call as torchvision takes it

    @pytest.mark.parametrize("impl", IMPLS)
    def test_boxes_list_equals_roi_table(self, impl, onnx_dir):
        """A list of [K_i, 4] boxes per image (K_i may be 0) is the table with
        the batch index i in front; torchvision agrees."""
        features, _ = random_problem(11, 3, 2, 3, 6, 7, 0, 0.5)
        g = torch.Generator().manual_seed(4)
        boxes = [torch.rand(3, 4, generator=g) * 10, torch.zeros(0, 4), torch.rand(2, 4, generator=g) * 10]
        table = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], dim=1) for i, b in enumerate(boxes)])
        expected = ps_roi_align(features, table, 3, 0.5, 2)
        if impl in ("onnx", "onnx-fused"):  # the list is converted by traced ops in front of the node
            module = PSRoIAlign((3, 3), 0.5, 2)
            path = onnx_dir / "ps_roi_align_boxes_list.onnx"
            from vidtrt.export.onnx import export_module

            export_module(module, (features, boxes), path, ["features", "boxes0", "boxes1", "boxes2"], ["out"],
                          {"features": {0: "N", 2: "H", 3: "W"}, "boxes0": {0: "K0"}, "boxes2": {0: "K2"}})  # fmt: skip
            from vidtrt.runtime.backends import onnxruntime_fused_ops as fused_ops

            session = fused_ops.create_session(path, custom_ops="fused" if impl == "onnx-fused" else "decomposed")
            feeds = {"features": features.numpy(), **{f"boxes{i}": b.numpy() for i, b in enumerate(boxes)}}
            got = torch.from_numpy(session.run(None, feeds)[0])
        else:
            got = ps_roi_align(features, boxes, (3, 3), 0.5, 2, impl=impl)
        torch.testing.assert_close(got, expected, **FP32_TOL)
        torch.testing.assert_close(got, torchvision.ops.ps_roi_align(features, boxes, 3, 0.5, 2), **FP32_TOL)

    def test_defaults_and_module_form_are_torchvision_s(self):
        features, rois = random_problem(13, 2, 2, 3, 8, 8, 5, 1.0)
        expected = torchvision.ops.ps_roi_align(features, rois, 3)  # spatial_scale 1.0, sampling_ratio -1
        torch.testing.assert_close(ps_roi_align(features, rois, 3), expected, **FP32_TOL, equal_nan=True)
        module = PSRoIAlign(3, spatial_scale=0.5, sampling_ratio=2, impl="native")
        assert "sampling_ratio=2" in repr(module) and "impl='native'" in repr(module)
        torch.testing.assert_close(module(features, rois), torchvision.ops.PSRoIAlign(3, 0.5, 2)(features, rois),
                                   **FP32_TOL)  # fmt: skip

    # ---- torchvision's PSRoIAlign forward scenarios (its test/test_ops.py),
    # restated: its device axis is our layer axis (reference, native); the
    # ONNX layer refuses them all, since they sample adaptively (see above).

    TV_POOL = 5  # 5 × 5 bins, 2 output channels: 50 channels, 10 × 10 maps, 2 images

    def tv_problem(self, dtype, rois_dtype, contiguous):
        g = torch.Generator().manual_seed(0)
        channels = 2 * self.TV_POOL**2
        features = torch.rand(2, channels, 10, 10, generator=g).to(dtype)
        if not contiguous:
            features = features.permute(0, 1, 3, 2)  # a transposed view
            assert not features.is_contiguous()
        # Whole map of image 0, its lower-left and lower-right parts, whole map of image 1
        # (x1, y1, x2, y2 in map pixels; spatial_scale 1).
        rois = torch.tensor([[0, 0, 0, 9, 9], [0, 0, 5, 4, 9], [0, 5, 5, 9, 9], [1, 0, 0, 9, 9]], dtype=rois_dtype)
        return features, rois

    @pytest.mark.parametrize("impl", EAGER_IMPLS)
    @pytest.mark.parametrize("contiguous", [True, False])
    @pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64], ids=str)
    def test_torchvision_forward(self, impl, contiguous, dtype):
        """(pool_h, pool_w) as a pair, spatial_scale 1 and sampling_ratio −1
        (adaptive), RoIs of the features' dtype, against the float64 loop at
        torchvision's tolerances (1e-5; 4e-3 in FP16). float64 is for the
        reference only: the fused kernel stores FP32 or FP16 and refuses it."""
        features, rois = self.tv_problem(dtype, dtype, contiguous)
        if impl == "native" and dtype == torch.float64:
            with pytest.raises(ValueError, match=self.NATIVE_FLOAT64_MESSAGE):
                ps_roi_align(features, rois, (5, 5), spatial_scale=1, sampling_ratio=-1, impl=impl)
            return
        got = ps_roi_align(features, rois, (self.TV_POOL, self.TV_POOL), spatial_scale=1, sampling_ratio=-1, impl=impl)
        assert got.dtype == features.dtype and got.shape == (4, 2, 5, 5)
        tol = 4e-3 if dtype == torch.float16 else 1e-5
        expected = ps_roi_align_naive(features.double(), rois.double(), 5, 1.0, -1)
        np.testing.assert_allclose(got.double().numpy(), expected, rtol=tol, atol=tol)
        # torchvision's FP16 CPU kernel rounds intermediates to FP16; ours computes in FP32.
        torch.testing.assert_close(got, torchvision.ops.ps_roi_align(features, rois, 5), rtol=tol, atol=tol)

    def test_float64_rois_keep_their_precision(self):
        """float64 features with float64 RoIs: the reference reads the corners
        in float64, as torchvision does (a copy rounded to float32 moves the
        samples by up to half an FP32 ulp, about 1e-7 here, far below the 1e-5
        of the forward tests, so this one compares at 1e-12)."""
        g = torch.Generator().manual_seed(1)
        features = torch.randn(1, 2 * 3 * 3, 9, 11, generator=g, dtype=torch.float64)
        rois = torch.tensor([[0, 1 / 3, 2 / 7, 8 + 1 / 9, 6 + 1 / 11], [0, 0.1, 0.7, 5.3, 4.9]], dtype=torch.float64)
        assert not torch.equal(rois.float().double(), rois)  # corners that float32 cannot hold
        got = ps_roi_align(features, rois, 3, 1.0, 2)
        expected = torchvision.ops.ps_roi_align(features, rois, 3, 1.0, 2)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
        rounded = ps_roi_align(features, rois.float().double(), 3, 1.0, 2)
        assert (rounded - expected).abs().max() > 1e-9  # this check would see a float32 copy

    @pytest.mark.parametrize("impl", EAGER_IMPLS)
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
    @pytest.mark.parametrize("rois_dtype", [torch.float32, torch.float16], ids=str)
    def test_torchvision_mixed_dtypes(self, impl, dtype, rois_dtype):
        """torchvision's autocast cases: features and RoIs of different types
        (transposed features). Under autocast torchvision computes in FP32 and
        returns the features' type, which is what this op does for FP16."""
        features, rois = self.tv_problem(dtype, rois_dtype, contiguous=False)
        got = ps_roi_align(features, rois, (5, 5), 1, -1, impl=impl)
        assert got.dtype == dtype
        tol = 4e-3 if dtype == torch.float16 else 1e-5
        expected = ps_roi_align_naive(features.double(), rois.double(), 5, 1.0, -1)
        np.testing.assert_allclose(got.double().numpy(), expected, rtol=tol, atol=tol)
        in_fp32 = torchvision.ops.ps_roi_align(features.float(), rois.float(), 5).to(dtype)
        torch.testing.assert_close(got, in_fp32, rtol=tol, atol=tol)

    @pytest.mark.parametrize("impl", EAGER_IMPLS)
    def test_torchvision_fx_trace(self, impl):
        """torch.fx traces the module form with the op as one leaf call, and
        the traced module gives the same output."""
        module = PSRoIAlign((5, 5), impl=impl)
        traced = torch.fx.symbolic_trace(module)
        calls = [n for n in traced.graph.nodes if n.op == "call_function"]
        assert [n.target for n in calls] == [ps_roi_align]
        g = torch.Generator().manual_seed(1)
        features = torch.rand(2, 50, 5, 5, generator=g)
        rois = self.tv_problem(torch.float32, torch.float32, True)[1]
        got = traced(features, rois)
        assert got.dtype == features.dtype
        torch.testing.assert_close(got, module(features, rois), rtol=1e-5, atol=1e-5, equal_nan=True)

    def test_torchvision_is_leaf_node(self):
        """torchvision's feature-extraction tracer sees the inputs and one node for the op."""

        class Wrapper(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.layer = PSRoIAlign((5, 5))

            def forward(self, features, rois):
                return self.layer(features, rois)

        train_names, eval_names = get_graph_node_names(Wrapper())
        assert train_names == eval_names and len(train_names) == 2 + 1  # two inputs and the op

    def test_torchvision_boxes_shape(self):
        """Boxes in the wrong layout are refused: [K, 4] rows in a tensor (the
        table needs the batch index) and [K, 3] boxes in a list."""
        features = torch.linspace(1, 64, 64).reshape(1, 1, 8, 8)
        with pytest.raises(ValueError, match=r"rois must have shape \[R, 5\]"):
            ps_roi_align(features, torch.tensor([[0.0, 0, 3, 3]]), output_size=(1, 1))
        with pytest.raises(ValueError, match=r"one \[K, 4\] tensor"):
            ps_roi_align(features, [torch.tensor([[0.0, 0, 3]])], output_size=(1, 1))


def test_work_and_paper_problem_by_hand():
    """The counts `selfcheck --bench` and the GPU roofline use, for 3 RoIs on
    a map of 2 classes × 2×2 bins (8 channels): 24 outputs, each s×s samples
    of 4 corner products and a sum (9 FLOPs per sample); bytes: 4 corners per
    sample and the output, plus the [3, 5] RoI table. An adaptive grid counts
    as 2×2. And the paper-scale problem: R-FCN's 31 classes of 7×7 maps on the
    stride-16 map of a 600×1000 frame, 300 RoIs of 16..316 px, 2×2 samples."""
    from vidtrt.ops.ps_roi_align import paper_problem, work

    features, rois = torch.zeros(1, 8, 5, 6), torch.zeros(3, 5)
    for ratio, samples in ((1, 1), (2, 4), (3, 9), (0, 4), (-1, 4)):
        attrs = {"output_size": 2, "spatial_scale": 0.5, "sampling_ratio": ratio}
        assert work((features, rois), attrs) == {
            "flops": 9.0 * samples * 24,
            "bytes": 4.0 * 24 * (4 * samples + 1) + 4 * 15,
        }, ratio
    half = work((features.half(), rois), {"output_size": 2, "spatial_scale": 0.5, "sampling_ratio": 2})
    assert half["bytes"] == 2.0 * 24 * 17 + 4 * 15
    (features, table), attrs, counted = paper_problem()
    assert features.shape == (1, 31 * 49, 37, 62) and table.shape == (300, 5)
    assert attrs == {"output_size": 7, "spatial_scale": 1 / 16, "sampling_ratio": 2}
    assert counted == work((features, table), attrs)
    assert not table[:, 0].any()  # every RoI on image 0
    sizes = table[:, 3:] - table[:, 1:3]
    centres = (table[:, 3:] + table[:, 1:3]) / 2
    assert float(sizes.min()) >= 16 and float(sizes.max()) <= 316 and float(sizes.max()) > 300
    assert float(centres[:, 0].max()) > 980 and float(centres[:, 1].max()) > 580 and float(centres.min()) >= 0
    assert float(centres[:, 0].min()) < 20 and float(centres[:, 1].min()) < 20  # spread from the corner on
    assert not torch.allclose(centres[:, 0] / 1000, centres[:, 1] / 600)
    assert not torch.allclose(sizes[:, 0], sizes[:, 1])


def test_selfcheck_example_by_hand():
    """The example `vidtrt selfcheck` runs: 8 classes of 7×7 score maps on the
    stride-16 map of a 600×1000 image, 300 RoIs of 16..316 px on image 0,
    some reaching past the borders, 2×2 samples per bin."""
    from vidtrt.ops.ps_roi_align import example

    (features, rois), attrs = example()
    assert features.shape == (1, 8 * 49, 37, 62) and rois.shape == (300, 5)
    assert attrs == {"output_size": 7, "spatial_scale": 1 / 16, "sampling_ratio": 2}
    assert not rois[:, 0].any()
    sizes = rois[:, 3:] - rois[:, 1:3]
    assert float(sizes.min()) >= 16 and float(sizes.max()) <= 316 and float(sizes.max()) > 300
    assert float(rois[:, 1:3].min()) < 0 and float(rois[:, 3].max()) > 1000 and float(rois[:, 4].max()) > 600
    assert not torch.allclose(sizes[:, 0], sizes[:, 1])
    centres = (rois[:, 3:] + rois[:, 1:3]) / 2
    assert not torch.allclose(centres[:, 0] / 1000, centres[:, 1] / 600)  # x and y drawn apart
    assert ps_roi_align(features, rois, **attrs).shape == (300, 8, 7, 7)
    half, half_rois = example(torch.float16)[0]
    assert half.dtype == half_rois.dtype == torch.float16


def test_adaptive_grid_by_hand():
    """ceil of the bin size per RoI, NaN → 0, clamped to the int32 range
    [-2147483648, 2147483647] as the kernel body's int holds it."""
    from vidtrt.ops.ps_roi_align import adaptive_grid

    sizes = torch.tensor([2.5, 3.0, 0.0, -0.5, -2.5, float("nan"), 1e12, -1e12, float("inf"), 2.0**31])
    got = adaptive_grid(sizes)
    assert got.dtype == torch.int64
    assert got.tolist() == [3, 3, 0, 0, -2, 0, 2147483647, -2147483648, 2147483647, 2147483647]


def test_exported_output_type_is_r_c_k_k(tmp_path):
    """Exported with static shapes (C = 3 classes of 2×2 bins: 12 channels,
    4 RoIs), the node's declared output type is [R, C, k, k] dim by dim."""
    from op_tester import OneOpModule

    from vidtrt.export.onnx import export_module

    features, rois = random_problem(30, 1, 3, 2, 6, 7, 4, 0.5)  # R = 4, not the table's 5 columns
    path = tmp_path / "psroi_static.onnx"
    module = OneOpModule(ps_roi_align, {"output_size": 2, "spatial_scale": 0.5, "sampling_ratio": 2})
    export_module(module, (features, rois), path, ["features", "rois"], ["out"], {})
    out = onnx.load(path).graph.output[0].type.tensor_type
    assert [d.dim_value for d in out.shape.dim] == [4, 3, 2, 2]
    assert out.elem_type == onnx.TensorProto.FLOAT


def test_defaults_are_torchvision_s_by_signature():
    """The function's defaults are torchvision.ops.ps_roi_align's (spatial_scale
    1.0, sampling_ratio -1: adaptive), and the module's are the same."""
    import inspect

    def defaults(f):
        return {name: p.default for name, p in inspect.signature(f).parameters.items() if p.default is not p.empty}

    theirs = defaults(torchvision.ops.ps_roi_align)
    assert theirs == {"spatial_scale": 1.0, "sampling_ratio": -1}
    assert defaults(ps_roi_align) == {**theirs, "impl": "reference"}
    module = PSRoIAlign(3)
    assert (module.output_size, module.spatial_scale, module.sampling_ratio, module.impl) == (3, 1.0, -1, "reference")


@pytest.mark.parametrize("impl", EAGER_IMPLS)
def test_zero_channels(impl):
    """Features with no channels at all (C·k·k = 0) give [R, 0, k, k], as torchvision does."""
    features, rois = torch.zeros(1, 0, 5, 6), torch.tensor([[0.0, 0, 0, 4, 4], [0.0, 1, 1, 3, 3]])
    for sampling_ratio in (2, -1):
        got = ps_roi_align(features, rois, 2, 1.0, sampling_ratio, impl=impl)
        assert got.shape == (2, 0, 2, 2)
        assert got.shape == torchvision.ops.ps_roi_align(features, rois, 2, 1.0, sampling_ratio).shape


def test_reference_blocks_give_the_naive_result(monkeypatch):
    """The reference pools RoIs in blocks of bounded size; with blocks of 1
    to 3 RoIs (and RoIs of several adaptive grids, each its own group) the
    result is still the naive loop's, row for row."""
    import importlib

    psroi_module = importlib.import_module("vidtrt.ops.ps_roi_align")  # the package exports the function
    features, rois = random_problem(33, 2, 2, 3, 7, 8, 7, 0.5)
    expected = {s: ps_roi_align_naive(features, rois, 3, 0.5, s) for s in (2, -1)}
    per_roi = 2 * 3 * 3 * 2 * 2  # C·k·k·gh·gw elements per RoI at sampling_ratio 2
    for block in (1, 2, 3):
        monkeypatch.setattr(psroi_module, "_BLOCK_ELEMENTS", block * per_roi)
        for s, want in expected.items():
            got = ps_roi_align(features, rois, 3, 0.5, s)
            np.testing.assert_allclose(got.numpy(), want, **FP32_TOL, err_msg=f"block {block}, sampling_ratio {s}")


def test_native_entry_refuses_other_devices():
    """The fused path's own device check, called directly ("meta" stands in
    for a GPU; the public call reads the batch indices first)."""
    with pytest.raises(ValueError, match=r"^ps_roi_align: impl='native' runs on the CPU, got tensors on meta$"):
        ps_roi_align_native(torch.zeros(1, 9, 4, 4, device="meta"), torch.zeros(1, 5, device="meta"), 3, 1.0, 2)
