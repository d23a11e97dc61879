"""MEGA on the CPU: per-stage time and the aggregation's cost per frame
relative to the per-frame detector, for the base model (no memory) and MEGA.

Each config is exported (seeded weights) and its pipeline run, offline with
random access (as `vidtrt run` does on a file) and online, over the same
frames on ONNX Runtime. ``frame`` (backbone C4 + RPN + res5 + box features)
is the per-frame detector's part; ``head`` is the aggregation plus the
predictor (a few linear layers of the single-frame detector). The cost ratio
reported is (frame + head) / frame per output frame, with the frame-stage
calls offline also counting the global frames read from the video. All
numbers come from one run on this machine; the paper's (2080 Ti): 64 ms
single frame, 105.6 ms base (1.65x), 114.5 ms MEGA (1.79x).

    .venv/bin/python benchmarks/bench_mega_pipeline.py [--frames 16] [--configs mega_small,mega_base_r101,mega_r101]
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

from vidtrt.core.preprocess import Preprocessor
from vidtrt.export.exporter import export_bundle
from vidtrt.models.preprocess_config import PreprocessConfig
from vidtrt.runtime.backends import create_backend
from vidtrt.runtime.pipelines import create_pipeline
from vidtrt.runtime.synthetic import moving_shapes_clip

MASKRCNN = dict(mean=(102.9801, 115.9465, 122.7717), std=(1.0, 1.0, 1.0))
# The paper's input is short side 600; 320 keeps CPU runs short.
INPUTS = {
    "mega_small": PreprocessConfig(short_side=128, max_long_side=192, **MASKRCNN),
    "mega_base_r101": PreprocessConfig(short_side=320, max_long_side=544, **MASKRCNN),
    "mega_r101": PreprocessConfig(short_side=320, max_long_side=544, **MASKRCNN),
}


def bench_config(name: str, frames: int, work: Path, threads: int, log=print) -> dict:
    bundle = export_bundle("mega", work / name, config_name=name, overrides={"preprocess": INPUTS[name]}, log=lambda _: None, verify=False)
    pre = Preprocessor.from_dict(bundle.manifest.preprocess)
    images = [pre(f).tensor for f in moving_shapes_clip(num_frames=frames, height=240, width=320)]
    backend = create_backend("onnxruntime", bundle, threads=threads)
    backend.run("frame", {"image": backend.from_numpy(images[0])})  # warm-up
    result = {"input_hw": list(images[0].shape[2:]), "modes": {}}
    for mode in ("offline", "online"):
        backend.reset_timings()
        pipeline = create_pipeline(backend, mode=mode)
        stream = pipeline.stream(video_length=frames, frame_source=lambda i: images[i]) if mode == "offline" else pipeline.stream()
        start = time.perf_counter()
        for i, image in enumerate(images):
            stream.push(i, image)
        stream.flush()
        wall = (time.perf_counter() - start) * 1e3 / frames
        timings = {stage: list(t) for stage, t in backend.timings.items()}
        frame_ms = statistics.median(timings["frame"])
        head_ms = statistics.median(timings["head"])
        frame_calls = len(timings["frame"]) / frames
        per_frame_detector = frame_ms
        pipeline_ms = frame_ms * frame_calls + head_ms
        result["modes"][mode] = {
            "frame_median_ms": frame_ms,
            "head_median_ms": head_ms,
            "frame_calls_per_frame": frame_calls,
            "pipeline_ms_per_frame": pipeline_ms,
            "wall_ms_per_frame": wall,
            "cost_vs_per_frame_detector": pipeline_ms / per_frame_detector,
        }
        log(
            f"  {name:<15} {mode:<8} frame {frame_ms:8.1f} ms x {frame_calls:.2f}/frame  head {head_ms:8.1f} ms  "
            f"→ {pipeline_ms:8.1f} ms/frame, {pipeline_ms / per_frame_detector:5.2f}x the per-frame detector"
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="mega_small,mega_base_r101,mega_r101")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs.split(","):
            print(f"{name}: exporting and timing ({args.frames} frames per mode)", flush=True)
            results[name] = bench_config(name, args.frames, Path(tmp), args.threads, log=lambda s: print(s, flush=True))
    report = {
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "onnxruntime_threads": args.threads,
        "frames": args.frames,
        "paper": "2080 Ti: single frame 64 ms, base 105.6 ms (1.65x), MEGA 114.5 ms (1.79x)",
        "results": results,
    }
    path = out / "mega_pipeline_cpu.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
