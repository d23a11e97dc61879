"""Accuracy of the trained small checkpoints (vidtrt/checkpoints) on a
held-out synthetic set: ImageNet VID mAP@0.5 (devkit rule) overall and by
motion speed, and on the degraded (blurred / defocused) frames, for each
precision on ONNX Runtime, each schedule that matters, and the method's
single-frame baseline where it has one.

The held-out set is written by ``vidtrt synth-vid`` with a seed none of the
checkpoints was trained on (checked against each checkpoint's record); INT8
is calibrated on snippets of the training set, rewritten from the parameters
in the checkpoint's record. Everything runs through the bundles a user would
export (the pipelines are tested equal to the whole-video references).

    .venv/bin/python benchmarks/bench_accuracy.py [--methods psla,troi] [--precisions fp32,fp16,int8]

Writes benchmarks/results/accuracy_synthetic.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from vidtrt.calibration.calibrate import calibrate_bundle
from vidtrt.eval.synth_vid import SynthConfig, write_synth_vid
from vidtrt.eval.vid import FrameDetections, evaluate, load_ground_truth
from vidtrt.export.exporter import export_bundle
from vidtrt.export.precision import write_fp16_variants
from vidtrt.methods import all_methods, get_method
from vidtrt.runtime.backends import create_backend
from vidtrt.runtime.runner import run_video
from vidtrt.core.preprocess import Preprocessor, to_original
from vidtrt.runtime.video import open_video
from vidtrt.trained import trained_checkpoint

RESULTS = Path(__file__).parent / "results"
HELD_OUT_SEED = 0
HELD_OUT_VIDEOS = 8
CALIBRATION_SNIPPETS = 2

# What each temporal method is compared with: its schedules (name → options).
SCHEDULES = {
    "psla": {"l=10": {"key_interval": 10}, "l=1": {"key_interval": 1}},
    "impression": {"l=10": {"key_interval": 10}, "l=1": {"key_interval": 1}},
}


def held_out_set(root: Path, record: dict, log) -> tuple[Path, dict]:
    params = dict(record["data_parameters"] or {})
    if params.get("seed") == HELD_OUT_SEED:
        raise SystemExit(f"{record['config']} was trained on seed {HELD_OUT_SEED}, the held-out seed")
    params.update(seed=HELD_OUT_SEED, videos=HELD_OUT_VIDEOS, split="val")
    cfg = SynthConfig(**params)
    summary = write_synth_vid(root, cfg)
    log(f"held-out set: {summary['frames']} frames of {summary['snippets']} snippets, seed {HELD_OUT_SEED}")
    return root, summary


def calibration_sources(root: Path, record: dict) -> list[Path]:
    params = dict(record["data_parameters"])
    params.update(videos=CALIBRATION_SNIPPETS, split="train")
    write_synth_vid(root, SynthConfig(**params))
    return sorted((root / "Data" / "VID" / "train").iterdir())


def _frame_map(truth):
    return {(f.snippet, f.frame): f.index for f in truth}


def run_set(bundle, data: Path, truth, precision: str, options: dict | None) -> dict[int, FrameDetections]:
    index = _frame_map(truth)
    dets: dict[int, FrameDetections] = {}
    for snippet in sorted({f.snippet for f in truth}):
        collected = []
        run_video(bundle, data / "Data" / "VID" / "val" / snippet, outputs=(), progress=False, collect=collected,
                  backend_options={"precision": precision}, pipeline_options=options)
        for d in collected:
            dets[index[(snippet, Path(d.file).stem)]] = FrameDetections(d.boxes.astype(np.float64), d.scores.astype(np.float64), d.labels)
    return dets


def run_single_frames(bundle, data: Path, truth) -> dict[int, FrameDetections]:
    """The method's own pipeline with no temporal context: every frame as a
    video of one frame (TRoI's support set and MEGA's local and global pools
    then hold only that frame, MEGA's memory nothing). For methods without a
    per-frame stage of their own."""
    from vidtrt.api import VideoDetector

    index = _frame_map(truth)
    detector = VideoDetector(bundle, "onnxruntime")
    dets = {}
    for snippet in sorted({f.snippet for f in truth}):
        with open_video(data / "Data" / "VID" / "val" / snippet) as frames:
            for _, frame in frames:
                name = Path(frames.last_meta.name).stem
                stream = detector.stream()
                (d,) = stream.push(frame) + stream.flush()
                dets[index[(snippet, name)]] = FrameDetections(d.boxes.astype(np.float64), d.scores.astype(np.float64), d.labels)
    return dets


def run_baseline(bundle, method, data: Path, truth) -> dict[int, FrameDetections]:
    """The method's per-frame stage on every frame (no temporal context)."""
    if not method.baseline_stage:
        return run_single_frames(bundle, data, truth)
    backend = create_backend("onnxruntime", bundle, stages=[method.baseline_stage])
    preprocess = Preprocessor.from_dict(bundle.manifest.preprocess)
    index = _frame_map(truth)
    dets = {}
    for snippet in sorted({f.snippet for f in truth}):
        with open_video(data / "Data" / "VID" / "val" / snippet) as frames:
            for _, frame in frames:
                name = Path(frames.last_meta.name).stem if getattr(frames, "last_meta", None) else None
                prepared = preprocess(frame)
                out = backend.run(method.baseline_stage, {"image": backend.from_numpy(prepared.tensor)})
                out = {k: backend.to_numpy(v) for k, v in out.items()}
                valid = out["valid"].astype(bool)
                boxes = to_original(out["boxes"][valid], prepared)
                dets[index[(snippet, name)]] = FrameDetections(boxes.astype(np.float64), out["scores"][valid].astype(np.float64), out["labels"][valid])
    return dets


def scores(truth, dets, degraded: set[tuple[str, int]]) -> dict:
    result = evaluate(truth, dets).map
    subset = [f for f in truth if (f.snippet, int(f.frame)) in degraded]
    result["degraded"] = evaluate(subset, {f.index: dets[f.index] for f in subset if f.index in dets}).map["all"] if subset else float("nan")
    return {k: round(float(v), 4) for k, v in result.items()}


def bench_method(name: str, precisions: list[str], work: Path, log=print) -> dict:
    method = get_method(name)
    config = method.small_config
    checkpoint = trained_checkpoint(config)
    if checkpoint is None:
        raise SystemExit(f"no trained checkpoint for {config} in vidtrt/checkpoints")
    record = json.loads(Path(str(checkpoint) + ".json").read_text())
    data, summary = held_out_set(work / "heldout", record, log)
    degraded = {(s, f) for s, frames in summary["degraded"].items() for f in frames}
    truth = load_ground_truth(data, "val")
    bundle = export_bundle(name, work / name, checkpoint=checkpoint, log=lambda _: None)
    if "fp16" in precisions:
        write_fp16_variants(bundle, log=lambda _: None)
    if "int8" in precisions:
        calibrate_bundle(bundle, calibration_sources(work / "calibration", record), max_samples=32, progress=False, log=lambda _: None)
    out = {"config": config, "checkpoint": checkpoint.name, "trained_with": record["command"], "schedules": {}}
    schedules = SCHEDULES.get(name, {"default": None})
    for schedule, options in schedules.items():
        out["schedules"][schedule] = {}
        for precision in precisions if schedule == next(iter(schedules)) else ["fp32"]:
            start = time.perf_counter()
            result = scores(truth, run_set(bundle, data, truth, precision, options), degraded)
            out["schedules"][schedule][precision] = result
            log(f"  {name:<10} {schedule:<8} {precision:<5} mAP {result['all']:.4f}  slow {result['slow']:.4f}  medium "
                f"{result['medium']:.4f}  fast {result['fast']:.4f}  degraded {result['degraded']:.4f}  ({time.perf_counter() - start:.0f} s)")
    # Every method: its per-frame stage, or its pipeline on one-frame videos.
    result = scores(truth, run_baseline(bundle, method, data, truth), degraded)
    out["single_frame_baseline"] = result
    log(f"  {name:<10} baseline fp32  mAP {result['all']:.4f}  fast {result['fast']:.4f}  degraded {result['degraded']:.4f}")
    return out


def targets(result: dict) -> dict:
    """The issue's targets, checked: FP32 ≥ 0.80, FP16 within 0.5 points, INT8 within 2, l=10 within 3 of l=1."""
    first = next(iter(result["schedules"].values()))
    fp32 = first["fp32"]["all"]
    checks = {"fp32_map_at_least_0.80": fp32 >= 0.80}
    if "fp16" in first:
        checks["fp16_within_0.5_points"] = abs(first["fp16"]["all"] - fp32) <= 0.005
    if "int8" in first:
        checks["int8_within_2_points"] = abs(first["int8"]["all"] - fp32) <= 0.02
    if "l=1" in result["schedules"]:
        checks["l10_within_3_points_of_l1"] = fp32 >= result["schedules"]["l=1"]["fp32"]["all"] - 0.03
    base = result.get("single_frame_baseline")
    if base:
        checks["beats_single_frame_on_fast (reported)"] = fp32 and first["fp32"]["fast"] > base["fast"]
        checks["beats_single_frame_on_degraded (reported)"] = first["fp32"]["degraded"] > base["degraded"]
    return checks


def markdown(report: dict) -> str:
    lines = [
        "| method | schedule | precision | mAP | slow | medium | fast | degraded |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, result in report["methods"].items():
        for schedule, by_precision in result["schedules"].items():
            for precision, r in by_precision.items():
                lines.append(f"| {name} | {schedule} | {precision} | {r['all']:.3f} | {r['slow']:.3f} | {r['medium']:.3f} | {r['fast']:.3f} | {r['degraded']:.3f} |")
        if "single_frame_baseline" in result:
            r = result["single_frame_baseline"]
            lines.append(f"| {name} | single-frame baseline | fp32 | {r['all']:.3f} | {r['slow']:.3f} | {r['medium']:.3f} | {r['fast']:.3f} | {r['degraded']:.3f} |")
    lines += ["", "| method | target | met |", "|---|---|---|"]
    for name, result in report["methods"].items():
        for check, met in result["targets"].items():
            lines.append(f"| {name} | {check} | {'yes' if met else 'no'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default=",".join(m.name for m in all_methods()))
    parser.add_argument("--precisions", default="fp32,fp16,int8")
    parser.add_argument("--out", default=str(RESULTS / "accuracy_synthetic.json"))
    args = parser.parse_args()
    precisions = args.precisions.split(",")
    report = {"machine": platform.machine(), "held_out_seed": HELD_OUT_SEED, "methods": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.methods.split(","):
            result = bench_method(name, precisions, Path(tmp))
            result["targets"] = targets(result)
            report["methods"][name] = result
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
