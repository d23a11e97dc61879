"""MS RoI Align op benchmark at the paper's scale (R=300 RoIs, C=512, 7×7,
T=14 support frames of 38×63, top_k=2 as in mmtracking's configs).

Times the PyTorch reference, the fused host kernel and the ONNX graph in ONNX
Runtime side by side in one run, with the same thread count for all three.
CPU timings are only meaningful as ratios within one run. The reference forms
the similarity matrix one support frame at a time (~140 MB each at full
scale), and so does the ONNX graph (a Loop over the frames); --scale shrinks
R and T (both) when that is too much, and the report says what ran.

    .venv/bin/python benchmarks/bench_most_similar_roi_align.py [--scale 1.0] [--repeat 5]
        [--json benchmarks/results/most_similar_roi_align_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import tempfile
from pathlib import Path

import onnxruntime as ort
import torch

from _timing import OpModule, timed

from vidtrt.export.onnx import export_module
from vidtrt.ops import most_similar_roi_align


def flops(rois, channels, height, width, frames, support_h, support_w, top_k) -> float:
    """2 FLOPs per multiply-add: the similarities (the bulk), the weighted sum,
    and ~3 per element to normalise both inputs."""
    queries, cells = rois * height * width, support_h * support_w
    similarity = 2.0 * frames * queries * cells * channels
    weighted_sum = 2.0 * frames * queries * top_k * channels
    normalise = 3.0 * (frames * cells + queries) * channels
    return similarity + weighted_sum + normalise


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="300,512,7,7,14,38,63", help="R,C,h,w,T,H,W (default: the paper's)")
    parser.add_argument("--top-k", type=int, default=2, help="mmtracking's num_most_similar_points (paper: 4)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies R and T (rounded, at least 1)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--reference-repeat", type=int, default=2)
    parser.add_argument("--onnx-repeat", type=int, default=1, help="the decomposed graph is slow; fewer runs")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--json", default="benchmarks/results/most_similar_roi_align_cpu.json")
    args = parser.parse_args()

    rois, channels, height, width, frames, support_h, support_w = map(int, args.shape.split(","))
    rois = max(1, round(rois * args.scale))
    frames = max(1, round(frames * args.scale))
    k = args.top_k
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    # ReLU'd features like a backbone's; RoI cells are noisy copies of support
    # cells so that the top matches are real ones, as in a video.
    support = torch.randn(frames, channels, support_h, support_w, generator=g).relu()
    ys = torch.randint(0, support_h, (rois, height, width), generator=g)
    xs = torch.randint(0, support_w, (rois, height, width), generator=g)
    roi = support[0][:, ys, xs].permute(1, 0, 2, 3) + 0.3 * torch.randn(rois, channels, height, width, generator=g)
    queries, cells = rois * height * width, support_h * support_w
    print(
        f"MS RoI Align R={rois} C={channels} h×w={height}×{width} T={frames} H×W={support_h}×{support_w} "
        f"top_k={k} (scale {args.scale}), {args.threads} threads, {platform.processor() or platform.machine()}"
    )
    print(f"similarity matrix: {frames * queries * cells * 4 / 2**20:.0f} MiB in FP32 (never formed by the kernel)")

    results, peak_mb, outputs = {}, {}, {}
    with torch.no_grad():
        outputs["native"] = most_similar_roi_align(roi, support, k, impl="native")
        results["native"] = timed(lambda: most_similar_roi_align(roi, support, k, impl="native"), args.repeat, args.warmup)
        peak_mb["after_native"] = peak_rss_mb()
        outputs["reference"] = most_similar_roi_align(roi, support, k, impl="reference")
        results["reference"] = timed(
            lambda: most_similar_roi_align(roi, support, k, impl="reference"), args.reference_repeat, args.warmup
        )
        peak_mb["after_reference"] = peak_rss_mb()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "msra.onnx"
            export_module(OpModule("MostSimilarRoIAlign", top_k=k), (roi, support), path, ["roi_feats", "support_feats"], ["out"])
            options = ort.SessionOptions()
            options.intra_op_num_threads = args.threads
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            feeds = {"roi_feats": roi.numpy(), "support_feats": support.numpy()}
            outputs["onnxruntime"] = torch.from_numpy(session.run(None, feeds)[0])
            results["onnxruntime"] = timed(lambda: session.run(None, feeds), args.onnx_repeat, max(0, args.warmup - 1))
        peak_mb["after_onnxruntime"] = peak_rss_mb()

    # A (frame, RoI cell) whose k-th and (k+1)-th similarities are within
    # rounding may keep different cells in different layers; count those
    # vectors instead of hiding them in a maximum.
    deviation = {}
    for name in ("native", "onnxruntime"):
        diff = (outputs[name].float() - outputs["reference"].float()).abs().amax(dim=2)  # [T, R, h, w]
        deviation[name] = {
            "max_abs": float(diff.max()),
            "median_abs": float(diff.median()),
            "vectors_over_1e-4": int((diff > 1e-4).sum()),
            "vectors": diff.numel(),
        }

    median = {name: statistics.median(t) for name, t in results.items()}
    gflops = flops(rois, channels, height, width, frames, support_h, support_w, k) / (median["native"] * 1e-3) / 1e9
    print(f"{'impl':<12} {'median ms':>10} {'vs native':>10} {'runs':>5}")
    for name, ms in median.items():
        print(f"{name:<12} {ms:>10.1f} {ms / median['native']:>9.1f}x {len(results[name]):>5}")
    print(f"native: {gflops:.1f} GFLOP/s (similarities dominate: 2·T·R·h·w·H·W·C)")
    for name, d in deviation.items():
        print(
            f"|{name} - reference|: max {d['max_abs']:.2e}, median {d['median_abs']:.2e}, "
            f"{d['vectors_over_1e-4']} of {d['vectors']} output vectors beyond 1e-4"
        )
    print("peak RSS so far (MiB): " + ", ".join(f"{stage} {mib:.0f}" for stage, mib in peak_mb.items()))
    if median["native"] >= median["reference"]:
        print("WARNING: the native kernel did not beat the reference")

    report = {
        "op": "MostSimilarRoIAlign",
        "shape": {"R": rois, "C": channels, "h": height, "w": width, "T": frames, "H": support_h, "W": support_w,
                  "top_k": k},  # fmt: skip
        "scale": args.scale,
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
        "deviation_vs_reference": deviation,
        "peak_rss_mib": peak_mb,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
