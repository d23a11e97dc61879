#!/usr/bin/env python
"""GPU acceptance check of a vidtrt installation (TensorRT 11 + a CUDA GPU).

Steps (each printed as it runs; see README.md next to this file):

1. ``vidtrt doctor`` — TensorRT and a GPU must be present.
2. ``vidtrt export`` of each config (every method's small one by default) with FP32 and FP16 graphs, and
   ``vidtrt calibrate`` for INT8 graphs on the clip.
3. ``vidtrt build`` of the engines in every precision.
4. Every stage on the tensorrt backend against ONNX Runtime running the same
   precision's graph, on inputs recorded from the FP32 pipeline:
   FP32 ≤ 1e-3 and FP16 ≤ 2e-2 relative error on dense outputs (relative to
   the output's largest magnitude) with detections matching one to one;
   INT8 by detection agreement (same label, IoU ≥ 0.5) ≥ 90 %.
5. The method's pipeline on the clip with the tensorrt backend (with and without
   CUDA graphs): detection agreement with ONNX Runtime, fps, and per-stage
   GPU times, printed beside the paper's speed.

Exit codes: 0 all checks passed, 1 a check failed, 2 this machine lacks
TensorRT or a GPU, 3 a vidtrt command failed.

Nothing here has been run where it was written (no GPU, no TensorRT).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

EXIT_OK, EXIT_FAILED, EXIT_NO_GPU, EXIT_STEP = 0, 1, 2, 3
DETECTIONS = ("boxes", "scores", "labels", "valid")
# Dense-output tolerance (max |trt − ort| / max |ort|) and detection matching
# tolerances (score, box pixels) per precision; INT8 is judged by agreement.
DENSE_TOL = {"fp32": 1e-3, "fp16": 2e-2}
DETECTION_TOL = {"fp32": (1e-3, 0.5), "fp16": (2e-2, 2.0)}
INT8_MIN_AGREEMENT = 0.9
# Speeds reported in the papers (shared/reference/FACTS.md). Other GPUs, other
# software: printed for orientation, not as a pass/fail bar.
PAPER_SPEED = {
    "psla_r101_rfcn": [
        ("PSLA +RFU+DenseFT, R-101 R-FCN (paper Tab. 1)", "30.8 fps on Titan V; 18.73 fps on Titan X"),
        ("PSLA only, d=4", "42.0 fps on Titan V"),
        ("R-FCN per-frame baseline", "4.05 fps on K40"),
    ],
}


# Every registered method's small config (what the suite's TensorRT-RTX build test builds) and PSLA's paper config.
DEFAULT_CONFIGS = ("psla_small", "mfsa_small", "troi_small", "impression_small", "dff_small", "mega_small", "psla_r101_rfcn")


class StepFailed(Exception):
    pass


def vidtrt_command() -> list[str]:
    exe = shutil.which("vidtrt")
    return [exe] if exe else [sys.executable, "-m", "vidtrt.cli"]


def step(args: list[str]) -> str:
    """Runs `vidtrt <args>`, echoing its output; raises StepFailed on a non-zero exit."""
    cmd = vidtrt_command() + args
    print(f"\n$ vidtrt {' '.join(args)}", flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(proc.stdout, end="", flush=True)
    if proc.returncode != 0:
        raise StepFailed(f"`vidtrt {' '.join(args)}` failed with exit code {proc.returncode} (its output is above)")
    return proc.stdout


# ------------------------------------------------------------------ recording


def record_stage_inputs(bundle, clip: Path, per_stage: int) -> dict[str, list[dict[str, np.ndarray]]]:
    """The inputs the FP32 ONNX Runtime pipeline gives each stage on the clip
    (the first ``per_stage`` calls); stages the schedule never calls (the
    per-frame baseline) get the recorded images."""
    from vidtrt.runtime.backends import create_backend
    from vidtrt.runtime.backends.base import Backend
    from vidtrt.runtime.runner import run_video

    inner = create_backend("onnxruntime", bundle)
    records: dict[str, list] = {}

    class Recorder(Backend):
        name = "recorder"

        def _run(self, stage, inputs):
            if len(records.setdefault(stage, [])) < per_stage:
                records[stage].append({k: np.array(inner.to_numpy(v), copy=True) for k, v in inputs.items()})
            return inner.run(stage, inputs)

        def from_numpy(self, array):
            return inner.from_numpy(array)

        def to_numpy(self, value):
            return inner.to_numpy(value)

        def zeros(self, shape, dtype):
            return inner.zeros(shape, dtype)

    run_video(bundle, str(clip), backend=Recorder(bundle), outputs=(), progress=False)
    images = [r["image"] for stage_records in records.values() for r in stage_records]
    for name, spec in bundle.stages.items():
        if name not in records and {t.name for t in spec.inputs} == {"image"}:
            records[name] = [{"image": image} for image in images[:per_stage]]
    return records


# ------------------------------------------------------------------ comparisons


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    scale = float(np.abs(want).max()) if want.size else 0.0
    if want.size == 0:
        return 0.0
    return float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max()) / max(scale, 1e-12)


def _valid(out: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    v = np.asarray(out["valid"]).astype(bool)
    return np.asarray(out["boxes"])[v], np.asarray(out["scores"])[v], np.asarray(out["labels"])[v]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    # Widths and heights count +1 pixel (the old VOC convention): boxes clipped
    # to a border can have zero height, and two such equal boxes must match.
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = ix * iy
    union = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter
    return inter / union if union > 0 else 0.0


def detection_agreement(reference: dict, other: dict, iou: float = 0.5) -> float:
    """Matched detections (same label, IoU ≥ iou, greedy by reference score)
    over the larger of the two sets; 1.0 when both are empty."""
    rb, rs, rl = _valid(reference)
    ob, _, ol = _valid(other)
    if len(rb) == 0 and len(ob) == 0:
        return 1.0
    used = np.zeros(len(ob), dtype=bool)
    matched = 0
    for i in np.argsort(-rs, kind="stable"):
        best, best_iou = -1, iou
        for j in range(len(ob)):
            if not used[j] and ol[j] == rl[i]:
                value = _iou(rb[i], ob[j])
                if value >= best_iou:
                    best, best_iou = j, value
        if best >= 0:
            used[best] = True
            matched += 1
    return matched / max(len(rb), len(ob))


def compare_stages(bundle, precision: str, records: dict) -> tuple[bool, list[dict]]:
    from vidtrt.runtime.backends import create_backend
    from vidtrt.core.compare import compare_detections

    cfg = bundle.manifest.config["detection"]
    ort_backend = create_backend("onnxruntime", bundle, precision=precision)
    rows, ok = [], True
    with create_backend("tensorrt", bundle, precision=precision) as trt_backend:
        for stage, feeds in records.items():
            dense_err, agreement, unmatched = 0.0, 1.0, 0
            for feed in feeds:
                want = {k: ort_backend.to_numpy(v) for k, v in ort_backend.run(stage, feed).items()}
                got = {k: trt_backend.to_numpy(v) for k, v in trt_backend.run(stage, feed).items()}
                for name in want:
                    if name not in DETECTIONS:
                        dense_err = max(dense_err, relative_error(got[name], want[name]))
                if "boxes" in want:
                    agreement = min(agreement, detection_agreement(want, got))
                    if precision in DETECTION_TOL:
                        score_tol, box_tol = DETECTION_TOL[precision]
                        cmp = compare_detections(
                            [want[k] for k in DETECTIONS], [got[k] for k in DETECTIONS],
                            capacity=cfg["max_detections"], nms_iou=cfg["nms_iou"], score_tol=score_tol, box_tol=box_tol,
                        )
                        unmatched += cmp.unexplained_reference + cmp.unexplained_other
            if precision == "int8":
                passed = agreement >= INT8_MIN_AGREEMENT
                bar = f"agreement ≥ {INT8_MIN_AGREEMENT:.0%}"
            else:
                passed = dense_err <= DENSE_TOL[precision] and unmatched == 0
                bar = f"dense ≤ {DENSE_TOL[precision]:g}, detections 1:1"
            ok &= passed
            timings = trt_backend.timings.get(stage, [])
            rows.append(
                {
                    "stage": stage, "precision": precision, "calls": len(feeds), "dense_rel_error": dense_err,
                    "detection_agreement": agreement, "unmatched_detections": unmatched, "bar": bar, "passed": passed,
                    "trt_ms_median": float(np.median(timings)) if timings else None,
                }
            )
    return ok, rows


def run_pipeline(bundle, precision: str, clip: Path, cuda_graphs: bool) -> dict:
    """The bundle's pipeline on the clip: a warm-up pass, then a timed pass."""
    from vidtrt.runtime.backends import create_backend
    from vidtrt.runtime.runner import run_video

    reference: list = []
    run_video(bundle, str(clip), backend=create_backend("onnxruntime", bundle, precision=precision), outputs=(), progress=False, collect=reference)
    with create_backend("tensorrt", bundle, precision=precision, cuda_graphs=cuda_graphs) as backend:
        run_video(bundle, str(clip), backend=backend, outputs=(), progress=False)  # warm-up: engines, pool, graphs
        backend.reset_timings()
        frames: list = []
        start = time.perf_counter()
        summary = run_video(bundle, str(clip), backend=backend, outputs=(), progress=False, collect=frames)
        wall = time.perf_counter() - start
        stage_ms = {k: list(v) for k, v in backend.timings.items()}
    agreement = [
        detection_agreement(
            {"boxes": r.boxes, "scores": r.scores, "labels": r.labels, "valid": np.ones(len(r.scores), bool)},
            {"boxes": f.boxes, "scores": f.scores, "labels": f.labels, "valid": np.ones(len(f.scores), bool)},
        )
        for r, f in zip(reference, frames)
    ]
    gpu_ms = sum(sum(v) for v in stage_ms.values())
    return {
        "precision": precision,
        "cuda_graphs": cuda_graphs,
        "frames": summary.frames,
        "fps_wall": summary.frames / wall if wall > 0 else float("nan"),
        "fps_gpu": summary.frames / (gpu_ms / 1e3) if gpu_ms > 0 else float("nan"),
        "stage_ms_median": {k: float(np.median(v)) for k, v in stage_ms.items() if v},
        "min_frame_agreement_vs_onnxruntime": float(min(agreement)) if agreement else 1.0,
    }


# ------------------------------------------------------------------ main


def make_clip(path: Path, frames: int, width: int, height: int) -> Path:
    from vidtrt.runtime.synthetic import moving_shapes_clip, write_clip

    if not path.exists():
        write_clip(moving_shapes_clip(num_frames=frames, height=height, width=width), path)
    return path


def cuda_parity() -> tuple[bool, str]:
    """Runs vidtrt_cuda_parity_test (each op's CUDA kernel against its host
    kernel on random and edge-case inputs), built with the CUDA kernels."""
    from vidtrt import _native

    exe = _native.library_dir() / "vidtrt_cuda_parity_test"
    if not exe.exists():
        print("\nFAIL CUDA parity: vidtrt_cuda_parity_test is not installed (build vidtrt with nvcc on PATH)", flush=True)
        return False, "not installed"
    print(f"\n== CUDA kernels against host kernels: {exe}", flush=True)
    result = subprocess.run([str(exe)], capture_output=True, text=True, timeout=600)
    print(result.stdout + result.stderr, flush=True)
    return result.returncode == 0, result.stdout + result.stderr


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="gpu-acceptance", help="working directory (default: %(default)s)")
    p.add_argument(
        "--configs", default=",".join(DEFAULT_CONFIGS),
        help="model configs to check, any method's (default: every method's small config and psla_r101_rfcn)",
    )
    p.add_argument("--precisions", default="fp32,fp16,int8", help="engine precisions (default: %(default)s)")
    p.add_argument("--video", help="clip to check on (default: a generated 1280x720 clip)")
    p.add_argument("--frames", type=int, default=60, help="length of the generated clip (default: %(default)s)")
    p.add_argument("--stage-samples", type=int, default=4, help="recorded inputs compared per stage (default: %(default)s)")
    p.add_argument("--calibration-samples", type=int, default=16, help="vidtrt calibrate --max-samples (default: %(default)s)")
    p.add_argument("--workspace", type=int, default=4096, help="vidtrt build --workspace in MB (default: %(default)s)")
    p.add_argument("--reuse", action="store_true", help="keep bundles already exported into --out")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    configs = [c for c in args.configs.split(",") if c]
    precisions = [p for p in args.precisions.split(",") if p]
    bad = set(precisions) - {"fp32", "fp16", "int8"}
    if bad or not precisions:
        print(f"unknown precisions {sorted(bad)}; choose from fp32, fp16, int8", file=sys.stderr)
        return EXIT_STEP
    report: dict = {"configs": {}, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        doctor = step(["doctor"])
        from vidtrt import doctor as doctor_module

        # The plugin library may be missing (engines then use the ONNX functions); these may not.
        needed = {"tensorrt (Python)", "GPU"}
        missing = [f"{c.name}: {c.detail}" for c in doctor_module.components() if c.name in needed and not c.found]
        if missing:
            print("\nthis machine cannot run the GPU acceptance check:\n  " + "\n  ".join(missing), file=sys.stderr)
            return EXIT_NO_GPU
        report["doctor"] = doctor
        parity_ok, report["cuda_parity"] = cuda_parity()
        clip = Path(args.video) if args.video else make_clip(out / "clip_1280x720.mp4", args.frames, 1280, 720)
        if not clip.exists():
            print(f"video {clip} does not exist", file=sys.stderr)
            return EXIT_STEP
        cache = out / "timing.cache"
        all_ok = parity_ok
        for config in configs:
            bundle_dir = out / config
            if not (args.reuse and (bundle_dir / "manifest.json").exists()):
                step(["export", "--config", config, "--out", str(bundle_dir), "--precisions", "fp32,fp16"])  # the config names its method
            if "int8" in precisions:
                step(["calibrate", str(bundle_dir), str(clip), "--max-samples", str(args.calibration_samples), "--no-progress"])
            for precision in precisions:
                step(["build", str(bundle_dir), "--precision", precision, "--timing-cache", str(cache), "--workspace", str(args.workspace)])

            from vidtrt.core.bundle import load_bundle

            bundle = load_bundle(bundle_dir)
            print(f"\n== {config}: recording stage inputs from the FP32 ONNX Runtime pipeline", flush=True)
            records = record_stage_inputs(bundle, clip, args.stage_samples)
            entry: dict = {"stages": [], "pipeline": []}
            for precision in precisions:
                ok, rows = compare_stages(bundle, precision, records)
                all_ok &= ok
                entry["stages"] += rows
                for r in rows:
                    status = "ok  " if r["passed"] else "FAIL"
                    print(
                        f"  {status} {config} {precision:<5} {r['stage']:<9} dense rel err {r['dense_rel_error']:.2e}  "
                        f"detection agreement {r['detection_agreement']:.1%}  ({r['bar']})"
                    )
                for graphs in (False, True):
                    result = run_pipeline(bundle, precision, clip, graphs)
                    passed = result["min_frame_agreement_vs_onnxruntime"] >= (INT8_MIN_AGREEMENT if precision == "int8" else 0.99)
                    result["passed"] = passed
                    all_ok &= passed
                    entry["pipeline"].append(result)
                    stages = ", ".join(f"{k} {v:.2f} ms" for k, v in result["stage_ms_median"].items())
                    print(
                        f"  {'ok  ' if passed else 'FAIL'} {config} {precision:<5} pipeline{' + CUDA graphs' if graphs else ''}: "
                        f"{result['fps_wall']:.1f} fps wall (decode and preprocessing included), {result['fps_gpu']:.1f} fps "
                        f"GPU time; median {stages}; worst frame agreement with ONNX Runtime "
                        f"{result['min_frame_agreement_vs_onnxruntime']:.1%}"
                    )
            for label, speed in PAPER_SPEED.get(config, []):
                print(f"  paper: {label}: {speed}")
            report["configs"][config] = entry
    except StepFailed as err:
        print(f"\nacceptance check stopped: {err}", file=sys.stderr)
        return EXIT_STEP
    report_path = out / "report.json"
    report_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nreport: {report_path}")
    print("ALL CHECKS PASSED" if all_ok else "SOME CHECKS FAILED (see FAIL lines above)")
    return EXIT_OK if all_ok else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
