"""`vidtrt bench`: every precision variant of a bundle against FP32, per stage
and end to end, on one video, with timings from the same harness.

Per stage, each variant runs on exactly the inputs the FP32 pipeline gave
that stage (recorded), so errors are the stage's own: max and mean absolute
error and cosine similarity of its float outputs, and detection agreement —
mAP@0.5 of the variant's detections scored against the FP32 detections as
ground truth. End to end, each variant runs the whole pipeline (its state
propagates in its own precision) and is scored the same way.

Timings: the backend's per-call times (wall clock on onnxruntime and torch,
CUDA events on tensorrt) after warm-up calls, as percentiles.
"""

from __future__ import annotations

import time

import numpy as np

from .calibration.capture import RecordingBackend, fill_unscheduled
from .eval.map import mean_average_precision
from .core.bundle import DETECTION_OUTPUTS, Bundle, load_bundle
from .runtime.backends import create_backend
from .runtime.runner import run_video



def _valid_detections(out: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    valid = np.asarray(out["valid"]).astype(bool)
    return np.asarray(out["boxes"])[valid], np.asarray(out["scores"])[valid], np.asarray(out["labels"])[valid]


def _percentiles(times: list[float]) -> dict:
    if not times:
        return {}
    a = np.asarray(times)
    return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99)), "calls": len(times)}


def _backend(name: str, bundle: Bundle, precision: str):
    if name == "torch":
        if precision != "fp32":
            raise ValueError("the torch backend runs the FP32 model only; use --backend onnxruntime for variants")
        return create_backend("torch", bundle)
    return create_backend(name, bundle, precision=precision)


def bench_bundle(
    bundle, precisions, source, backend: str = "onnxruntime", warmup: int = 2, progress=False, log=print, schedule=None,
    ground_truth=None, split: str = "val",
) -> dict:
    """Each precision against FP32, per stage and end to end; with
    ``ground_truth`` (an ImageNet VID devkit root holding the source's
    snippet) also each precision's ImageNet VID mAP (overall and per motion
    speed) against the annotations."""
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    gt_frames = None
    if ground_truth is not None:
        from .eval.vid import snippet_truth

        gt_frames = snippet_truth(ground_truth, split, source)
    missing = [p for p in precisions if p not in bundle.precisions()]
    if missing:
        raise ValueError(
            f"bundle has no {', '.join(missing)} graphs (it has {', '.join(bundle.precisions())}); "
            "add FP16 with `vidtrt export --precisions fp32,fp16` and INT8 with `vidtrt calibrate`"
        )
    log(f"recording the FP32 pipeline's stage inputs and outputs on {source}")
    recorder = RecordingBackend(_backend(backend, bundle, "fp32"))
    recorder.keep_outputs = True
    fp32_frames: list = []
    run_video(bundle, source, backend=recorder, outputs=(), collect=fp32_frames, progress=progress, pipeline_options=schedule)
    feeds = {k: list(v) for k, v in recorder.records.items()}
    fill_unscheduled(bundle, feeds)
    fp32_out = dict(recorder.outputs)
    fp32_backend = recorder.inner
    for stage, stage_feeds in feeds.items():  # stages the schedule never called: FP32 outputs now
        if stage not in fp32_out:
            fp32_out[stage] = [
                {k: fp32_backend.to_numpy(v) for k, v in fp32_backend.run(stage, _to_backend(fp32_backend, f)).items()}
                for f in stage_feeds
            ]

    report = {"source": str(source), "backend": backend, "frames": len(fp32_frames), "stages": {}, "end_to_end": {}}
    fp32_truth = [(d.boxes, d.labels) for d in fp32_frames]
    for precision in precisions:
        be = _backend(backend, bundle, precision)
        for stage, stage_feeds in feeds.items():
            if not stage_feeds:
                continue
            for f in stage_feeds[:warmup]:
                be.run(stage, _to_backend(be, f))
            be.reset_timings()
            dense_ref, dense_got = [], []
            dets, truth = [], []
            for f, want in zip(stage_feeds, fp32_out[stage]):
                got = {k: be.to_numpy(v) for k, v in be.run(stage, _to_backend(be, f)).items()}
                for name, w in want.items():
                    if name in DETECTION_OUTPUTS or not np.issubdtype(w.dtype, np.floating):
                        continue
                    dense_ref.append(w.astype(np.float64).ravel())
                    dense_got.append(got[name].astype(np.float64).ravel())
                if "valid" in want:
                    dets.append(_valid_detections(got))
                    b, _, l = _valid_detections(want)
                    truth.append((b, l))
            entry = {"timing_ms": _percentiles(be.timings[stage])}
            if dense_ref:
                ref, got = np.concatenate(dense_ref), np.concatenate(dense_got)
                diff = np.abs(got - ref)
                denom = np.linalg.norm(ref) * np.linalg.norm(got)
                entry.update(max_abs_error=float(diff.max()), mean_abs_error=float(diff.mean()), cosine=float(ref @ got / denom) if denom else 1.0)
            if dets:
                entry["map50_vs_fp32"] = mean_average_precision(dets, truth)
            report["stages"].setdefault(stage, {})[precision] = entry

        be.reset_timings()
        frames: list = []
        start = time.perf_counter()
        run_video(bundle, source, backend=be, outputs=(), collect=frames, progress=progress, pipeline_options=schedule)
        seconds = time.perf_counter() - start
        report["end_to_end"][precision] = {
            "fps": len(frames) / seconds,
            "map50_vs_fp32": mean_average_precision([(d.boxes, d.scores, d.labels) for d in frames], fp32_truth),
            "stage_timing_ms": {s: _percentiles(t) for s, t in be.timings.items()},
        }
        if gt_frames is not None:
            from .eval.vid import evaluate_run

            report["end_to_end"][precision]["map_vs_ground_truth"] = evaluate_run(gt_frames, frames).map
    if gt_frames is not None:
        report["ground_truth"] = {"root": str(ground_truth), "split": split, "frames": len(gt_frames)}
    return report


def _to_backend(backend, feed: dict) -> dict:
    return {k: backend.from_numpy(v) for k, v in feed.items()}


def format_report(report: dict) -> str:
    lines = [f"vidtrt bench: {report['frames']} frames of {report['source']} on {report['backend']}"]
    header = f"{'stage':<10} {'precision':<9} {'max|Δ|':>9} {'mean|Δ|':>9} {'cosine':>9} {'mAP50 vs fp32':>14} {'p50 ms':>8} {'p90 ms':>8} {'vs fp32':>8}"
    lines += [header, "-" * len(header)]
    for stage, variants in report["stages"].items():
        base = variants.get("fp32", {}).get("timing_ms", {}).get("p50")
        for precision, e in variants.items():
            t = e.get("timing_ms", {})
            fmt = lambda key, spec: format(e[key], spec) if key in e else format("-", ">" + spec.split(".")[0].rstrip("ef"))  # noqa: E731
            speed = f"{base / t['p50']:.2f}x" if base and t.get("p50") else "-"
            lines.append(
                f"{stage:<10} {precision:<9} {fmt('max_abs_error', '9.2e')} {fmt('mean_abs_error', '9.2e')} {fmt('cosine', '9.6f')} "
                f"{fmt('map50_vs_fp32', '14.4f')} {t.get('p50', float('nan')):8.2f} {t.get('p90', float('nan')):8.2f} {speed:>8}"
            )
    lines.append("end to end (whole pipeline per precision):")
    for precision, e in report["end_to_end"].items():
        line = f"  {precision:<6} {e['fps']:7.1f} fps   mAP@0.5 vs fp32 {e['map50_vs_fp32']:.4f}"
        if "map_vs_ground_truth" in e:
            line += "   VID mAP vs ground truth " + "  ".join(
                f"{k} {v:.4f}" if v == v else f"{k} -" for k, v in e["map_vs_ground_truth"].items()
            )
        lines.append(line)
    return "\n".join(lines)
