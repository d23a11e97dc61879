"""PSLA pipeline benchmark on the CPU: per-frame N_f + N_t baseline vs the
key/non-key schedule, on the torch and onnxruntime backends, for the small
config and the paper config (ResNet-101 R-FCN) at a reduced input size.

All numbers come from one run on this machine, side by side; only their ratios
mean anything for a GPU. fps against key interval l is measured: the
schedule runs over the same frames at each l in INTERVALS (key frame in the
middle), and its wall time per frame is what the curve shows. Beside it the
results keep the estimate from the stage medians, (key + (l − 1)·nonkey) / l,
labelled as computed.

    .venv/bin/python benchmarks/bench_psla_pipeline.py [--frames 20] [--configs psla_small,psla_r101_rfcn]
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

from vidtrt.export.exporter import export_bundle
from vidtrt.models.psla import PreprocessConfig
from vidtrt.runtime.backends import create_backend
from vidtrt.runtime.pipelines import create_pipeline
from vidtrt.core.preprocess import Preprocessor
from vidtrt.runtime.synthetic import moving_shapes_clip

# The paper config at a reduced input (short side 320 instead of 600) to keep CPU runs short.
INTERVALS = (1, 2, 5, 10, 15, 20)
INPUTS = {"psla_small": PreprocessConfig(short_side=160, max_long_side=256), "psla_r101_rfcn": PreprocessConfig(short_side=320, max_long_side=544)}


def bench_config(name: str, frames: int, interval: int, work: Path, log=print) -> dict:
    bundle = export_bundle("psla", work / name, config_name=name, overrides={"preprocess": INPUTS[name]}, log=log, verify=False)
    pre = Preprocessor.from_dict(bundle.manifest.preprocess)
    images = [pre(f).tensor for f in moving_shapes_clip(num_frames=frames, height=240, width=320)]
    result = {"input_hw": list(images[0].shape[2:]), "backends": {}}
    for backend_name, options in (("torch", {"op_impl": "native"}), ("onnxruntime", {})):
        backend = create_backend(backend_name, bundle, **options)
        for image in images[:2]:  # warm-up
            backend.run("perframe", {"image": backend.from_numpy(image)})
        backend.reset_timings()
        for image in images:
            backend.run("perframe", {"image": backend.from_numpy(image)})
        stream = create_pipeline(backend, key_interval=interval, key_placement="middle").stream()
        for i, image in enumerate(images):
            stream.push(i, image)
        stream.flush()
        med = {stage: statistics.median(times) for stage, times in backend.timings.items()}
        key, nonkey, perframe = med["key"], med["nonkey"], med["perframe"]
        per_frame_pipeline = (sum(backend.timings["key"]) + sum(backend.timings["nonkey"])) / frames
        measured = {}
        for l in INTERVALS:  # the schedule really run at each interval, wall time per frame
            stream = create_pipeline(backend, key_interval=l, key_placement="middle").stream()
            start = time.perf_counter()
            for i, image in enumerate(images):
                stream.push(i, image)
            stream.flush()
            measured[l] = 1000.0 / ((time.perf_counter() - start) * 1e3 / frames)
        result["backends"][backend_name] = {
            "median_ms": med,
            "key_over_nonkey": key / nonkey,
            "pipeline_ms_per_frame": per_frame_pipeline,
            "speedup_vs_perframe": perframe / per_frame_pipeline,
            "fps_perframe": 1000.0 / perframe,
            "fps_vs_interval_measured": measured,
            "fps_vs_interval_computed_from_stage_medians": {l: 1000.0 / ((key + (l - 1) * nonkey) / l) for l in range(1, 21)},
        }
        log(
            f"  {name:<15} {backend_name:<11} key {key:8.1f} ms  nonkey {nonkey:8.1f} ms  perframe {perframe:8.1f} ms  "
            f"key/nonkey {key / nonkey:5.2f}  pipeline (l={interval}) {per_frame_pipeline:8.1f} ms/frame  "
            f"speed-up {perframe / per_frame_pipeline:5.2f}x"
        )
    return result


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, (name, res) in zip(axes[0], results.items()):
        for backend, r in res["backends"].items():
            xs = list(r["fps_vs_interval_measured"])
            line = ax.plot(xs, list(r["fps_vs_interval_measured"].values()), marker="o", ms=4, label=f"PSLA, {backend} (measured)")
            ax.axhline(r["fps_perframe"], ls="--", color=line[0].get_color(), label=f"per-frame N_f, {backend}")
        ax.set_title(f"{name}, input {res['input_hw'][0]}x{res['input_hw'][1]} (CPU)")
        ax.set_xlabel("key interval l")
        ax.set_ylabel("fps (schedule measured at each l)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="psla_small,psla_r101_rfcn")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--interval", type=int, default=10)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs.split(","):
            print(f"{name}: exporting and timing ({args.frames} frames)", flush=True)
            results[name] = bench_config(name, args.frames, args.interval, Path(tmp), log=lambda s: print(s, flush=True))
    report = {
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "frames": args.frames,
        "key_interval": args.interval,
        "results": results,
    }
    (out / "psla_pipeline_cpu.json").write_text(json.dumps(report, indent=2) + "\n")
    try:
        plot(results, out / "psla_fps_vs_interval.png")
        print(f"wrote {out / 'psla_pipeline_cpu.json'} and {out / 'psla_fps_vs_interval.png'}")
    except ImportError:
        print(f"wrote {out / 'psla_pipeline_cpu.json'} (matplotlib missing: no plot)")


if __name__ == "__main__":
    main()
