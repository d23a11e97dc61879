"""Relation propagation benchmark at MFSA's inference scale (N = 21 frames ×
300 proposals = 6300 regions, d = 256, D = 1024).

Times the PyTorch reference (the literal equations: A·A is an N³ product),
the fused host kernel (two N²·D products, see
plugins/relation_propagation/relation_propagation_kernel.h) and the ONNX
graph in ONNX Runtime (literal, like the reference) side by side in one run,
with the same thread count for all three. CPU timings are only meaningful as
ratios within one run.

    .venv/bin/python benchmarks/bench_relation_propagation.py [--repeat 3] [--onnx-repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
from pathlib import Path

import onnxruntime as ort
import torch

from _timing import OpModule, timed

from vidtrt.export.onnx import export_module
from vidtrt.ops import relation_propagation


def fused_flops(n: int, d: int, big_d: int) -> float:
    """What the host kernel computes, 2 FLOPs per multiply-add: every A tile
    twice (once per pass, N²·d each) and the products A·R and A·Y (N²·D each).
    Inverse norms, epilogues and row sums (O(N·d + N²)) are left out."""
    return 2.0 * (2 * n * n * d + 2 * n * n * big_d)


def literal_flops(n: int, d: int, big_d: int) -> float:
    """What the literal equations (reference, ONNX graph) compute: A (N²·d),
    A·A (N³) and Â·R (N²·D) multiply-adds."""
    return 2.0 * (n * n * d + n**3 + n * n * big_d)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="6300,256,1024", help="N,d,D (default: 21 frames x 300 proposals, 256, 1024)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--onnx-repeat", type=int, default=2, help="the literal graph is slow; fewer runs")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--json", default="benchmarks/results/relation_propagation_cpu.json")
    args = parser.parse_args()

    n, d, big_d = map(int, args.shape.split(","))
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    # Embeddings sharing a component, so A is dense with positive entries, as
    # for proposals of the same objects across frames.
    common = torch.randn(1, d, generator=g)
    sigma = torch.randn(n, d, generator=g) + common
    phi = torch.randn(n, d, generator=g) + common
    regions = torch.randn(n, big_d, generator=g)
    valid = torch.ones(n, dtype=torch.bool)

    results = {}
    with torch.no_grad():
        results["reference"] = timed(lambda: relation_propagation(sigma, phi, regions, valid), args.repeat)
        results["native"] = timed(lambda: relation_propagation(sigma, phi, regions, valid, impl="native"), args.repeat)
        ref = relation_propagation(sigma, phi, regions, valid)
        deviation = float((relation_propagation(sigma, phi, regions, valid, impl="native") - ref).abs().max())
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "relation_propagation.onnx"
            names = ["sigma", "phi", "regions", "valid"]
            export_module(OpModule("RelationPropagation"), (sigma, phi, regions, valid), path, names, ["out"])
            options = ort.SessionOptions()
            options.intra_op_num_threads = args.threads
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            feeds = {"sigma": sigma.numpy(), "phi": phi.numpy(), "regions": regions.numpy(), "valid": valid.numpy()}
            results["onnxruntime"] = timed(lambda: session.run(None, feeds), args.onnx_repeat)
            onnx_deviation = float((torch.from_numpy(session.run(None, feeds)[0]) - ref).abs().max())

    median = {k: statistics.median(v) for k, v in results.items()}
    gflops = fused_flops(n, d, big_d) / (median["native"] * 1e-3) / 1e9
    print(f"RelationPropagation N={n} d={d} D={big_d}, {args.threads} threads, {platform.processor() or platform.machine()}")
    print(f"{'impl':<12} {'median ms':>10} {'vs native':>10}")
    for name, ms in median.items():
        print(f"{name:<12} {ms:>10.1f} {ms / median['native']:>9.1f}x")
    print(
        f"native: {gflops:.1f} GFLOP/s ({fused_flops(n, d, big_d) / 1e9:.1f} GFLOP fused vs "
        f"{literal_flops(n, d, big_d) / 1e9:.1f} GFLOP literal); max |native - reference| = {deviation:.2e}, "
        f"max |onnxruntime - reference| = {onnx_deviation:.2e}"
    )
    if median["native"] >= median["reference"]:
        print("WARNING: the native kernel did not beat the reference")

    report = {
        "op": "RelationPropagation",
        "shape": {"N": n, "d": d, "D": big_d},
        "threads": args.threads,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "times_ms": results,
        "median_ms": median,
        "speedup_native_vs_reference": median["reference"] / median["native"],
        "speedup_native_vs_onnxruntime": median["onnxruntime"] / median["native"],
        "native_gflops": gflops,
        "fused_gflop": fused_flops(n, d, big_d) / 1e9,
        "literal_gflop": literal_flops(n, d, big_d) / 1e9,
        "max_abs_deviation_native_vs_reference": deviation,
        "max_abs_deviation_onnxruntime_vs_reference": onnx_deviation,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
