"""PSLA op benchmark at the paper's scale (N=1, c=256, C=1024, 38×63, d=4).

Times the PyTorch reference, the fused host kernel and the ONNX graph in ONNX
Runtime side by side in one run, with the same thread count for all three.
CPU timings are only meaningful as ratios within one run.

    .venv/bin/python benchmarks/bench_psla.py [--repeat 10] [--json benchmarks/results/psla_cpu.json]
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
from vidtrt.ops import psla
from vidtrt.ops.psla import inside_mask


def flops(n, c, big_c, h, w, d) -> float:
    """2 FLOPs per multiply-add over the in-map cells: logits (c) and weighted sum (C)."""
    cells = int(inside_mask(h, w, d).sum())
    return 2.0 * n * cells * (c + big_c)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="1,256,1024,38,63", help="N,c,C,H,W (default: the paper's)")
    parser.add_argument("--max-disp", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--onnx-repeat", type=int, default=3, help="the decomposed graph is slow; fewer runs")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--json", default="benchmarks/results/psla_cpu.json")
    args = parser.parse_args()

    n, c, big_c, h, w = map(int, args.shape.split(","))
    d = args.max_disp
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    query = torch.randn(n, c, h, w, generator=g) * 0.1
    key = torch.randn(n, c, h, w, generator=g) * 0.1
    value = torch.randn(n, big_c, h, w, generator=g)

    results = {}
    with torch.no_grad():
        results["reference"] = timed(lambda: psla(query, key, value, d, impl="reference"), args.repeat)
        results["native"] = timed(lambda: psla(query, key, value, d, impl="native"), args.repeat)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "psla.onnx"
            export_module(OpModule("PSLA", max_disp=d), (query, key, value), path, ["query", "key", "value"], ["out"])
            options = ort.SessionOptions()
            options.intra_op_num_threads = args.threads
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            feeds = {"query": query.numpy(), "key": key.numpy(), "value": value.numpy()}
            results["onnxruntime"] = timed(lambda: session.run(None, feeds), args.onnx_repeat)
        ref = psla(query, key, value, d, impl="reference")
        deviation = float((psla(query, key, value, d, impl="native") - ref).abs().max())

    median = {k: statistics.median(v) for k, v in results.items()}
    gflops = flops(n, c, big_c, h, w, d) / (median["native"] * 1e-3) / 1e9
    print(f"PSLA N={n} c={c} C={big_c} H={h} W={w} max_disp={d}, {args.threads} threads, {platform.processor() or platform.machine()}")
    print(f"{'impl':<12} {'median ms':>10} {'vs native':>10}")
    for name, ms in median.items():
        print(f"{name:<12} {ms:>10.2f} {ms / median['native']:>9.1f}x")
    print(f"native: {gflops:.2f} GFLOP/s; max |native - reference| = {deviation:.2e}")
    if median["native"] >= median["reference"]:
        print("WARNING: the native kernel did not beat the reference")

    report = {
        "op": "PSLA",
        "shape": {"N": n, "c": c, "C": big_c, "H": h, "W": w, "max_disp": d},
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
        "max_abs_deviation_native_vs_reference": deviation,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
