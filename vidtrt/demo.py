"""`vidtrt demo`: the whole toolkit on a bundled input, with nothing to download.

Builds the small PSLA config with fixed seeded weights, exports its bundle,
makes a short clip of moving shapes, runs the key/non-key pipeline on ONNX
Runtime, writes the outputs, and reports per-stage latency, fps, the speed-up
of the schedule over running N_f + N_t on every frame, and the largest
deviation from the whole-video PyTorch reference.

The weights are random (seeded): the detections show the machinery, not a
trained detector.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .export.exporter import export_bundle
from .export.precision import write_fp16_variants
from .methods import get_method
from .runtime.backends import create_backend
from .core.compare import compare_detections
from .core.preprocess import Preprocessor, to_original
from .runtime.runner import run_video
from .runtime.synthetic import moving_shapes_clip, write_clip
from .runtime.video import open_video

DEMO_CONFIG = "psla_small"


def run_demo(out_dir: str | Path = "vidtrt-demo", num_frames: int = 40, log=print) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log(f"[1/5] exporting {DEMO_CONFIG} (seeded weights) to {out_dir / 'bundle'}")
    bundle = export_bundle("psla", out_dir / "bundle", config_name=DEMO_CONFIG, seed=0, log=log)
    write_fp16_variants(bundle, log=log)  # as `vidtrt export` does by default: the bundle is ready for `vidtrt build`
    manifest = bundle.manifest

    clip_path = out_dir / "clip.mp4"
    log(f"[2/5] writing a {num_frames}-frame clip of moving shapes to {clip_path}")
    write_clip(moving_shapes_clip(num_frames=num_frames), clip_path)

    log(f"[3/5] running the PSLA pipeline (key interval {manifest.schedule['key_interval']}, "
        f"key frame {manifest.schedule['key_placement']}) on onnxruntime")  # fmt: skip
    detections = []
    summary = run_video(bundle, clip_path, backend="onnxruntime", out_dir=out_dir, collect=detections, progress=True)
    log(summary.format())

    log("[4/5] baseline: N_f + N_t on every frame (the 'perframe' stage) on onnxruntime")
    preprocess = Preprocessor.from_dict(manifest.preprocess)
    with open_video(clip_path) as frames:
        prepared = [preprocess(frame) for _, frame in frames]
    baseline = create_backend("onnxruntime", bundle, stages=["perframe"])
    for p in prepared:
        baseline.run("perframe", {"image": baseline.from_numpy(p.tensor)})
    baseline_ms = float(np.mean(baseline.timings["perframe"]))
    pipeline_ms = sum(sum(v) for v in summary.stage_ms.values()) / summary.frames
    key_ms = float(np.mean(summary.stage_ms.get("key", [np.nan])))
    nonkey_ms = float(np.mean(summary.stage_ms.get("nonkey", [np.nan])))

    log("[5/5] comparing with the whole-video PyTorch reference (no stage split)")
    method = get_method("psla")
    _, detector = method.load_detector(checkpoint=bundle.path(manifest.checkpoint))
    reference = method.video_reference(
        detector, [torch.from_numpy(p.tensor) for p in prepared], manifest.schedule["key_interval"], manifest.schedule["key_placement"]
    )
    cfg = detector.cfg.detection
    worst, mismatched = 0.0, 0
    for det, ref, p in zip(detections, reference, prepared):
        boxes, scores, labels, valid = (t.numpy() for t in ref)
        ref_mapped = (to_original(boxes, p), scores, labels, valid)
        ours = (det.boxes, det.scores, det.labels, np.ones(len(det), dtype=bool))
        cmp = compare_detections(ref_mapped, ours, capacity=cfg.max_detections, nms_iou=cfg.nms_iou)
        worst = max(worst, cmp.worst())
        mismatched += not cmp.ok

    report = {
        "frames": summary.frames,
        "fps": summary.fps,
        "key_ms": key_ms,
        "nonkey_ms": nonkey_ms,
        "pipeline_ms_per_frame": pipeline_ms,
        "perframe_ms": baseline_ms,
        "speedup": baseline_ms / pipeline_ms,
        "max_deviation_from_reference": worst,
        "frames_not_matching_reference": mismatched,
        "outputs": {k: str(v) for k, v in summary.outputs.items()},
    }
    log("")
    log("vidtrt demo summary (CPU, onnxruntime; random seeded weights)")
    log(f"  key stage        {key_ms:8.2f} ms   (N_f + RFU + N_t)")
    log(f"  non-key stage    {nonkey_ms:8.2f} ms   (N_l + DenseFT + N_t), {key_ms / nonkey_ms:.2f}x cheaper than a key frame")
    log(f"  per-frame N_f    {baseline_ms:8.2f} ms   (baseline: N_f + N_t on every frame)")
    log(f"  pipeline         {pipeline_ms:8.2f} ms/frame  → {report['speedup']:.2f}x the per-frame baseline")
    log(f"  end to end       {summary.fps:8.1f} fps (decode, preprocessing, inference, outputs)")
    log(f"  max deviation from the whole-video reference: {worst:.2e} (box px / score), "
        f"{mismatched} of {summary.frames} frames with unmatched detections")  # fmt: skip
    log(f"  outputs in {out_dir}/: " + ", ".join(Path(p).name for p in report["outputs"].values()))
    log(f"  TensorRT engines (no GPU needed): vidtrt build {out_dir / 'bundle'} --runtime tensorrt-rtx --sm 75,86,89 --precision fp16")
    return report
