"""`vidtrt export`: a detector → a verified bundle of ONNX stage graphs."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import asdict
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort
import torch

from ..methods import get_method
from ..models.checkpoint import save_checkpoint
from ..core.compare import compare_detections
from ..core.preprocess import Preprocessor
from ..core.bundle import Bundle, Manifest, StageSpec, TensorSpec, load_bundle, tool_versions, write_manifest
from .onnx import DEFAULT_OPSET, export_module

CHECKPOINT_FILE = "model.ckpt"
# Dense outputs (carried state): |onnx − torch| ≤ ATOL + RTOL·|torch|.
DENSE_ATOL, DENSE_RTOL = 1e-3, 1e-3


class ExportVerificationError(RuntimeError):
    """An exported graph computes something else than the PyTorch module."""


def _np_dtype(t: torch.Tensor) -> str:
    return str(t.detach().numpy().dtype)


def _specs(names, tensors, axes) -> list[TensorSpec]:
    specs = []
    for name, t in zip(names, tensors):
        shape = list(t.shape)
        for dim, symbol in axes.get(name, {}).items():
            shape[dim] = symbol
        specs.append(TensorSpec(name, shape, _np_dtype(t)))
    return specs


def verify_stage(session: ort.InferenceSession, module, names_in, names_out, sample, detection_cfg) -> dict:
    """Runs one stage in ONNX Runtime and PyTorch on ``sample``; returns deviations."""
    with torch.no_grad():
        expected = [t.detach() for t in module(*sample)]
    got = session.run(None, {n: t.numpy() for n, t in zip(names_in, sample)})
    report = {"dense_max_abs_error": 0.0}
    by_name = dict(zip(names_out, zip(expected, got)))
    ok = True
    for name, (want, have) in by_name.items():
        if name in ("boxes", "scores", "labels", "valid"):
            continue
        want = want.numpy()
        if not np.issubdtype(want.dtype, np.floating):  # masks and indices must agree exactly
            mismatches = int(np.count_nonzero(have != want))
            report[f"{name}_mismatches"] = mismatches
            ok &= mismatches == 0
            continue
        err = float(np.abs(have - want).max()) if want.size else 0.0
        report["dense_max_abs_error"] = max(report["dense_max_abs_error"], err)
        ok &= bool(np.all(np.abs(have - want) <= DENSE_ATOL + DENSE_RTOL * np.abs(want)))
    if "boxes" in by_name:
        ref = [by_name[n][0].numpy() for n in ("boxes", "scores", "labels", "valid")]
        onnx_out = [by_name[n][1] for n in ("boxes", "scores", "labels", "valid")]
        if ref[0].ndim == 2:  # one frame's detections; batch stages stack frames on a leading axis
            ref, onnx_out = [x[None] for x in ref], [x[None] for x in onnx_out]
        comparisons = [
            compare_detections([x[i] for x in ref], [x[i] for x in onnx_out], detection_cfg.max_detections, detection_cfg.nms_iou)
            for i in range(len(ref[0]))
        ]
        report.update(
            detections_matched=sum(c.matched for c in comparisons),
            detections_max_box_error=max(c.max_box_error for c in comparisons),
            detections_max_score_error=max(c.max_score_error for c in comparisons),
            detections_unexplained=sum(c.unexplained_reference + c.unexplained_other for c in comparisons),
        )
        ok &= all(c.ok for c in comparisons)
    report["ok"] = bool(ok)
    return report


def export_bundle(
    method_name: str,
    out_dir: str | Path,
    config_name: str | None = None,
    checkpoint: str | Path | None = None,
    seed: int = 0,
    verify: bool = True,
    log: Callable[[str], None] = print,
    overrides: dict | None = None,
    schedule: dict | None = None,
    progress: bool = False,
) -> Bundle:
    """Exports every stage of a method to ``out_dir`` and writes the manifest last.

    ``schedule`` sets schedule options (``Method.schedule_options``; None keeps
    the config's): they become the bundle's defaults, and those fixed at
    export (MFSA's K, TRoI's T) shape the graphs.

    On any failure the files written so far are removed, so a directory that
    looks like a bundle (has a manifest) is always complete.
    """
    method = get_method(method_name)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "manifest.json").exists():
        raise FileExistsError(f"{out_dir} exists and is neither empty nor a bundle; choose another --out")
    schedule_fields = method.export_overrides(schedule or {})
    cfg, detector = method.load_detector(config_name, checkpoint, seed, overrides)
    if schedule_fields:
        # Schedule options hold no weights: the loaded detector runs the new schedule as it is.
        cfg = dataclasses.replace(cfg, **schedule_fields)
        detector.cfg = cfg
    out_dir.mkdir(parents=True, exist_ok=True)
    previous_files = _bundle_files(out_dir)
    written: list[Path] = []
    try:
        (out_dir / "manifest.json").unlink(missing_ok=True)  # re-export: the old manifest goes first
        save_checkpoint(out_dir / CHECKPOINT_FILE, method.name, cfg, detector)
        written.append(out_dir / CHECKPOINT_FILE)
        # Graphs come from a BN-folded copy; verification compares with the original.
        export_detector = copy.deepcopy(detector).fold_bn().eval()
        export_stages = method.stage_modules(export_detector)
        reference_stages = method.stage_modules(detector)
        samples = method.stage_samples(detector, seed)
        first_image = next(iter(samples.values()))[0]
        second = method.stage_samples(detector, seed + 100, *_other_size(first_image))
        stages: dict[str, StageSpec] = {}
        verification = {}
        stage_items = list(export_stages.items())
        if progress:
            from tqdm import tqdm

            stage_items = tqdm(stage_items, desc="vidtrt export", unit="stage", leave=True, disable=None)
        for name, module in stage_items:
            sample = samples[name]
            names_in, names_out = list(module.input_names), list(module.output_names)
            axes = method.dynamic_axes(name)
            path = out_dir / f"{name}.onnx"
            log(f"  exporting stage {name!r} → {path.name}")
            export_module(module, sample, path, names_in, names_out, axes, opset=DEFAULT_OPSET)
            written.append(path)
            with torch.no_grad():
                outputs = module(*sample)
            stages[name] = StageSpec(name, path.name, _specs(names_in, sample, axes), _specs(names_out, outputs, axes))
            if verify:
                session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                reports = [
                    verify_stage(session, reference_stages[name], names_in, names_out, s, cfg.detection)
                    for s in (sample, second[name])
                ]
                verification[name] = reports
                worst = max(r["dense_max_abs_error"] for r in reports)
                det = max((r.get("detections_max_score_error", 0.0) for r in reports), default=0.0)
                log(f"    onnxruntime vs torch: max |Δ| dense {worst:.2e}, detection scores {det:.2e}")
                if not all(r["ok"] for r in reports):
                    raise ExportVerificationError(
                        f"stage {name!r}: ONNX Runtime output deviates from PyTorch beyond tolerance: {reports}"
                    )
        manifest = Manifest(
            method=method.name,
            config_name=cfg.name,
            config=cfg.as_dict(),
            stages=stages,
            state=method.state_specs(cfg),
            preprocess=Preprocessor(**asdict(cfg.preprocess)).as_dict(),
            class_names=list(cfg.class_names),
            schedule=method.default_schedule(cfg),
            feature_stride=detector.feature_stride,
            checkpoint=CHECKPOINT_FILE,
            versions={**tool_versions(), "opset": DEFAULT_OPSET},
            verification=verification,
        )
        write_manifest(out_dir, manifest)
        # A bundle replaced by this one (another method, precisions, engines)
        # leaves nothing of its own behind.
        for relative in previous_files - {p.relative_to(out_dir).as_posix() for p in written}:
            (out_dir / relative).unlink(missing_ok=True)
        for directory in sorted((p for p in out_dir.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            if not any(directory.iterdir()):
                directory.rmdir()
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        if out_dir.exists() and not any(out_dir.iterdir()):
            shutil.rmtree(out_dir)
        raise
    return load_bundle(out_dir)


def _bundle_files(directory: Path) -> set[str]:
    """The files an existing bundle's manifest lists (empty when there is none)."""
    import json

    try:
        files = json.loads((directory / "manifest.json").read_text()).get("files", {})
    except (OSError, ValueError, AttributeError):
        return set()
    return {f for f in files if isinstance(f, str) and ".." not in Path(f).parts and not Path(f).is_absolute()}


def _other_size(image: torch.Tensor) -> tuple[int, int]:
    """A second input size (checks that height and width really are dynamic)."""
    h, w = image.shape[2], image.shape[3]
    return h + 32, max(32, w - 32)
