"""Most-similar RoI align: reference, native (fused host kernel) and ONNX graph
(ONNX Runtime) against a naive loop written from the paper's equations
(Temporal RoI Align, Eq. 2-4, with mmtracking's cosine similarity)."""

from __future__ import annotations

import importlib
import itertools
import math

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from op_tester import IMPLS, OpTester, all_nodes

from vidtrt import _native
from vidtrt.ops import most_similar_roi_align
from vidtrt.ops.most_similar_roi_align import MAX_TOP_K, most_similar_roi_align_native


def normalised(v):
    return v / max(np.linalg.norm(v), 1e-12)


def msra_naive(roi_feats, support_feats, top_k, lower_index_wins=True):
    """Eq. 2-4 cell by cell, float64. Returns the output [T, R, C, h, w] and, per
    (t, r, y, x), the gap between the k-th and the (k+1)-th largest similarity
    (inf when k = H·W): where the gap is ~0, which cell is kept depends on
    rounding, so comparisons with FP32 layers skip those cells. Exact ties go
    to the lower cell index (the higher one with lower_index_wins=False)."""
    x = np.asarray(roi_feats, dtype=np.float64)
    s = np.asarray(support_feats, dtype=np.float64)
    rois, channels, height, width = x.shape
    frames, _, support_h, support_w = s.shape
    cells = [(yy, xx) for yy in range(support_h) for xx in range(support_w)]  # cell j = yy·W + xx
    out = np.zeros((frames, rois, channels, height, width))
    gap = np.full((frames, rois, height, width), np.inf)
    for t in range(frames):
        keys = [normalised(s[t, :, yy, xx]) for yy, xx in cells]
        for r, y, x_ in itertools.product(range(rois), range(height), range(width)):
            query = normalised(x[r, :, y, x_])
            sims = [float(query @ key) for key in keys]  # Eq. 2: cosine similarity map
            order = sorted(range(len(cells)), key=lambda j: (-sims[j], j if lower_index_wins else -j))
            kept = order[:top_k]
            if top_k < len(cells):
                gap[t, r, y, x_] = sims[order[top_k - 1]] - sims[order[top_k]]
            e = np.exp([sims[j] for j in kept])
            weights = e / e.sum()  # Eq. 3
            for weight, j in zip(weights, kept):
                out[t, r, :, y, x_] += weight * s[t, :, cells[j][0], cells[j][1]]  # Eq. 4: un-normalised
    return out, gap


def random_inputs(seed, rois, channels, height, width, frames, support_h, support_w, dtype=torch.float32):
    """Continuous N(0, 1) features: exact similarity ties have probability 0."""
    g = torch.Generator().manual_seed(seed)
    roi = torch.randn(rois, channels, height, width, generator=g)
    support = torch.randn(frames, channels, support_h, support_w, generator=g)
    return roi.to(dtype), support.to(dtype)


# Cells whose k-th and (k+1)-th similarities are closer than this are left out
# of comparisons: FP32 similarities carry ~1e-7 of rounding, so below that
# the layers may legitimately keep different cells.
MIN_GAP = 1e-4


def assert_matches(got, expected, gap, **tol):
    got = got.float().numpy()
    assert got.shape == expected.shape
    clear = gap > MIN_GAP  # [T, R, h, w]
    # Random inputs leave almost every cell clear (a near-tie has probability
    # ~1e-3); a comparison that skipped most of them would hide bugs.
    assert clear.size < 4 or clear.mean() >= 0.5, f"only {clear.mean():.0%} of the cells are clear of near-ties"
    mask = np.broadcast_to(clear[:, :, None], got.shape)
    np.testing.assert_allclose(got[mask], expected[mask], **tol)


problems = st.tuples(
    st.integers(0, 3),  # R
    st.integers(2, 6),  # C (C = 1 makes every similarity ±1: see test_exact_ties)
    st.integers(1, 3),  # h
    st.integers(1, 3),  # w
    st.integers(1, 3),  # T
    st.integers(1, 6),  # H
    st.integers(1, 6),  # W
    st.integers(1, MAX_TOP_K),  # top_k, capped at H·W
)

# FP32 arithmetic against the float64 oracle: similarities and weights carry
# ~1e-7 relative rounding; outputs are weighted sums of N(0, 1) features.
FP32_TOL = dict(rtol=1e-5, atol=1e-5)
# FP16 storage, FP32 inside: rounding the output to FP16 (half an ulp, ≤ 2^-11
# relative on values up to ~4) plus the FP32 deviations above.
FP16_TOL = dict(rtol=2e-3, atol=2e-3)

GOOD = dict(roi_feats=torch.zeros(2, 4, 7, 7), support_feats=torch.zeros(3, 4, 5, 6), top_k=2)


class TestMostSimilarRoIAlign(OpTester):
    op_type = "MostSimilarRoIAlign"
    TOLERANCE = {torch.float32: FP32_TOL, torch.float16: FP16_TOL}
    DYNAMIC_AXES = {
        "roi_feats": {0: "R", 1: "C", 2: "h", 3: "w"},
        "support_feats": {0: "T", 1: "C", 2: "H", 3: "W"},
        "out": {0: "T", 1: "R", 2: "C", 3: "h", 4: "w"},
    }
    GRAPH_DTYPES = (torch.float32, torch.float32)
    GRAPH_ATTRS = dict(top_k=2)
    GRAPH_NODE_ATTRIBUTES = dict(top_k=2)
    GRAPH_OUTPUT_DIMS = ["T", "R", "C", "h", "w"]
    GOOD = GOOD
    BAD_INPUTS = [
        (dict(roi_feats=torch.zeros(4, 7, 7)), r"roi_feats must have rank 4 \[R, C, h, w\], got shape \[4, 7, 7\]"),
        (dict(support_feats=torch.zeros(1, 3, 4, 5, 6)), r"support_feats must have rank 4 \[T, C, H, W\], got shape \[1, 3, 4, 5, 6\]"),
        (dict(support_feats=torch.zeros(3, 5, 5, 6)), r"same channel count C, got roi_feats \[2, 4, 7, 7\] and support_feats \[3, 5, 5, 6\]"),
        (dict(support_feats=torch.zeros(3, 3, 5, 6)), r"same channel count C, got roi_feats \[2, 4, 7, 7\] and support_feats \[3, 3, 5, 6\]"),
        (dict(top_k=0), r"top_k must be in \[1, 8\], got 0"),
        (dict(top_k=9), r"top_k must be in \[1, 8\], got 9"),
        (dict(top_k=2.0), r"top_k must be an int, got float"),
        (dict(top_k=True), r"top_k must be an int, got bool"),
        (dict(support_feats=torch.zeros(3, 4, 1, 2), top_k=3), r"top_k = 3 exceeds the H\*W = 2 cells .*\[3, 4, 1, 2\]"),
        (dict(support_feats=torch.zeros(3, 4, 0, 6)), r"top_k = 2 exceeds the H\*W = 0 cells"),
        (dict(support_feats=torch.zeros(3, 4, 5, 6, dtype=torch.float16)), r"share one dtype, float32 or float16, got torch.float32 and torch.float16"),
        (dict(roi_feats=torch.zeros(2, 4, 7, 7, dtype=torch.int32), support_feats=torch.zeros(3, 4, 5, 6, dtype=torch.int32)), r"got torch.int32 and torch.int32"),
        (dict(support_feats=torch.zeros(3, 4, 5, 6, device="meta")), r"must be on one device, got cpu and meta"),
        (dict(roi_feats=[[0.0]]), r"roi_feats must be a torch.Tensor, got list"),
    ]  # fmt: skip
    NATIVE_FLOAT64_MESSAGE = r"impl='native' takes float32 or float16, got torch.float64"
    FLOAT64_INPUTS = ("roi_feats", "support_feats")
    DIFFERENTIABLE_INPUTS = ("roi_feats", "support_feats")

    def oracle(self, roi_feats, support_feats, top_k):
        return msra_naive(roi_feats, support_feats, top_k)

    def compare(self, got, inputs, attrs, tolerance):
        # Cells within MIN_GAP of a tie may keep other cells in FP32: left out.
        assert_matches(got, *self.oracle(*inputs, **attrs), **tolerance)

    def export_inputs(self, dtypes, attrs):
        # Exported at one shape and run at others: every dimension is dynamic.
        roi = torch.randn(3, 4, 2, 2).to(dtypes[0])
        support = torch.randn(2, 4, 3, 4).to(dtypes[1])
        return roi, support

    def check_graph(self, model, node, function):
        assert {"Loop", "MatMul", "TopK"} <= {n.op_type for n in all_nodes(function.node)}
        constants = [n for n in function.node if n.op_type == "Constant"]
        assert {a.ref_attr_name for n in constants for a in n.attribute if a.ref_attr_name} == {"top_k"}

    @pytest.mark.parametrize("impl", IMPLS)
    @settings(max_examples=40, deadline=None)
    @given(problem=problems, seed=st.integers(0, 2**31 - 1))
    def test_matches_naive_random(self, impl, problem, seed, onnx_dir):
        rois, channels, height, width, frames, support_h, support_w, top_k = problem
        top_k = min(top_k, support_h * support_w)
        roi, support = random_inputs(seed, rois, channels, height, width, frames, support_h, support_w)
        got = self.check(impl, roi, support, directory=onnx_dir, top_k=top_k)
        assert got.shape == (frames, rois, channels, height, width)

    @pytest.mark.parametrize("impl", IMPLS)
    @pytest.mark.parametrize("top_k", range(1, MAX_TOP_K + 1))
    def test_every_top_k(self, impl, top_k, onnx_dir):
        """RoIs of 2×3 cells against 3×5 maps (15 cells: one partial 16-cell panel in the kernel)."""
        roi, support = random_inputs(100 + top_k, 2, 16, 2, 3, 2, 3, 5)
        self.check(impl, roi, support, directory=onnx_dir, top_k=top_k)

    @pytest.mark.parametrize("impl", IMPLS)
    def test_several_panels_and_groups(self, impl, onnx_dir):
        """H·W = 37 cells (two full 16-cell panels and 5 more) and R·h·w = 100
        queries (one full 96-query block of 6-query tiles, then a remainder)."""
        roi, support = random_inputs(7, 4, 8, 5, 5, 2, 1, 37)
        self.check(impl, roi, support, directory=onnx_dir, top_k=3)

    @pytest.mark.parametrize("impl", IMPLS)
    @pytest.mark.parametrize("hw", [(1, 1), (2, 3), (1, 8), (2, 4)])
    def test_top_k_equals_cell_count(self, impl, hw, onnx_dir):
        """Every cell is kept: a softmax over the whole map (no choice to make)."""
        support_h, support_w = hw
        roi, support = random_inputs(11, 3, 5, 2, 2, 2, support_h, support_w)
        top_k = support_h * support_w
        expected, gap = msra_naive(roi, support, top_k)
        assert np.isinf(gap).all()
        got = self.run(impl, roi, support, directory=onnx_dir, top_k=top_k)
        np.testing.assert_allclose(got.numpy(), expected, **FP32_TOL)

    @pytest.mark.parametrize("impl", IMPLS)
    def test_single_support_frame(self, impl, onnx_dir):
        roi, support = random_inputs(12, 5, 32, 7, 7, 1, 6, 9)
        got = self.check(impl, roi, support, directory=onnx_dir, top_k=2)
        assert got.shape == (1, 5, 32, 7, 7)

    @pytest.mark.parametrize("impl", IMPLS)
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
    @pytest.mark.parametrize("frames", [0, 2])
    def test_empty_roi_set(self, impl, dtype, frames, onnx_dir):
        roi, support = random_inputs(13, 0, 6, 7, 7, frames, 4, 5, dtype=dtype)
        got = self.run(impl, roi, support, directory=onnx_dir, top_k=2)
        assert got.shape == (frames, 0, 6, 7, 7) and got.dtype == dtype

    @pytest.mark.parametrize("impl", IMPLS)
    @pytest.mark.parametrize("channels", [1, 3])
    def test_exact_ties_lower_index_wins(self, impl, channels, onnx_dir):
        """Support cells are positive multiples of unit vectors, so their normalised
        vectors are exact one-hots and cells on the same axis tie exactly in every
        layer. The multiples differ, so which tied cell is kept changes the output;
        the rule is: the lower cell index wins. (With C = 1 every similarity is ±1.)"""
        support_h, support_w = 2, 4
        axis = [0, 1, 0, 2, 1, 0, 2, 1] if channels == 3 else [0] * 8
        sign = [1, 1, -1, 1, 1, 1, -1, 1] if channels == 1 else [1] * 8
        support = torch.zeros(1, channels, support_h, support_w)
        for j, (a, sg) in enumerate(zip(axis, sign)):
            support[0, a, j // support_w, j % support_w] = sg * (j + 1.0)
        # Query similarities with the three axes are clearly apart (0.8, 0.5, 0.33
        # before normalisation), so only same-axis cells tie.
        roi = torch.tensor([[0.8, 0.5, 0.33], [0.33, -0.8, 0.5], [-0.5, 0.33, 0.8], [0.1, 0.9, -0.4]])
        roi = roi[:, :channels].reshape(4, channels, 1, 1).repeat(1, 1, 1, 2)
        roi[:, :, 0, 1] *= -1  # the second cell of every RoI prefers the opposite axis
        for top_k in range(1, 9):
            expected, _ = msra_naive(roi, support, top_k)
            got = self.run(impl, roi, support, directory=onnx_dir, top_k=top_k)
            np.testing.assert_allclose(got.numpy(), expected, **FP32_TOL, err_msg=f"top_k={top_k}")
        # The rule matters here: keeping the higher index of a tie gives other results.
        differs = [
            not np.allclose(msra_naive(roi, support, k)[0], msra_naive(roi, support, k, False)[0]) for k in (1, 2, 3)
        ]
        assert all(differs)

    @pytest.mark.parametrize("impl", IMPLS)
    def test_zero_vectors(self, impl, onnx_dir):
        """A zero vector normalises to zero (the clamp at 1e-12), not to NaN as a
        bare division would: a zero RoI cell ties with every support cell (similarity
        0), so it keeps the first top_k cells with equal weights; a zero support
        cell has similarity 0 with every RoI cell."""
        roi, support = random_inputs(14, 2, 4, 2, 2, 2, 3, 3)
        roi[1, :, 0, 1] = 0
        support[0, :, 1, 1] = 0
        support[1, :, 0, 0] = 0
        got = self.run(impl, roi, support, directory=onnx_dir, top_k=3)
        assert torch.isfinite(got).all()
        expected, gap = msra_naive(roi, support, 3)
        for t in range(2):
            first = support[t].reshape(4, 9)[:, :3]
            torch.testing.assert_close(got[t, 1, :, 0, 1], first.mean(1), **FP32_TOL)
            torch.testing.assert_close(got[t, 1, :, 0, 1], torch.from_numpy(expected[t, 1, :, 0, 1]).float())
        gap[:, 1, 0, 1] = np.inf  # exact ties, compared above
        assert_matches(got, expected, gap, **FP32_TOL)

    @pytest.mark.parametrize("impl", IMPLS)
    @settings(max_examples=20, deadline=None)
    @given(problem=problems, seed=st.integers(0, 2**31 - 1))
    def test_fp16(self, impl, problem, seed, onnx_dir):
        """Against the float64 oracle evaluated on the same FP16-rounded inputs."""
        rois, channels, height, width, frames, support_h, support_w, top_k = problem
        top_k = min(top_k, support_h * support_w)
        roi, support = random_inputs(seed, rois, channels, height, width, frames, support_h, support_w, torch.float16)
        got = self.check(impl, roi, support, directory=onnx_dir, top_k=top_k)
        assert got.dtype == torch.float16 and got.shape == (frames, rois, channels, height, width)

    def test_fp16_large_features_do_not_overflow(self, onnx_dir):
        """Squared norms far beyond FP16's range (6.5e4) stay finite: they are FP32 inside."""
        roi, support = random_inputs(15, 3, 64, 3, 3, 2, 4, 4)
        roi, support = (roi * 200).half(), (support * 200).half()
        for impl in IMPLS:
            got = self.check(impl, roi, support, directory=onnx_dir, tolerance=dict(rtol=2e-3, atol=0.5), top_k=2)
            assert torch.isfinite(got).all(), impl

    def test_native_accepts_any_layout(self):
        roi, support = random_inputs(16, 3, 6, 3, 4, 2, 5, 6)
        expected = most_similar_roi_align(roi, support, 3, impl="native")
        roi_t = roi.transpose(2, 3).contiguous().transpose(2, 3)  # same values, other strides
        support_cl = support.contiguous(memory_format=torch.channels_last)
        for r, s in ((roi_t, support), (roi, support_cl), (roi[:, :, :, :], support[:, :, :, :])):
            torch.testing.assert_close(most_similar_roi_align(r, s, 3, impl="native"), expected, rtol=0, atol=0)
        # The generic-stride instantiation (channel stride != 1) agrees too.
        out = torch.empty(2, 3, 6, 3, 4)
        _native.kernels().most_similar_roi_align_forward(
            "float32", roi.data_ptr(), support.data_ptr(), out.data_ptr(), (3, 6, 3, 4, 2, 5, 6), 3,
            roi.stride(), support.stride(), out.stride(),
        )  # fmt: skip
        torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)

    def test_native_thread_count_does_not_change_results(self):
        roi, support = random_inputs(17, 9, 8, 4, 4, 3, 5, 7)
        self.assert_thread_count_invariant(most_similar_roi_align_native, roi, support, 2)

    def test_reference_gradcheck(self):
        roi, support = random_inputs(1, 2, 3, 2, 2, 2, 3, 3)
        _, gap = msra_naive(roi, support, 2)
        assert gap.min() > 1e-3  # a finite-difference step cannot change the kept cells
        roi, support = roi.double().requires_grad_(), support.double().requires_grad_()
        assert torch.autograd.gradcheck(lambda a, b: most_similar_roi_align(a, b, 2), (roi, support))

    def test_reference_gradient_matches_naive_finite_difference(self):
        """A second, independent check: d(sum out·g)/d input from the naive loop."""
        roi, support = random_inputs(2, 2, 3, 2, 2, 2, 3, 3)
        assert msra_naive(roi, support, 2)[1].min() > 1e-3  # the bumps below cannot change the kept cells
        grad_out = torch.randn(2, 2, 3, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        r, s = roi.double().requires_grad_(), support.double().requires_grad_()
        (most_similar_roi_align(r, s, 2) * grad_out).sum().backward()
        g = grad_out.numpy()
        base = (msra_naive(roi.double(), support.double(), 2)[0] * g).sum()
        eps = 1e-6
        bumps = ((roi, r.grad, (1, 2, 0, 1)), (support, s.grad, (0, 1, 2, 2)), (support, s.grad, (1, 0, 0, 1)))
        for tensor, grad, index in bumps:
            bumped = tensor.double().clone()
            bumped[index] += eps
            args = (bumped, support.double()) if tensor is roi else (roi.double(), bumped)
            numeric = ((msra_naive(*args, 2)[0] * g).sum() - base) / eps
            assert math.isclose(grad[index].item(), numeric, rel_tol=1e-4, abs_tol=1e-7), index
        assert r.grad.abs().sum() > 0 and s.grad.abs().sum() > 0

    def test_onnx_function_holds_one_frame_of_similarities(self, onnx_dir):
        """The largest tensor the portable function creates, read off ONNX shape
        inference at concrete shapes with the function inlined (what TensorRT-RTX
        runs), is one support frame's similarity matrix [R·h·w, H·W] whatever T;
        the whole [T, R·h·w, H·W] (2 GB at the paper's scale) never exists. H·W
        is large against C so that the similarities dominate every other tensor."""
        from vidtrt.export.memory import tensor_sizes

        model = self.exported_model(onnx_dir, (torch.float32, torch.float32), dict(top_k=2))
        rois, channels, h, w, height, width = 20, 4, 7, 7, 40, 50
        one_frame = rois * h * w * height * width * 4
        for frames in (1, 3, 14):
            shapes = {"roi_feats": [rois, channels, h, w], "support_feats": [frames, channels, height, width]}
            sizes = tensor_sizes(model, shapes)
            assert not [s for s in sizes if s.bytes is None], "shape inference left dims unknown"
            largest = sizes[0]
            assert largest.op == "MatMul" and largest.scope.startswith("Loop"), largest
            assert largest.shape == (rois * h * w, height * width) and largest.bytes == one_frame
            assert all(s.bytes < one_frame for s in sizes[1:])
            # The Loop stacks the frames' [R·h·w, C] results.
            assert [s.shape for s in sizes if s.op == "Loop"] == [(frames, rois * h * w, channels)]

    def test_kernel_library_refuses_what_python_would(self):
        """The binding's own checks, for callers that skip the Python layer."""
        roi, support = GOOD["roi_feats"], GOOD["support_feats"]
        out = torch.empty(3, 2, 4, 7, 7)
        call = self.binding(
            "most_similar_roi_align_forward", dtype="float32", roi=roi.data_ptr(), support=support.data_ptr(),
            out=out.data_ptr(), shape=(2, 4, 7, 7, 3, 5, 6), top_k=2, roi_strides=roi.stride(),
            support_strides=support.stride(), out_strides=out.stride(),
        )  # fmt: skip
        call()
        torch.testing.assert_close(out, torch.zeros_like(out))  # zero inputs: weighted sums of zeros
        for bad in (dict(top_k=0), dict(top_k=9), dict(shape=(2, 4, 7, 7, 3, 1, 1)),
                    dict(shape=(2, -4, 7, 7, 3, 5, 6))):  # fmt: skip
            with pytest.raises(ValueError, match="most_similar_roi_align: invalid shape or attribute"):
                call(**bad)
        with pytest.raises(ValueError, match="unsupported dtype 'float64'"):
            call(dtype="float64")

    def test_work_and_paper_problem_by_hand(self):
        """The counts `selfcheck --bench` and the GPU roofline use, on small
        shapes written out term by term; and the paper-scale problem's shapes
        (mmtracking's SELSA + TRoI test config)."""
        from vidtrt.ops.most_similar_roi_align import paper_problem, work

        rois, c, h, w, frames, sh, sw, top_k = 2, 3, 4, 5, 6, 7, 8, 2
        roi, support = torch.zeros(rois, c, h, w), torch.zeros(frames, c, sh, sw)
        queries = 2 * 4 * 5  # RoI cells
        cells = 7 * 8  # cells of one support frame
        similarities = 2.0 * 6 * queries * cells * 3  # one multiply-add per channel and (query, cell, frame)
        weighted_sum = 2.0 * 6 * queries * 2 * 3  # top_k cells per query and frame
        normalise = 3.0 * (6 * cells + queries) * 3  # square, sum, divide per element of both inputs
        reads_and_writes = 3 * (queries + 6 * cells + 6 * queries)  # channels: both inputs in, [T, R, C, h, w] out
        assert work((roi, support), {"top_k": top_k}) == {
            "flops": similarities + weighted_sum + normalise,
            "bytes": 4.0 * reads_and_writes,
        }
        assert work((roi.half(), support.half()), {"top_k": top_k})["bytes"] == 2.0 * reads_and_writes
        (roi, support), attrs, counted = paper_problem()
        assert roi.shape == (300, 512, 7, 7) and support.shape == (14, 512, 38, 63) and attrs == {"top_k": 2}
        assert float(roi.min()) >= 0 and float(support.min()) >= 0  # ReLU'd features
        assert counted == work((roi, support), attrs)

    def test_selfcheck_example_matches_real_cells(self):
        """The example `vidtrt selfcheck` runs: 32 RoIs of 7×7 noisy copies of
        cells of the first of 4 support frames (19×32, C = 128), top_k = 2. Its
        RoI cells' most similar cell in that frame is, nearly always, the cell
        each was copied from, up to noise of σ = 0.3: the top match is a real
        one, as it says."""
        from vidtrt.ops.most_similar_roi_align import example

        (roi, support), attrs = example()
        assert roi.shape == (32, 128, 7, 7) and support.shape == (4, 128, 19, 32) and attrs == {"top_k": 2}
        queries = torch.nn.functional.normalize(roi, dim=1).permute(0, 2, 3, 1).reshape(-1, 128)
        keys = torch.nn.functional.normalize(support[0], dim=0).reshape(128, -1)
        best = (queries @ keys).argmax(1)
        # Nearest by distance instead of similarity: the noise is small next to
        # the gaps between cells, so this names the source cell.
        rows, cells = roi.permute(0, 2, 3, 1).reshape(-1, 128), support[0].reshape(128, -1).T
        source = torch.cdist(rows, cells).argmin(1)
        assert (best == source).float().mean() > 0.9
        assert 0.28 < float((rows - cells[source]).std()) < 0.32  # the copies' noise: N(0, 0.3²)
        assert most_similar_roi_align(roi, support, **attrs).shape == (4, 32, 128, 7, 7)

    def test_reference_in_several_blocks_matches_naive(self, monkeypatch):
        """The reference holds at most _REFERENCE_BLOCK similarities at once
        (rows of RoI cells per block). With a block of 3 rows' worth, 2 RoIs
        of 2×2 cells (8 queries) take three blocks, the last one partial; the
        result must still be the naive loop's."""
        msra_module = importlib.import_module("vidtrt.ops.most_similar_roi_align")  # the package exports the function

        roi, support = random_inputs(21, 2, 5, 2, 2, 3, 3, 4)
        expected, gap = msra_naive(roi, support, 2)
        assert gap.min() > 1e-4
        whole = most_similar_roi_align(roi, support, 2)
        monkeypatch.setattr(msra_module, "_REFERENCE_BLOCK", 3 * 12)
        blocked = most_similar_roi_align(roi, support, 2)
        np.testing.assert_allclose(blocked.numpy(), expected, **FP32_TOL)
        np.testing.assert_allclose(whole.numpy(), expected, **FP32_TOL)  # (not bit-equal: GEMMs of other sizes)

    def test_exported_output_type_is_t_r_c_h_w(self, tmp_path):
        """Exported with static shapes, non-square RoIs (h = 2, w = 5), the
        node's declared output type is [T, R, C, h, w] dim by dim, which is
        what shape inference downstream (and TensorRT's parser) starts from."""
        from op_tester import OneOpModule

        from vidtrt.export.onnx import export_module

        roi, support = random_inputs(22, 2, 3, 2, 5, 4, 3, 6)
        path = tmp_path / "msra_static.onnx"
        export_module(OneOpModule(most_similar_roi_align, {"top_k": 2}), (roi, support), path,
                      ["roi_feats", "support_feats"], ["out"], {})  # fmt: skip
        out = onnx.load(path).graph.output[0].type.tensor_type
        assert [d.dim_value for d in out.shape.dim] == [4, 2, 3, 2, 5]
        assert out.elem_type == onnx.TensorProto.FLOAT
