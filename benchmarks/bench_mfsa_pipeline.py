"""MFSA on the CPU, side by side in one run on the same frames: per-frame
Faster R-CNN (no RPM) vs Multi-Focus (one relation matrix per batch of K) vs
Single-Focus (one per frame), on the onnxruntime backend.

The paper (2080Ti) reports Multi-Focus at +2.6 ms over the per-frame
detector and Single-Focus at 5.4× its runtime; here only the ratios of this
run mean anything.

    .venv/bin/python benchmarks/bench_mfsa_pipeline.py [--configs mfsa_small,mfsa_r101]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
from pathlib import Path

from vidtrt.export.exporter import export_bundle
from vidtrt.models.psla import PreprocessConfig
from vidtrt.runtime.backends import create_backend
from vidtrt.runtime.pipelines import create_pipeline
from vidtrt.core.preprocess import Preprocessor
from vidtrt.runtime.synthetic import moving_shapes_clip

INPUTS = {"mfsa_small": PreprocessConfig(short_side=128, max_long_side=224), "mfsa_r101": PreprocessConfig(short_side=256, max_long_side=352)}


def bench(name: str, work: Path, log=print) -> dict:
    bundle = export_bundle("mfsa", work / name, config_name=name, overrides={"preprocess": INPUTS[name]}, verify=False, log=log)
    k = bundle.manifest.schedule["batch_frames"]
    pre = Preprocessor.from_dict(bundle.manifest.preprocess)
    images = [pre(f).tensor for f in moving_shapes_clip(num_frames=k, height=240, width=320)]
    backend = create_backend("onnxruntime", bundle)
    backend.run("perframe", {"image": backend.from_numpy(images[0])})  # warm-up
    backend.reset_timings()
    for image in images:
        backend.run("perframe", {"image": backend.from_numpy(image)})
    per_frame = statistics.median(backend.timings["perframe"])
    result = {"K": k, "input_hw": list(images[0].shape[2:]), "perframe_ms": per_frame}
    for mode in ("multi", "single"):
        backend.reset_timings()
        stream = create_pipeline(backend, mode=mode).stream()
        for i, image in enumerate(images):
            stream.push(i, image)
        stream.flush()
        frame_ms = statistics.median(backend.timings["frame"])
        batch_ms = statistics.median(backend.timings["batch"])
        per_frame_cost = (sum(backend.timings["frame"]) + sum(backend.timings["batch"])) / len(images)
        result[mode] = {"frame_ms": frame_ms, "batch_ms": batch_ms, "batch_calls": len(backend.timings["batch"]), "ms_per_frame": per_frame_cost}
    result["multi_overhead_ms"] = result["multi"]["ms_per_frame"] - per_frame
    result["single_over_perframe"] = result["single"]["ms_per_frame"] / per_frame
    log(
        f"  {name:<10} K={k} input {images[0].shape[2]}x{images[0].shape[3]}: per-frame {per_frame:.1f} ms; "
        f"Multi-Focus {result['multi']['ms_per_frame']:.1f} ms/frame ({result['multi_overhead_ms']:+.1f} ms); "
        f"Single-Focus {result['single']['ms_per_frame']:.1f} ms/frame ({result['single_over_perframe']:.2f}x)"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="mfsa_small,mfsa_r101")
    parser.add_argument("--json", default="benchmarks/results/mfsa_pipeline_cpu.json")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs.split(","):
            print(f"{name}: exporting and timing", flush=True)
            results[name] = bench(name, Path(tmp), log=lambda s: print(s, flush=True))
    report = {"machine": platform.machine(), "backend": "onnxruntime (CPU)", "paper": {"multi_overhead_ms": 2.6, "single_over_perframe": 5.4}, "results": results}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
