"""`vidtrt demo`: the whole toolkit on a bundled input, with nothing to download.

For any registered method (`--method`, PSLA by default): exports its small
config (FP32 and FP16 graphs) with the trained weights shipped in
vidtrt/checkpoints, makes a short labelled clip of the synthetic set those
weights were trained on (a seed they never saw), runs the method's pipeline
on ONNX Runtime, writes the outputs, and reports per-stage latency, fps, the
speed-up of the schedule over the method's per-frame baseline (where it has
one), the mAP against the clip's annotations, and the largest deviation from
the method's whole-video PyTorch reference.

A config with no shipped checkpoint is exported with seeded random weights
and a clip of moving shapes: its detections then show the machinery, not a
trained detector.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from .core.compare import compare_detections
from .core.preprocess import Preprocessor, to_original
from .export.exporter import export_bundle
from .export.precision import write_fp16_variants
from .methods import get_method
from .runtime.backends import create_backend
from .runtime.runner import run_video
from .runtime.synthetic import moving_shapes_clip, write_clip
from .runtime.video import open_video
from .trained import trained_checkpoint

DEMO_SEED = 0  # the held-out seed: no shipped checkpoint was trained on it


def run_demo(
    out_dir: str | Path = "vidtrt-demo", num_frames: int = 40, log=print, method: str = "psla", schedule: dict | None = None
) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    m = get_method(method)
    config = m.small_config
    steps = 5 if m.baseline_stage else 4
    checkpoint = trained_checkpoint(config)
    weights = f"trained weights {checkpoint.name}" if checkpoint else "seeded random weights"
    log(f"[1/{steps}] exporting {config} ({m.name}, {weights}) to {out_dir / 'bundle'}")
    if checkpoint:
        bundle = export_bundle(m.name, out_dir / "bundle", checkpoint=checkpoint, log=log, schedule=schedule)
    else:
        bundle = export_bundle(m.name, out_dir / "bundle", config_name=config, seed=0, log=log, schedule=schedule)
    write_fp16_variants(bundle, log=log)  # as `vidtrt export` does by default: the bundle is ready for `vidtrt build`
    manifest = bundle.manifest
    resolved = m.resolve_schedule(manifest.schedule)

    truth = None
    if checkpoint:
        clip_path, truth = _labelled_clip(checkpoint, out_dir, num_frames)
        log(f"[2/{steps}] wrote a {num_frames}-frame labelled synthetic clip (seed {DEMO_SEED}, held out from training) to {clip_path}")
    else:
        clip_path = out_dir / "clip.mp4"
        log(f"[2/{steps}] writing a {num_frames}-frame clip of moving shapes to {clip_path}")
        write_clip(moving_shapes_clip(num_frames=num_frames), clip_path)

    described = ", ".join(f"{k} {v}" for k, v in resolved.items())
    log(f"[3/{steps}] running the {m.name} pipeline ({described}) on onnxruntime")
    detections = []
    summary = run_video(bundle, clip_path, backend="onnxruntime", out_dir=out_dir, collect=detections, progress=True)
    log(summary.format())
    pipeline_ms = sum(sum(v) for v in summary.stage_ms.values()) / summary.frames
    stage_ms = {stage: float(np.mean(times)) for stage, times in summary.stage_ms.items() if times}

    preprocess = Preprocessor.from_dict(manifest.preprocess)
    with open_video(clip_path) as frames:
        prepared = [preprocess(frame) for _, frame in frames]
    baseline_ms = None
    if m.baseline_stage:
        log(f"[4/{steps}] baseline: the '{m.baseline_stage}' stage ({m.stages[m.baseline_stage]}) on onnxruntime")
        baseline = create_backend("onnxruntime", bundle, stages=[m.baseline_stage])
        for p in prepared:
            baseline.run(m.baseline_stage, {"image": baseline.from_numpy(p.tensor)})
        baseline_ms = float(np.mean(baseline.timings[m.baseline_stage]))

    log(f"[{steps}/{steps}] comparing with the whole-video PyTorch reference (no stage split)")
    _, detector = m.load_detector(checkpoint=bundle.path(manifest.checkpoint))
    reference = m.video_reference(detector, [torch.from_numpy(p.tensor) for p in prepared], resolved)
    cfg = detector.cfg.detection
    worst, mismatched = 0.0, 0
    for det, ref, p in zip(detections, reference, prepared):
        boxes, scores, labels, valid = (t.numpy() for t in ref)
        ref_mapped = (to_original(boxes, p), scores, labels, valid)
        ours = (det.boxes, det.scores, det.labels, np.ones(len(det), dtype=bool))
        cmp = compare_detections(ref_mapped, ours, capacity=cfg.max_detections, nms_iou=cfg.nms_iou)
        worst = max(worst, cmp.worst())
        mismatched += not cmp.ok

    accuracy = None
    if truth is not None:
        from .eval.vid import evaluate_run

        accuracy = evaluate_run(truth, detections).map
    report = {
        "method": m.name,
        "weights": weights,
        "map_vs_ground_truth": accuracy,
        "frames": summary.frames,
        "fps": summary.fps,
        "stage_ms": stage_ms,
        "pipeline_ms_per_frame": pipeline_ms,
        "baseline_ms": baseline_ms,
        "speedup": baseline_ms / pipeline_ms if baseline_ms else None,
        "max_deviation_from_reference": worst,
        "frames_not_matching_reference": mismatched,
        "outputs": {k: str(v) for k, v in summary.outputs.items()},
    }
    log("")
    log(f"vidtrt demo summary: {m.name} (CPU, onnxruntime; {weights})")
    for stage, ms in stage_ms.items():
        log(f"  {m.stage_title(stage):<16} {ms:8.2f} ms   ({m.stages.get(stage, stage)}), {len(summary.stage_ms[stage])} calls")
    if baseline_ms is not None:
        log(f"  {m.stage_title(m.baseline_stage):<16} {baseline_ms:8.2f} ms   (baseline: {m.stages[m.baseline_stage]})")
    speedup = f"  → {report['speedup']:.2f}x the per-frame baseline" if baseline_ms else ""
    log(f"  pipeline         {pipeline_ms:8.2f} ms/frame{speedup}")
    log(f"  end to end       {summary.fps:8.1f} fps (decode, preprocessing, inference, outputs)")
    if accuracy is not None:
        log("  mAP@0.5 vs the clip's annotations: " + ", ".join(f"{k} {v:.3f}" for k, v in accuracy.items() if v == v))
    log(f"  max deviation from the whole-video reference: {worst:.2e} (box px / score), "
        f"{mismatched} of {summary.frames} frames with unmatched detections")  # fmt: skip
    log(f"  outputs in {out_dir}/: " + ", ".join(Path(p).name for p in report["outputs"].values()))
    log(f"  TensorRT engines (no GPU needed): vidtrt build {out_dir / 'bundle'} --runtime tensorrt-rtx --sm 75,86,89 --precision fp16")
    return report


def _labelled_clip(checkpoint: Path, out_dir: Path, num_frames: int):
    """A snippet of the synthetic set the checkpoint was trained on (its
    recorded data parameters, the held-out seed) as clip.mp4, and its ground truth."""
    import json

    from .eval.synth_vid import SynthConfig, write_synth_vid
    from .eval.vid import load_ground_truth

    record = json.loads(Path(str(checkpoint) + ".json").read_text())
    params = {**record["data_parameters"], "seed": DEMO_SEED, "videos": 1, "frames": num_frames, "split": "demo"}
    data = out_dir / "clip_data"
    write_synth_vid(data, SynthConfig(**params))
    truth = load_ground_truth(data, "demo")
    snippet = data / "Data" / "VID" / "demo" / truth[0].snippet
    clip_path = out_dir / "clip.mp4"
    write_clip([cv2.imread(str(snippet / f"{f.frame}.JPEG")) for f in truth], clip_path)
    return clip_path, truth
