"""Relation propagation: reference, native (fused host kernel) and ONNX graph
(ONNX Runtime) against a naive loop written from the paper's equations
(MFSA §2.2, Eq. 1-3)."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from op_tester import IMPLS, OpTester

from vidtrt.ops import relation_propagation
from vidtrt.ops.relation_propagation import relation_propagation_native


def relation_propagation_naive(sigma, phi, regions, valid=None):
    """Eq. (1)-(3) in float64: A entry by entry, then A·A + A, then row sums."""
    s, p, r = (np.asarray(t, dtype=np.float64) for t in (sigma, phi, regions))
    n = len(s)
    ok = np.ones(n, dtype=bool) if valid is None else np.asarray(valid, dtype=np.float64) != 0

    def unit(x):  # a zero vector normalises to zero
        norm = math.sqrt(float(x @ x))
        return x / norm if norm > 0 else np.zeros_like(x)

    s_unit = [unit(x) for x in s]
    p_unit = [unit(x) for x in p]
    a = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if ok[i] and ok[j]:
                a[i, j] = max(0.0, float(s_unit[i] @ p_unit[j]))  # Eq. (1)
    b = a @ a + a  # Eq. (2), before Norm
    out = np.zeros((n, r.shape[1]))
    for i in range(n):
        total = b[i].sum()
        if total > 0:  # Norm: a row that sums to 0 stays 0
            out[i] = (b[i] / total) @ r  # Eq. (3)
    return out


MASKS = ["absent", "all", "some", "all_but_one", "none"]


def make_valid(mask: str, n: int, rng: np.random.Generator):
    if mask == "absent":
        return None
    if mask == "all":
        flags = np.ones(n, dtype=bool)
    elif mask == "some":
        flags = rng.random(n) < 0.6
    elif mask == "all_but_one":
        flags = np.ones(n, dtype=bool)
        flags[rng.integers(n)] = False
    else:
        flags = np.zeros(n, dtype=bool)
    return torch.from_numpy(flags)


def random_problem(seed, n, d, big_d, mask="some", dtype=torch.float32, shift=0.3):
    """Embeddings share a component (`shift`) so that cosines of both signs occur."""
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(d) * shift
    sigma = rng.standard_normal((n, d)) + common
    phi = rng.standard_normal((n, d)) + common
    regions = rng.standard_normal((n, big_d))
    tensors = tuple(torch.from_numpy(t.astype(np.float32)).to(dtype) for t in (sigma, phi, regions))
    return tensors + (make_valid(mask, n, rng),)


# FP32 against float64: sums of up to N² products of O(1) terms, rounded
# at ~6e-8 relative each; measured deviations stay below 1e-6.
FP32_TOL = dict(rtol=1e-5, atol=1e-5)

shapes = st.tuples(st.integers(1, 40), st.integers(1, 6), st.integers(1, 6))  # N, d, D

# FP16 storage, FP32 inside: the output is rounded to FP16 (half an ulp,
# ≤ 2^-11 relative, outputs are O(1)) on top of the FP32 deviations.
FP16_TOL = dict(rtol=2e-3, atol=2e-3)

GOOD = dict(sigma=torch.zeros(4, 3), phi=torch.zeros(4, 3), regions=torch.zeros(4, 5), valid=torch.ones(4))


class TestRelationPropagation(OpTester):
    op_type = "RelationPropagation"
    META_STANDS_IN_FOR_A_GPU = False  # the input checks read valid's 0/1 values first
    TOLERANCE = {torch.float32: FP32_TOL, torch.float16: FP16_TOL}
    DYNAMIC_AXES = {
        "sigma": {0: "N", 1: "d"},
        "phi": {0: "N", 1: "d"},
        "regions": {0: "N", 1: "D"},
        "valid": {0: "N"},
        "out": {0: "N", 1: "D"},
    }
    GRAPH_DTYPES = (torch.float32, torch.float32, torch.float32, torch.bool)
    GRAPH_ATTRS = {}
    GRAPH_NODE_ATTRIBUTES = {}
    GRAPH_OUTPUT_DIMS = ["N", "D"]
    GOOD = GOOD
    BAD_INPUTS = [
        (dict(sigma=torch.zeros(4, 3, 1)), r"sigma must have rank 2 \[N, d\], got shape \[4, 3, 1\]"),
        (dict(phi=torch.zeros(12)), r"phi must have rank 2 \[N, d\], got shape \[12\]"),
        (dict(regions=torch.zeros(4)), r"regions must have rank 2 \[N, D\], got shape \[4\]"),
        (dict(valid=torch.ones(4, 1)), r"valid must have rank 1 \[N\], got shape \[4, 1\]"),
        (dict(phi=torch.zeros(5, 3)), r"phi must have N = 4 rows like sigma, got phi \[5, 3\] and sigma \[4, 3\]"),
        (dict(regions=torch.zeros(3, 5)), r"regions must have N = 4 rows like sigma, got regions \[3, 5\]"),
        (dict(valid=torch.ones(5)), r"valid must have N = 4 rows like sigma, got valid \[5\]"),
        (dict(phi=torch.zeros(4, 2)), r"sigma and phi must have the same d, got sigma \[4, 3\] and phi \[4, 2\]"),
        (dict(phi=torch.zeros(4, 4)), r"sigma and phi must have the same d, got sigma \[4, 3\] and phi \[4, 4\]"),
        (dict(sigma=torch.zeros(4, 0), phi=torch.zeros(4, 0)), r"need d >= 1 channels, got sigma \[4, 0\]"),
        (dict(regions=torch.zeros(4, 5, dtype=torch.float16)), r"must share one dtype, got torch.float32, torch.float32, torch.float16"),
        (dict(sigma=torch.zeros(4, 3, dtype=torch.int32), phi=torch.zeros(4, 3, dtype=torch.int32),
              regions=torch.zeros(4, 5, dtype=torch.int32)), r"must be float32 or float16, got torch.int32"),  # fmt: skip
        (dict(valid=torch.ones(4, dtype=torch.complex64)), r"valid must be bool, integer or floating \(0/1\), got torch.complex64"),
        (dict(valid=torch.tensor([1.0, 0.0, 0.5, 1.0])), r"valid must hold 0/1, got valid\[2\] = 0.5"),
        (dict(valid=torch.tensor([1, 2, 0, 1])), r"valid must hold 0/1, got valid\[1\] = 2"),
        (dict(valid=torch.tensor([1.0, float("nan"), 0.0, 1.0])), r"valid must hold 0/1, got valid\[1\] = nan"),
        (dict(valid=[1, 1, 1, 1]), r"valid must be a torch.Tensor, got list"),
        (dict(sigma=np.zeros((4, 3))), r"sigma must be a torch.Tensor, got ndarray"),
        (dict(valid=torch.ones(4, device="meta")), r"all inputs must be on one device, got .*valid on meta"),
    ]
    NATIVE_FLOAT64_MESSAGE = "impl='native' takes float32 or float16, got torch.float64"
    FLOAT64_INPUTS = ("sigma", "phi", "regions")
    DIFFERENTIABLE_INPUTS = ("sigma", "phi", "regions")  # not valid: a 0/1 mask

    oracle = staticmethod(relation_propagation_naive)

    def export_inputs(self, dtypes, attrs):
        """Exported at N=5, d=3, D=2 and run at other shapes (all axes dynamic)."""
        sigma = torch.randn(5, 3).to(dtypes[0])
        regions = torch.randn(5, 2).to(dtypes[2])
        absent = len(dtypes) < 4 or dtypes[3] is None
        valid = None if absent else torch.tensor([1, 0, 1, 1, 0]).to(dtypes[3])
        return sigma, sigma.to(dtypes[1]), regions, valid

    def check_graph(self, model, node, function):
        assert list(node.input[:3]) == ["sigma", "phi", "regions"]
        # The bool graph input reaches the node cast to sigma's type.
        producer = {out: n for n in model.graph.node for out in n.output}[node.input[3]]
        assert producer.op_type == "Cast" and list(producer.input) == ["valid"]
        assert onnx.helper.get_attribute_value(producer.attribute[0]) == onnx.TensorProto.FLOAT
        assert list(function.input) == ["sigma", "phi", "regions", "valid"]

    @pytest.mark.parametrize("impl", IMPLS)
    @settings(max_examples=40, deadline=None)
    @given(shape=shapes, seed=st.integers(0, 2**31 - 1), mask=st.sampled_from(MASKS))
    def test_matches_naive_random(self, impl, shape, seed, mask, onnx_dir):
        n, d, big_d = shape
        s, p, r, v = random_problem(seed, n, d, big_d, mask)
        got = self.check(impl, s, p, r, v, directory=onnx_dir)
        assert got.shape == (n, big_d) and got.dtype == r.dtype

    @pytest.mark.parametrize("impl", IMPLS)
    @pytest.mark.parametrize("n, d, big_d", [(97, 16, 24), (300, 32, 40)])
    def test_few_hundred_regions(self, impl, n, d, big_d, onnx_dir):
        """Several of the host kernel's row and column blocks, with partial ones at the end."""
        s, p, r, v = random_problem(n, n, d, big_d, "some")
        self.check(impl, s, p, r, v, directory=onnx_dir)

    @pytest.mark.parametrize("impl", IMPLS)
    def test_masks(self, impl, onnx_dir):
        run = lambda s, p, r, v: self.run(impl, s, p, r, v, directory=onnx_dir)  # noqa: E731
        s, p, r, _ = random_problem(4, 12, 5, 3, "absent", shift=2.0)
        everything = run(s, p, r, None)
        torch.testing.assert_close(run(s, p, r, torch.ones(12, dtype=torch.bool)), everything)
        # No valid region: nothing to propagate.
        assert torch.equal(run(s, p, r, torch.zeros(12, dtype=torch.bool)), torch.zeros(12, 3))
        # One valid region k: Â has the single entry Â_kk = 1 when cos(σ_k, φ_k) > 0.
        k = 7
        only = torch.zeros(12, dtype=torch.bool)
        only[k] = True
        assert float(torch.nn.functional.cosine_similarity(s[k], p[k], dim=0)) > 0
        got = run(s, p, r, only)
        expected = torch.zeros(12, 3)
        expected[k] = r[k]
        torch.testing.assert_close(got, expected, **FP32_TOL)
        # Invalid rows are 0, and invalid regions contribute nothing to valid rows.
        some = torch.tensor([i % 3 != 0 for i in range(12)])
        got = run(s, p, r, some)
        assert torch.equal(got[~some], torch.zeros(4, 3))
        r_changed = r.clone()
        r_changed[~some] = 1e3
        torch.testing.assert_close(run(s, p, r_changed, some), got, **FP32_TOL)

    @pytest.mark.parametrize("impl", ["reference", "native"])
    @pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int64, torch.float32, torch.float64])
    def test_valid_dtypes(self, impl, dtype):
        s, p, r, v = random_problem(5, 9, 4, 3, "some")
        expected = relation_propagation_naive(s, p, r, v)
        np.testing.assert_allclose(relation_propagation(s, p, r, v.to(dtype), impl=impl).numpy(), expected, **FP32_TOL)

    @pytest.mark.parametrize("kind", ["float32", "int64"])
    def test_onnx_valid_dtypes(self, kind, onnx_dir):
        s, p, r, v = random_problem(6, 9, 4, 3, "some")
        got = self.run_onnx(s, p, r, v.to(getattr(torch, kind)), directory=onnx_dir)
        np.testing.assert_allclose(got.numpy(), relation_propagation_naive(s, p, r, v), **FP32_TOL)

    @pytest.mark.parametrize("impl", IMPLS)
    def test_zero_vectors(self, impl, onnx_dir):
        """A zero sigma_i gives a zero row of A (so out_i = 0); a zero phi_j gives
        a zero column (region j is propagated to nobody)."""
        s, p, r, v = random_problem(8, 10, 4, 3, "absent", shift=2.0)
        s[2] = 0
        p[5] = 0
        s[7] = 0
        p[7] = 0
        got = self.check(impl, s, p, r, v, directory=onnx_dir)
        assert torch.equal(got[2], torch.zeros(3)) and torch.equal(got[7], torch.zeros(3))
        assert got[5].abs().sum() > 0  # its own row still receives relation
        # Columns 5 and 7 of A are 0, so are those of A·A (Σ_k A_ik A_k5 = 0) and
        # B: regions 5 and 7 reach no output row.
        r_changed = r.clone()
        r_changed[5] = 1e3
        r_changed[7] = -1e3
        torch.testing.assert_close(self.run(impl, s, p, r_changed, v, directory=onnx_dir), got, **FP32_TOL)
        all_zero = torch.zeros_like(s)
        assert torch.equal(self.run(impl, all_zero, p, r, v, directory=onnx_dir), torch.zeros(10, 3))

    @pytest.mark.parametrize("impl", IMPLS)
    def test_negative_cosines_are_clipped(self, impl, onnx_dir):
        """phi_j = -sigma_j with sigma in one half-plane: every cosine with i = j is
        -1 and clipped; without Eq. 1's max(0, ·) the result would differ."""
        angles = torch.linspace(0.1, 1.4, 6)
        s = torch.stack([angles.cos(), angles.sin()], dim=1)
        p = -s
        r = torch.randn(6, 4)
        got = self.run(impl, s, p, r, None, directory=onnx_dir)
        assert torch.equal(got, torch.zeros(6, 4))  # all cosines are negative
        # Mixed signs: half the phis flipped.
        p = s.clone()
        p[::2] = -s[::2]
        got = self.check(impl, s, p, r, None, directory=onnx_dir)
        unclipped = torch.nn.functional.normalize(s, dim=1) @ torch.nn.functional.normalize(p, dim=1).T
        b = (unclipped @ unclipped + unclipped).double()
        without_clip = (b / b.sum(1, keepdim=True)) @ r.double()
        assert not np.allclose(got.numpy(), without_clip.numpy(), atol=1e-3)

    @pytest.mark.parametrize("impl", IMPLS)
    def test_single_region_and_empty_columns(self, impl, onnx_dir):
        s, p, r, _ = random_problem(9, 1, 3, 2, "absent", shift=3.0)
        assert float(s[0] @ p[0]) > 0
        torch.testing.assert_close(self.run(impl, s, p, r, None, directory=onnx_dir), r, **FP32_TOL)
        s, p, r, v = random_problem(10, 4, 3, 0, "some")
        assert self.run(impl, s, p, r, v, directory=onnx_dir).shape == (4, 0)

    @pytest.mark.parametrize("impl", ["reference", "native"])
    def test_empty_batch(self, impl):
        got = relation_propagation(torch.zeros(0, 3), torch.zeros(0, 3), torch.zeros(0, 5), impl=impl)
        assert got.shape == (0, 5)

    @pytest.mark.parametrize("impl", IMPLS)
    @settings(max_examples=25, deadline=None)
    @given(shape=shapes, seed=st.integers(0, 2**31 - 1), mask=st.sampled_from(MASKS))
    def test_fp16(self, impl, shape, seed, mask, onnx_dir):
        """Against the float64 oracle evaluated on the same FP16-rounded inputs."""
        n, d, big_d = shape
        s, p, r, v = random_problem(seed, n, d, big_d, mask, dtype=torch.float16)
        got = self.check(impl, s, p, r, v, directory=onnx_dir)
        assert got.dtype == torch.float16 and got.shape == (n, big_d)

    def test_fp16_large_values_stay_finite(self, onnx_dir):
        """Squared norms far beyond FP16's range (6.5e4) are FP32 inside."""
        s, p, r, v = random_problem(12, 20, 64, 5, "some")
        s, p = (t * 3000 for t in (s, p))
        s, p, r = (t.half() for t in (s, p, r))
        for impl in IMPLS:
            got = self.check(impl, s, p, r, v, directory=onnx_dir)
            assert torch.isfinite(got).all(), impl

    def test_native_builds_agree(self):
        """The AVX2 build (auto, where the CPU has it) and the baseline build, and
        any thread count: each row's arithmetic does not depend on the split."""
        s, p, r, v = random_problem(13, 130, 20, 50, "some")
        generic = relation_propagation_native(s, p, r, v, isa="generic")
        auto = relation_propagation_native(s, p, r, v, num_threads=1)
        torch.testing.assert_close(auto, generic, rtol=1e-6, atol=1e-6)
        self.assert_thread_count_invariant(relation_propagation_native, s, p, r, v, threads=(1, 2, 3))

    def test_native_accepts_any_layout(self):
        s, p, r, v = random_problem(14, 50, 6, 20, "some")
        expected = relation_propagation(s, p, r, v, impl="native")
        column_major = [t.t().contiguous().t() for t in (s, p, r)]
        wide = torch.zeros(50, 40)
        wide[:, 3:23] = r
        for args in (column_major, [s, p, wide[:, 3:23]], [s[:, :], p, r]):
            torch.testing.assert_close(relation_propagation(*args, v, impl="native"), expected, rtol=1e-6, atol=1e-6)
        strided_valid = torch.stack([v, ~v], dim=1)[:, 0]
        assert strided_valid.stride(0) == 2
        torch.testing.assert_close(relation_propagation(s, p, r, strided_valid, impl="native"), expected)

    def test_reference_gradcheck(self):
        s, p, r, v = (t.double() if t.dtype.is_floating_point else t for t in random_problem(15, 7, 3, 2, "some"))
        args = tuple(t.requires_grad_() for t in (s, p, r))
        assert torch.autograd.gradcheck(lambda a, b, c: relation_propagation(a, b, c, v), args)
        assert torch.autograd.gradcheck(lambda a, b, c: relation_propagation(a, b, c), args)

    def test_reference_gradient_matches_naive_finite_difference(self):
        """An independent check of one gradient entry against the naive loop."""
        s, p, r, v = random_problem(16, 6, 3, 2, "some")
        s = s.double().requires_grad_()
        relation_propagation(s, p.double(), r.double(), v).sum().backward()
        i = int(torch.nonzero(v)[0, 0])
        eps = 1e-6
        bumped = s.detach().clone()
        bumped[i, 1] += eps
        base = relation_propagation_naive(s.detach(), p, r, v).sum()
        numeric = (relation_propagation_naive(bumped, p, r, v).sum() - base) / eps
        assert math.isclose(s.grad[i, 1].item(), numeric, rel_tol=1e-4, abs_tol=1e-8)

    def test_onnx_without_valid_has_four_node_inputs(self, onnx_dir):
        """valid=None: the graph has three inputs and the node a fourth, all ones
        of length N computed from sigma's shape (so N stays dynamic)."""
        model = self.exported_model(onnx_dir, (torch.float32,) * 3 + (None,), {})
        assert [i.name for i in model.graph.input] == ["sigma", "phi", "regions"]
        node = next(n for n in model.graph.node if n.domain == "vidtrt")
        assert len(node.input) == 4
        s, p, r, _ = random_problem(17, 23, 4, 6, "absent")
        np.testing.assert_allclose(self.run_onnx(s, p, r, None, directory=onnx_dir).numpy(),
                                   relation_propagation_naive(s, p, r), **FP32_TOL)  # fmt: skip

    def test_bad_impl_and_native_dtype(self):
        super().test_bad_impl_and_native_dtype()
        with pytest.raises(ValueError, match="isa must be one of"):
            relation_propagation_native(GOOD["sigma"], GOOD["phi"], GOOD["regions"], isa="avx512")

    def test_work_counts_by_hand(self):
        """What selfcheck --bench and the GPU roofline divide by: N = 10
        regions, d = 3, D = 5. FLOPs: the affinity tile twice (2·N²·d
        multiply-adds) and Â·R, Â·Y (2·N²·D), two FLOPs each:
        2·(2·100·3 + 2·100·5) = 3200. Bytes: σ and φ read (N·d each), R read
        and the output written (N·D each), one byte of validity per region:
        float32 4·10·(6 + 10) + 10 = 650, float16 2·10·16 + 10 = 330."""
        from vidtrt.ops.registry import registered_ops

        work = registered_ops()["RelationPropagation"].work
        for dtype, nbytes in ((torch.float32, 650.0), (torch.float16, 330.0)):
            s, p = torch.zeros(10, 3, dtype=dtype), torch.zeros(10, 3, dtype=dtype)
            r = torch.zeros(10, 5, dtype=dtype)
            assert work((s, p, r, torch.ones(10, dtype=torch.bool)), {}) == {"flops": 3200.0, "bytes": nbytes}

    def test_selfcheck_example_and_paper_problem_shapes(self):
        """`vidtrt selfcheck` runs the example, a quarter of MFSA's batch:
        K = 3 frames × 100 proposals, the last 20 of each frame padding; the
        benchmark's paper problem is 21 × 300 regions, d = 256, D = 1024, all
        valid, with the work counted on those shapes."""
        from vidtrt.ops.registry import registered_ops
        from vidtrt.ops.relation_propagation import example, paper_problem

        (s, p, r, valid), attrs = example()
        assert s.shape == p.shape == (300, 64) and r.shape == (300, 256) and attrs == {}
        assert valid.tolist() == ([True] * 80 + [False] * 20) * 3
        assert relation_propagation(s, p, r, valid).shape == r.shape
        # sigma and phi share a component, so the affinities the example exercises are not all clipped to 0.
        cosines = torch.nn.functional.normalize(s, dim=1) @ torch.nn.functional.normalize(p, dim=1).T
        assert float((cosines > 0).float().mean()) > 0.9
        (s, p, r, valid), attrs, work = paper_problem()
        assert s.shape == p.shape == (6300, 256) and r.shape == (6300, 1024) and bool(valid.all()) and attrs == {}
        assert work == registered_ops()["RelationPropagation"].work((s, p, r, valid), {})

    def test_one_region_valid_values_checked(self):
        """A single region is checked like any other count (an empty one has nothing to check)."""
        s, p, r, _ = random_problem(3, 1, 3, 4, "all")
        with pytest.raises(ValueError, match=r"valid must hold 0/1, got valid\[0\] = 2"):
            relation_propagation(s, p, r, torch.tensor([2.0]))
        empty = random_problem(3, 0, 3, 4, "all")[:3]
        assert relation_propagation(*empty, torch.zeros(0)).shape == (0, 4)

    def test_native_refuses_other_devices_and_names_the_first_bad_flag(self):
        s, p, r, _ = random_problem(4, 4, 3, 5, "all")
        meta = [t.to("meta") for t in (s, p, r)]  # the meta device stands in for a GPU
        with pytest.raises(ValueError, match="impl='native' runs on the CPU, got tensors on meta"):
            relation_propagation_native(*meta)
        with pytest.raises(ValueError, match=r"valid must hold 0/1, got valid\[1\] = 0.5"):
            relation_propagation(s, p, r, torch.tensor([1.0, 0.5, 1.0, 3.0]))
