"""Position-sensitive RoI Align: reference, native (fused host kernel) and ONNX
graph (ONNX Runtime) against a naive loop written from the equations, and
against torchvision.ops.ps_roi_align."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from op_tester import IMPLS, OpTester

from vidtrt import _native
from vidtrt.ops import ps_roi_align
from vidtrt.ops.ps_roi_align import ps_roi_align_native


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


def ps_roi_align_naive(features, rois, output_size, spatial_scale, sampling_ratio):
    """RoI by RoI, channel by channel, bin by bin, sample by sample, float64."""
    k = output_size
    f = np.asarray(features, dtype=np.float64)

    rois = np.asarray(rois, dtype=np.float64)
    _, channels, _, _ = f.shape
    out_channels = channels // (k * k)
    s = sampling_ratio
    out = np.zeros((len(rois), out_channels, k, k))
    for r, (batch, x1, y1, x2, y2) in enumerate(rois):
        n = int(batch)  # truncation toward zero
        # Pixel centres sit at integer coordinates, hence the half-pixel shift.
        start_x, start_y = x1 * spatial_scale - 0.5, y1 * spatial_scale - 0.5
        bin_w = (x2 * spatial_scale - 0.5 - start_x) / k
        bin_h = (y2 * spatial_scale - 0.5 - start_y) / k
        for c in range(out_channels):
            for i in range(k):
                for j in range(k):
                    plane = f[n, c * k * k + i * k + j]  # position-sensitive score map of bin (i, j)
                    total = 0.0
                    for iy in range(s):
                        y = start_y + (i + (iy + 0.5) / s) * bin_h
                        for ix in range(s):
                            x = start_x + (j + (ix + 0.5) / s) * bin_w
                            total += bilinear_naive(plane, y, x)
                    out[r, c, i, j] = total / (s * s)
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
        (dict(features=torch.zeros(2, 17, 5, 6)), r"multiple of output_size\*\*2 = 9 .*features \[2, 17, 5, 6\]"),
        (dict(features=torch.zeros(2, 18, 0, 6)), r"H >= 1 and W >= 1, got features \[2, 18, 0, 6\]"),
        (dict(output_size=0), r"output_size must be >= 1, got 0"),
        (dict(output_size=(3, 3)), r"output_size must be an int \(square bins\), got tuple"),
        (dict(sampling_ratio=-1), r"sampling_ratio must be a positive int, got -1; torchvision's adaptive"),
        (dict(sampling_ratio=0), r"sampling_ratio must be a positive int, got 0"),
        (dict(sampling_ratio=2.0), r"sampling_ratio must be an int, got float"),
        (dict(sampling_ratio=True), r"sampling_ratio must be an int, got bool"),
        (dict(spatial_scale=0.0), r"spatial_scale must be finite and > 0, got 0.0"),
        (dict(spatial_scale=-0.5), r"spatial_scale must be finite and > 0, got -0.5"),
        (dict(spatial_scale=float("inf")), r"spatial_scale must be finite and > 0, got inf"),
        (dict(spatial_scale=float("nan")), r"spatial_scale must be finite and > 0, got nan"),
        (dict(spatial_scale="0.5"), r"spatial_scale must be a float, got str"),
        (dict(features=torch.zeros(2, 18, 5, 6, dtype=torch.int64)), r"features must be float32 or float16, got torch.int64"),
        (dict(rois=torch.zeros(1, 5, dtype=torch.float64)), r"rois must be float32 or the features' dtype \(torch.float32\), got torch.float64"),
        (dict(features=torch.zeros(2, 18, 5, 6, dtype=torch.float16), rois=torch.zeros(1, 5, dtype=torch.bfloat16)),
         r"rois must be float32 or the features' dtype \(torch.float16\)"),
        (dict(features=torch.zeros(2, 18, 5, 6, device="meta")), r"must be on one device, got meta and cpu"),
        (dict(rois=torch.tensor([[0.0, 0, 0, 8, 8], [2.0, 0, 0, 8, 8]])), r"rois\[1, 0\] = 2.0 is not a batch index of features with N = 2"),
    ]  # fmt: skip
    NATIVE_FLOAT64_MESSAGE = r"impl='native' takes float32 or float16 features, got torch.float64"
    FLOAT64_INPUTS = ("features",)

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
        for bad in (dict(output_size=4), dict(sampling_ratio=0), dict(spatial_scale=0.0), dict(spatial_scale=math.inf),
                    dict(shape=(2, 18, 0, 6, 1))):  # fmt: skip
            with pytest.raises(ValueError, match="ps_roi_align: invalid shape or attribute"):
                call(**bad)
        with pytest.raises(ValueError, match="ps_roi_align: unsupported dtype"):
            call(features_dtype="float32", rois_dtype="float16")
