"""PSLA: reference, native (fused host kernel) and ONNX graph (ONNX Runtime)
against a naive loop written from the paper's equations (§3.2, Eq. 1-5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from op_tester import IMPLS, OpTester

from vidtrt.ops import psla
from vidtrt.ops.psla import MAX_DISP


def psla_naive(query, key, value, max_disp):
    """Eq. (1)-(5) position by position, float64."""
    q, k, v = (np.asarray(t, dtype=np.float64) for t in (query, key, value))
    n_batch, _, height, width = q.shape
    out = np.zeros(v.shape, dtype=np.float64)
    for n in range(n_batch):
        for y in range(height):
            for x in range(width):
                # Φ(x, y) = Φ_0 ∪ Φ_1 ∪ ... ∪ Φ_d  (Eq. 2, 3), cells inside the map only
                cells = {(y, x)}
                for s in range(1, max_disp + 1):
                    for a in (s, 0, -s):
                        for b in (s, 0, -s):
                            if (a, b) != (0, 0):
                                cells.add((y + a, x + b))
                cells = [(yy, xx) for yy, xx in cells if 0 <= yy < height and 0 <= xx < width]
                logits = np.array([q[n, :, y, x] @ k[n, :, yy, xx] for yy, xx in cells])  # Eq. (1)
                weights = np.exp(logits - logits.max())
                weights /= weights.sum()  # Eq. (4)
                for w, (yy, xx) in zip(weights, cells):
                    out[n, :, y, x] += w * v[n, :, yy, xx]  # Eq. (5)
    return out


def random_inputs(seed, n, c, big_c, h, w, scale=1.0, integer=False, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    if integer:
        # Integer-valued inputs: every logit is exact in FP32 (so tests of large
        # logits do not depend on summation order) and ties are frequent.
        make = lambda *s: torch.randint(-4, 5, s, generator=g).to(torch.float32) * scale  # noqa: E731
    else:
        make = lambda *s: torch.randn(*s, generator=g) * scale  # noqa: E731
    return make(n, c, h, w).to(dtype), make(n, c, h, w).to(dtype), torch.randn(n, big_c, h, w, generator=g).to(dtype)


shapes = st.tuples(
    st.integers(1, 3),  # N
    st.integers(1, 6),  # c
    st.integers(1, 5),  # C
    st.integers(1, 7),  # H
    st.integers(1, 7),  # W
    st.integers(0, 5),  # max_disp
)

GOOD = dict(query=torch.zeros(1, 3, 4, 5), key=torch.zeros(1, 3, 4, 5), value=torch.zeros(1, 2, 4, 5), max_disp=2)


class TestPSLA(OpTester):
    op_type = "PSLA"
    TOLERANCE = {
        torch.float32: dict(rtol=1e-5, atol=1e-5),
        torch.float16: dict(rtol=2e-3, atol=2e-3),  # output rounding to FP16 plus FP32 summation order
    }
    DYNAMIC_AXES = {
        "query": {0: "N", 1: "c", 2: "H", 3: "W"},
        "key": {0: "N", 1: "c", 2: "H", 3: "W"},
        "value": {0: "N", 1: "C", 2: "H", 3: "W"},
        "out": {0: "N", 1: "C", 2: "H", 3: "W"},
    }
    GRAPH_DTYPES = (torch.float32,) * 3
    GRAPH_ATTRS = dict(max_disp=4)
    GRAPH_NODE_ATTRIBUTES = dict(max_disp=4)
    GOOD = GOOD
    BAD_INPUTS = [
        (dict(query=torch.zeros(3, 4, 5)), r"query must have rank 4 .* \[3, 4, 5\]"),
        (dict(value=torch.zeros(1, 2, 4, 5, 1)), r"value must have rank 4"),
        (dict(key=torch.zeros(1, 2, 4, 5)), r"query and key must have the same shape .*\[1, 3, 4, 5\].*\[1, 2, 4, 5\]"),
        (dict(key=torch.zeros(1, 3, 4, 6)), r"query and key must have the same shape"),
        (dict(value=torch.zeros(2, 2, 4, 5)), r"value must match query in N, H and W, got value \[2, 2, 4, 5\]"),
        (dict(value=torch.zeros(1, 2, 5, 5)), r"value must match query in N, H and W"),
        (dict(value=torch.zeros(1, 2, 4, 4)), r"value must match query in N, H and W, got value \[1, 2, 4, 4\]"),  # smaller too
        (dict(max_disp=-1), r"max_disp must be in \[0, 8\], got -1"),
        (dict(max_disp=MAX_DISP + 1), r"max_disp must be in \[0, 8\], got 9"),
        (dict(max_disp=2.0), r"max_disp must be an int, got float"),
        (dict(value=torch.zeros(1, 2, 4, 5, dtype=torch.float16)), r"must share one dtype"),
    ]
    NATIVE_FLOAT64_MESSAGE = "takes float32 or float16, got torch.float64"
    FLOAT64_INPUTS = ("query", "key", "value")
    DIFFERENTIABLE_INPUTS = ("query", "key", "value")

    oracle = staticmethod(psla_naive)

    def export_inputs(self, dtypes, attrs):
        query = torch.randn(1, 3, 5, 6, dtype=torch.float32).to(dtypes[0])
        value = torch.randn(1, 2, 5, 6, dtype=torch.float32).to(dtypes[2])
        return query, query.to(dtypes[1]), value

    @pytest.mark.parametrize("impl", IMPLS)
    @settings(max_examples=40, deadline=None)
    @given(shape=shapes, seed=st.integers(0, 2**31 - 1))
    def test_matches_naive_random(self, impl, shape, seed, onnx_dir):
        n, c, big_c, h, w, d = shape
        q, k, v = random_inputs(seed, n, c, big_c, h, w)
        self.check(impl, q, k, v, directory=onnx_dir, max_disp=d)

    @pytest.mark.parametrize("impl", IMPLS)
    @settings(max_examples=25, deadline=None)
    @given(shape=shapes, seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([4.0, 16.0, 64.0]))
    def test_large_logits_and_ties(self, impl, shape, seed, scale, onnx_dir):
        """Logits up to ~1e5 (integer-valued, so exact in FP32) with many exact ties."""
        n, c, big_c, h, w, d = shape
        q, k, v = random_inputs(seed, n, c, big_c, h, w, scale=scale, integer=True)
        got = self.check(impl, q, k, v, directory=onnx_dir, max_disp=d)
        assert torch.isfinite(got).all()

    @pytest.mark.parametrize("impl", IMPLS)
    @pytest.mark.parametrize("hw", [(1, 1), (1, 9), (2, 3), (9, 1)])
    def test_map_smaller_than_neighbourhood(self, impl, hw, onnx_dir):
        h, w = hw
        q, k, v = random_inputs(7, 2, 3, 4, h, w)
        self.check(impl, q, k, v, directory=onnx_dir, max_disp=5)

    def test_largest_max_disp_is_accepted(self):
        """MAX_DISP itself (the kernel's bound, 8) is a valid displacement,
        against the naive loop; one more is refused (BAD_INPUTS)."""
        q, k, v = random_inputs(5, 1, 3, 4, 19, 18)
        want = psla_naive(q.double(), k.double(), v.double(), MAX_DISP)
        for impl in ("reference", "native"):
            got = psla(q, k, v, MAX_DISP, impl=impl)
            np.testing.assert_allclose(got.double().numpy(), want, atol=1e-5, rtol=0, err_msg=impl)

    @pytest.mark.parametrize("impl", IMPLS)
    def test_max_disp_zero_returns_value(self, impl, onnx_dir):
        q, k, v = random_inputs(3, 2, 4, 3, 5, 6, scale=10.0)
        torch.testing.assert_close(self.run(impl, q, k, v, directory=onnx_dir, max_disp=0), v, rtol=0, atol=0)

    def test_border_cells_take_no_part(self):
        """A huge logit placed only on out-of-map positions must not leak in: with
        one channel, key = 0 inside the map, every cell ties, and the result is the
        plain mean of value over the in-map cells."""
        q = torch.ones(1, 1, 3, 4)
        k = torch.zeros(1, 1, 3, 4)
        v = torch.randn(1, 2, 3, 4)
        got = psla(q, k, v, 1, impl="native")
        # corner (0, 0): in-map cells (0,0), (0,1), (1,0), (1,1)
        expected = v[0, :, :2, :2].mean(dim=(1, 2))
        torch.testing.assert_close(got[0, :, 0, 0], expected)
        torch.testing.assert_close(psla(q, k, v, 1), got)

    @pytest.mark.parametrize("impl", IMPLS)
    @settings(max_examples=20, deadline=None)
    @given(shape=shapes, seed=st.integers(0, 2**31 - 1))
    def test_fp16(self, impl, shape, seed, onnx_dir):
        """FP16 in and out, FP32 inside: within FP16 output rounding of the float64
        oracle evaluated on the same FP16-rounded inputs."""
        n, c, big_c, h, w, d = shape
        q, k, v = random_inputs(seed, n, c, big_c, h, w, dtype=torch.float16)
        self.check(impl, q, k, v, directory=onnx_dir, max_disp=d)

    def test_fp16_large_logits_do_not_overflow(self, onnx_dir):
        """Logits far beyond FP16's range (6.5e4) stay finite: they are FP32 inside."""
        q, k, v = random_inputs(11, 1, 64, 3, 6, 6, scale=40.0, integer=True, dtype=torch.float16)
        for impl in IMPLS:
            got = self.check(impl, q, k, v, directory=onnx_dir, max_disp=2)
            assert torch.isfinite(got).all(), impl

    def test_native_accepts_any_layout(self):
        q, k, v = random_inputs(5, 2, 6, 5, 6, 7)
        q_t = q.transpose(2, 3).contiguous().transpose(2, 3)  # same values, other strides
        ref = psla(q, k, v, 2, impl="native")
        torch.testing.assert_close(psla(q_t, k, v, 2, impl="native"), ref)
        torch.testing.assert_close(psla(q, k, v[:, :, :, :], 2, impl="native").contiguous(), ref.contiguous())

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
    def test_native_builds_agree(self, dtype):
        """The AVX2 build (auto, where the CPU has it) and the baseline build,
        both against the naive loop, on channel counts that are not multiples
        of the 4-key pass or of the 32/64-channel tiles, and at the borders."""
        from vidtrt.ops.psla import psla_native

        q, k, v = random_inputs(21, 2, 70, 67, 9, 11, dtype=dtype)
        want = psla_naive(q.double(), k.double(), v.double(), 3)  # float64 on the same (rounded) inputs
        tol = 1e-5 if dtype == torch.float32 else 4e-3
        outs = {isa: psla_native(q, k, v, 3, isa=isa) for isa in ("generic", "auto")}
        for isa, got in outs.items():
            np.testing.assert_allclose(got.double().numpy(), want, atol=tol, rtol=0, err_msg=isa)
        torch.testing.assert_close(outs["auto"].float(), outs["generic"].float(), rtol=0, atol=tol)
        with pytest.raises(ValueError, match="isa must be one of"):
            psla_native(q, k, v, 3, isa="avx512")

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
    @pytest.mark.parametrize("isa", ["generic", "auto"])
    def test_native_planar_output_equals_channels_last(self, dtype, isa):
        """An NCHW output (what ONNX Runtime hands the kernel) goes through the
        launcher's staged path: runs of positions summed channels-last in a
        per-thread buffer, then stored plane by plane. It must equal the
        channels-last output bit for bit, including runs of 16 positions that
        cross from one image to the next (H·W = 99) and channel counts off
        the 8-wide register blocks (70), on both builds."""
        from vidtrt import _native
        from vidtrt.ops.psla import psla_native

        q, k, v = random_inputs(22, 2, 6, 70, 9, 11, dtype=dtype)
        want = psla_native(q, k, v, 2, isa=isa)
        ql, kl, vl = (t.contiguous(memory_format=torch.channels_last) for t in (q, k, v))
        for threads in (1, 2):
            out = torch.full_like(v, float("nan"))  # NCHW; every element must be written
            _native.kernels().psla_forward(
                str(dtype).removeprefix("torch."),
                ql.data_ptr(), kl.data_ptr(), vl.data_ptr(), out.data_ptr(),
                (2, 6, 70, 9, 11), 2,
                ql.stride(), kl.stride(), vl.stride(), out.stride(),
                threads, isa,
            )  # fmt: skip
            torch.testing.assert_close(out, want.contiguous(), rtol=0, atol=0)

    def test_reads_nchw_only_where_the_rows_schedule_runs(self):
        """psla_reads_nchw tells callers which layout to hand the kernel: NCHW
        for FP32 on an AVX2 + FMA CPU with isa="auto" (the NCHW-rows schedule),
        channels-last otherwise."""
        from vidtrt import _native

        kernels = _native.kernels()
        flags = set()
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
        assert kernels.psla_reads_nchw("float32", "auto") == ({"avx2", "fma", "f16c"} <= flags)
        assert not kernels.psla_reads_nchw("float16", "auto")
        assert not kernels.psla_reads_nchw("float32", "generic")
        with pytest.raises(ValueError, match="isa must be 'auto' or 'generic'"):
            kernels.psla_reads_nchw("float32", "avx512")

    # (W, max_disp): widths either side of the 8-column chunks and the
    # 64-column tiles, each with shifts up to the largest max_disp.
    ROW_CASES = [(1, 8), (7, 3), (8, 8), (9, 1), (15, 8), (16, 4), (17, 8), (55, 8), (56, 2), (57, 8),
                 (63, 4), (64, 8), (65, 8), (71, 5), (72, 8), (73, 1), (127, 8), (128, 3), (129, 8), (200, 0)]

    @pytest.mark.parametrize("w, d", ROW_CASES)
    def test_native_nchw_rows_against_reference(self, w, d):
        """The FP32 NCHW-rows schedule (or, on a CPU without AVX2, the
        per-position body) against the float64 reference, on every chunk and
        tile edge: row blocks cut short (H = 3), channel counts off the
        16-channel logit blocks and the channel pairs (c = 17, C = 3), two
        images. One and two threads give the same bits."""
        from vidtrt.ops.psla import psla_native, psla_reference

        q, k, v = random_inputs(w * 31 + d, 2, 17, 3, 3, w)
        want = psla_reference(q.double(), k.double(), v.double(), d)
        one = psla_native(q, k, v, d, num_threads=1)
        np.testing.assert_allclose(one.double().numpy(), want.numpy(), atol=2e-5, rtol=0)
        torch.testing.assert_close(psla_native(q, k, v, d, num_threads=2), one, rtol=0, atol=0)

    @pytest.mark.parametrize("isa", ["generic", "auto"])
    @pytest.mark.parametrize("w", [5, 70, 121])  # one partial chunk; a last tile of one chunk; of 8, the last 2 partial
    def test_native_views_read_and_write_only_their_columns(self, isa, w):
        """Views into wider rows (row stride W + 16, image stride not H·W):
        every schedule must read only the view's columns and write only its
        output's. The columns around each view hold NaN; reading one would
        reach the output (a weight of 0 times NaN is NaN), and writing past
        the output view's row would overwrite its 7.0 sentinels."""
        from vidtrt import _native

        n, c, big_c, h, d = 2, 20, 5, 5, 8
        q, k, v = random_inputs(40, n, c, big_c, h, w)
        want = psla(q, k, v, d, impl="reference")

        def wide(t, fill):
            buffer = torch.full((t.shape[0] + 1, t.shape[1], h, w + 16), fill)
            view = buffer[1:, :, :, 8 : 8 + w]
            view.copy_(t)
            return buffer, view

        (_, qv), (_, kv), (_, vv) = wide(q, float("nan")), wide(k, float("nan")), wide(v, float("nan"))
        out_buffer, out = wide(torch.zeros_like(v), 7.0)
        _native.kernels().psla_forward(
            "float32", qv.data_ptr(), kv.data_ptr(), vv.data_ptr(), out.data_ptr(), (n, c, big_c, h, w), d,
            qv.stride(), kv.stride(), vv.stride(), out.stride(), 2, isa,
        )  # fmt: skip
        torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
        outside = torch.ones_like(out_buffer, dtype=torch.bool)
        outside[1:, :, :, 8 : 8 + w] = False
        assert (out_buffer[outside] == 7.0).all()

    def test_zero_channels_refused_and_impl_compared_by_value(self):
        q, k, v = random_inputs(3, 1, 4, 3, 5, 6)
        with pytest.raises(ValueError, match="at least one channel"):
            psla(q[:, :0], k[:, :0], v, 1)
        impl = "".join(["nat", "ive"])  # a string built at run time, as one read from a config is
        torch.testing.assert_close(psla(q, k, v, 1, impl=impl), psla(q, k, v, 1, impl="native"), rtol=0, atol=0)
        impl = "".join(["refer", "ence"])
        torch.testing.assert_close(psla(q, k, v, 1, impl=impl), psla(q, k, v, 1, impl="reference"), rtol=0, atol=0)

    def test_work_and_paper_problem_by_hand(self):
        """The counts `selfcheck --bench` and the GPU roofline use, on a 3×4
        map with d = 1: FLOPs from the (cell, position) pairs inside the map,
        counted here cell by cell; bytes = size·N·H·W·(2c + 2C); and the
        paper-scale problem's shapes."""
        from vidtrt.ops.psla import paper_problem, work

        h, w, c, big_c = 3, 4, 5, 7
        inside = sum(
            1 for y in range(h) for x in range(w) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
            if 0 <= y + dy < h and 0 <= x + dx < w
        )  # fmt: skip
        t = torch.zeros(2, c, h, w), torch.zeros(2, c, h, w), torch.zeros(2, big_c, h, w)
        assert work(t, {"max_disp": 1}) == {"flops": 2.0 * 2 * inside * (c + big_c), "bytes": 4.0 * 2 * h * w * (2 * c + 2 * big_c)}
        half = tuple(x.half() for x in t)
        assert work(half, {"max_disp": 1})["bytes"] == 2.0 * 2 * h * w * (2 * c + 2 * big_c)
        (q, k, v), attrs, counted = paper_problem()
        # The paper's setting: c = 256, C = 1024 on the 38×63 map of a 600×1000 frame, d = 4.
        assert q.shape == k.shape == (1, 256, 38, 63) and v.shape == (1, 1024, 38, 63) and attrs == {"max_disp": 4}
        assert float(q.std()) < 0.2 and counted == work((q, k, v), attrs)

    def test_devices_checked(self):
        """Tensors on different devices are refused (the fused kernel's
        CPU-only check is OpTester's)."""
        q, k, v = random_inputs(4, 1, 3, 2, 4, 5)
        for on_meta in range(3):  # each tensor apart from the other two
            tensors = [t.to("meta") if i == on_meta else t for i, t in enumerate((q, k, v))]
            with pytest.raises(ValueError, match="on one device"):
                psla(*tensors, 1)

    def test_selfcheck_example_is_a_valid_problem(self):
        """The example `vidtrt selfcheck` runs: a quarter of the paper's
        channels on a 19×32 map, d = 4, a valid call of the op."""
        from vidtrt.ops.psla import example

        (q, k, v), attrs = example()
        assert q.shape == k.shape == (1, 64, 19, 32) and v.shape == (1, 256, 19, 32) and attrs == {"max_disp": 4}
        assert psla(q, k, v, **attrs).shape == v.shape

    def test_reference_is_differentiable(self):
        q, k, v = (t.double().requires_grad_() for t in random_inputs(1, 1, 3, 2, 4, 5))
        assert torch.autograd.gradcheck(lambda a, b, c: psla(a, b, c, 2), (q, k, v))

    def test_reference_gradient_matches_naive_finite_difference(self):
        """A second, independent gradient check: d(sum out)/d value from the naive loop."""
        q, k, v = random_inputs(2, 1, 2, 2, 3, 3)
        v = v.double().requires_grad_()
        psla(q.double(), k.double(), v, 1).sum().backward()
        eps = 1e-6
        base = psla_naive(q, k, v.detach(), 1).sum()
        bumped = v.detach().clone()
        bumped[0, 1, 2, 0] += eps
        numeric = (psla_naive(q, k, bumped, 1).sum() - base) / eps
        assert math.isclose(v.grad[0, 1, 2, 0].item(), numeric, rel_tol=1e-4)
