"""`vidtrt selfcheck --bench` (vidtrt/op_bench.py) on small problems: every
path is timed and its output checked against the reference, the native
kernel is also timed alone on inputs in its own layout where the op's entry
point copies them, and the figures derive from the medians as stated."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vidtrt import op_bench
from vidtrt.ops import registry


class FixedCeiling:
    """An sgemm stand-in that takes no time and reports 100 GFLOP/s, so the fractions are checkable."""

    def __call__(self):
        pass

    def gflops(self, ms: float) -> float:
        return 100.0


def small(op_type: str):
    op = registry.registered_ops()[op_type]
    tensors, attrs = op.example(torch.float32)
    return dataclasses.replace(op, paper_problem=lambda: (tensors, attrs, op.work(tensors, attrs)))


@pytest.mark.parametrize("op_type,has_kernel_path", [("PSLA", True), ("MostSimilarRoIAlign", True), ("RelationPropagation", False)])
def test_bench_row(op_type, has_kernel_path, tmp_path):
    op = small(op_type)
    row = op_bench.bench_op(op, tmp_path, threads=1, repeat=2, slow_repeat=1, sgemm=FixedCeiling(), log=lambda m: None)
    median = row["median_ms"]
    assert ("native_kernel" in median) == has_kernel_path
    assert all(len(row["times_ms"][k]) == (1 if k in ("reference", "onnxruntime_decomposed") else 2) for k in row["times_ms"])
    assert max(row["max_abs_deviation_vs_reference"].values()) < 1e-4
    kernel_ms = median.get("native_kernel", median["native"])
    assert row["native_kernel_gflops"] == pytest.approx(row["flops"] / (kernel_ms * 1e-3) / 1e9)
    assert row["native_kernel_fraction_of_sgemm_ceiling"] == pytest.approx(row["native_kernel_gflops"] / 100.0)
    assert row["native_fraction_of_sgemm_ceiling"] == pytest.approx(row["flops"] / (median["native"] * 1e-3) / 1e9 / 100.0)
    table = op_bench.format_table({"sgemm_ceiling": {"size": 1}, "threads": 1, "ops": [row]})
    assert f"{row['native_kernel_fraction_of_sgemm_ceiling']:.1%}" in table


def test_kernel_layout_is_the_layout_the_kernel_reads_and_the_same_values():
    """PSLA's kernel layout follows psla_reads_nchw (NCHW for FP32 where the
    NCHW-rows schedule runs, channels-last otherwise); MostSimilarRoIAlign's
    is channels-last. Values are unchanged either way."""
    from vidtrt import _native

    ops = registry.registered_ops()
    for name, dtype in (("PSLA", torch.float32), ("PSLA", torch.float16), ("MostSimilarRoIAlign", torch.float32)):
        tensors, _ = ops[name].example(dtype)
        four_d = [t for t in tensors if t.dim() == 4]
        assert all(not t.is_contiguous(memory_format=torch.channels_last) for t in four_d)  # so the test can fail
        laid_out = ops[name].kernel_layout(tensors)
        nchw = name == "PSLA" and _native.kernels().psla_reads_nchw(str(dtype).removeprefix("torch."), "auto")
        layout = torch.contiguous_format if nchw else torch.channels_last
        assert all(t.is_contiguous(memory_format=layout) for t in laid_out if t.dim() == 4), (name, dtype)
        assert all(torch.equal(a, b) for a, b in zip(tensors, laid_out))
    assert registry.registered_ops()["FixedSizeNMS"].kernel_layout is None


def test_fast_paths_take_turns_after_the_sgemm():
    """Each fast path is timed first after the sgemm (cold caches) equally
    often over a multiple of the path count, and every round times each once."""
    keys = ["native", "native_kernel", "onnxruntime_fused"]
    rounds = [op_bench.rotated(keys, r) for r in range(6)]
    assert all(sorted(r) == sorted(keys) for r in rounds)
    assert [r[0] for r in rounds] == keys + keys
    assert op_bench.rotated([], 3) == []
