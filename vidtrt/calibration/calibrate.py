"""`vidtrt calibrate`: INT8 variants of a bundle's stages, calibrated on what
the FP32 pipeline feeds each stage over real videos."""

from __future__ import annotations

from pathlib import Path

from ..core.bundle import Bundle, load_bundle
from ..export.precision import write_int8_variants
from ..runtime.backends import create_backend
from ..runtime.runner import run_video
from .capture import RecordingBackend, fill_unscheduled


def record_stage_inputs(bundle: Bundle, sources, max_samples: int = 32, progress: bool = True, log=print, schedule=None):
    """Runs the FP32 pipeline on ONNX Runtime over ``sources`` and returns
    (records, calls): up to ``max_samples`` input feeds per stage, and how many
    times each stage was called."""
    recorder = RecordingBackend(create_backend("onnxruntime", bundle), max_per_stage=max_samples)
    for source in sources:
        log(f"  recording stage inputs on {source}")
        run_video(bundle, source, backend=recorder, outputs=(), progress=progress, pipeline_options=schedule)
    records = {k: list(v) for k, v in recorder.records.items()}
    fill_unscheduled(bundle, records)
    for stage, feeds in records.items():
        records[stage] = feeds[:max_samples]
    return records, dict(recorder.calls)


def calibrate_bundle(
    bundle: Bundle | str | Path, sources, max_samples: int = 32, method: str = "minmax", progress=True, log=print, schedule=None
):
    """INT8 graphs for every stage, calibrated on what the FP32 pipeline (with
    ``schedule`` options over the bundle's) feeds each stage over ``sources``."""
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    if not sources:
        raise ValueError("calibration needs at least one video")
    records, calls = record_stage_inputs(bundle, sources, max_samples, progress, log, schedule)
    counts = write_int8_variants(bundle, records, [str(s) for s in sources], method=method, log=log)
    return counts, calls
