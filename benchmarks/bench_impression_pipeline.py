"""Impression Network on the CPU: per-stage time, the schedule's measured
speed-up over per-frame N_feat + N_task at l = 1, 5, 10 and 20, beside the
FLOP ratio and the paper's runtime model (Sec. 3.4).

For each l the whole schedule really runs (key placement middle, the
paper's) over the same frames on ONNX Runtime, and its wall time per frame
is compared with the per-frame baseline timed in the same run, on ONNX
Runtime (custom ops as their ONNX decompositions) and on torch (custom ops
as the fused native kernels). Nothing is extrapolated from stage medians. FLOPs are counted by PyTorch's
FlopCounterMode on the model parts (convolutions, transposed convolutions
and matrix products; the custom ops' few FLOPs are left out):

    r      = (O(A) + l (O(W) + O(F) + O(N_task)) + O(N_feat)) / (l (O(N_feat) + O(N_task)))
    r_approx = O(F) / O(N_feat) + 1 / l

and the FLOP speed-up is 1 / r. All numbers are ratios from one run on this
machine; the paper's 156 → 50 ms (3.1x, GTX 1060) is a GPU figure.

    .venv/bin/python benchmarks/bench_impression_pipeline.py [--frames 20] [--configs impression_small,impression_r101]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from vidtrt.core.preprocess import Preprocessor
from vidtrt.export.exporter import export_bundle
from vidtrt.methods import get_method
from vidtrt.methods.common import sample_image
from vidtrt.models.preprocess_config import PreprocessConfig
from vidtrt.runtime.backends import create_backend
from vidtrt.runtime.pipelines import create_pipeline
from vidtrt.runtime.synthetic import moving_shapes_clip

# The paper's input is short side 600 (300 for the flow net); 320 keeps CPU runs short.
INPUTS = {
    "impression_small": PreprocessConfig(short_side=128, max_long_side=192),
    "impression_r101": PreprocessConfig(short_side=320, max_long_side=544),
}
INTERVALS = (1, 5, 10, 20)


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return counter.get_total_flops()


def component_flops(detector, height: int, width: int) -> dict:
    """FLOPs of N_feat, N_task, F + W (flow net, scale map, warp) and A (the fusion) at one frame size."""
    cfg = detector.cfg
    a, b = (sample_image(cfg, seed, height, width) for seed in (0, 1))
    with torch.no_grad():
        feature = detector.features(a)
        warped = detector.propagate(feature, b, a)
    gate = torch.tensor([cfg.memory_gate])
    return {
        "N_feat": count_flops(lambda: detector.features(a)),
        "N_task": count_flops(lambda: detector.detect(feature, a)),
        "F+W": count_flops(lambda: detector.propagate(feature, b, a)),
        "A": count_flops(lambda: detector.fuse(feature, warped, gate)) if cfg.has_impression else 0,
    }


def runtime_model(flops: dict, l: int) -> dict:
    feat, task, flow, agg = flops["N_feat"], flops["N_task"], flops["F+W"], flops["A"]
    r = (agg + l * (flow + task) + feat) / (l * (feat + task))
    return {"r": r, "flop_speedup": 1.0 / r, "r_approx": flow / feat + 1.0 / l, "approx_speedup": 1.0 / (flow / feat + 1.0 / l)}


def bench_config(name: str, frames: int, work: Path, threads: int, log=print) -> dict:
    bundle = export_bundle("impression", work / name, config_name=name, overrides={"preprocess": INPUTS[name]}, log=lambda _: None, verify=False)
    pre = Preprocessor.from_dict(bundle.manifest.preprocess)
    images = [pre(f).tensor for f in moving_shapes_clip(num_frames=frames, height=240, width=320)]
    height, width = images[0].shape[2:]
    _, detector = get_method("impression").load_detector(checkpoint=bundle.path(bundle.manifest.checkpoint))
    flops = component_flops(detector, height, width)
    params = sum(p.numel() for p in detector.parameters())
    result = {
        "input_hw": [int(height), int(width)],
        "parameters": params,
        "gflops": {k: v / 1e9 for k, v in flops.items()},
        "backends": {},
    }
    log(f"  {name}: {params / 1e6:.1f}M parameters, input {height}x{width}, GFLOPs " + ", ".join(f"{k} {v / 1e9:.2f}" for k, v in flops.items()))
    # ONNX Runtime runs the custom ops (PS RoI Align, NMS) as their ONNX
    # decompositions, which cost far more than their FLOPs; torch runs them
    # with the fused native kernels.
    for backend_name, options in (("onnxruntime", {"threads": threads}), ("torch", {"op_impl": "native"})):
        backend = create_backend(backend_name, bundle, **options)
        result["backends"][backend_name] = bench_backend(backend, images, flops, log)
    return result


def bench_backend(backend, images, flops: dict, log) -> dict:
    frames = len(images)
    for image in images[:2]:  # warm-up
        backend.run("perframe", {"image": backend.from_numpy(image)})
    start = time.perf_counter()
    for image in images:
        backend.run("perframe", {"image": backend.from_numpy(image)})
    perframe_ms = (time.perf_counter() - start) * 1e3 / frames
    result = {"perframe_ms_per_frame": perframe_ms, "schedules": {}}
    log(f"    {type(backend).__name__}: per-frame N_feat + N_task {perframe_ms:.1f} ms/frame")
    stage_ms: dict[str, list[float]] = {}
    for l in INTERVALS:
        backend.reset_timings()
        stream = create_pipeline(backend, key_interval=l, key_placement="middle").stream()
        start = time.perf_counter()
        for i, image in enumerate(images):
            stream.push(i, image)
        stream.flush()
        ms = (time.perf_counter() - start) * 1e3 / frames
        for stage, times in backend.timings.items():
            stage_ms.setdefault(stage, []).extend(times)
        model = runtime_model(flops, l)
        result["schedules"][l] = {"ms_per_frame": ms, "measured_speedup": perframe_ms / ms, **model}
        log(
            f"      l = {l:<2}  {ms:7.1f} ms/frame  measured speed-up {perframe_ms / ms:5.2f}x  "
            f"FLOP speed-up {model['flop_speedup']:5.2f}x  paper's approximation {model['approx_speedup']:5.2f}x"
        )
    result["stage_median_ms"] = {stage: statistics.median(t) for stage, t in stage_ms.items()}
    result["stage_median_ms"]["perframe"] = perframe_ms
    log("      stage medians: " + ", ".join(f"{k} {v:.1f} ms" for k, v in result["stage_median_ms"].items()))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="impression_small,impression_r101")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default: %(default)s)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs.split(","):
            print(f"{name}: exporting and timing ({args.frames} frames per schedule)", flush=True)
            results[name] = bench_config(name, args.frames, Path(tmp), args.threads, log=lambda s: print(s, flush=True))
    report = {
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "onnxruntime_threads": args.threads,
        "torch": torch.__version__,
        "frames": args.frames,
        "key_placement": "middle",
        "paper": "156 ms per-frame (a) vs 50 ms Impression Network (d), l = 10, GTX 1060: 3.1x",
        "results": results,
    }
    path = out / "impression_pipeline_cpu.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
