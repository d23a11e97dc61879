"""`vidtrt run`: a video through a bundle's pipeline into output files."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.bundle import Bundle, load_bundle
from .backends import Backend, create_backend
from .outputs import AnnotatedVideoWriter, Detections, ImageNetVidWriter, JsonLinesWriter
from .pipelines import create_pipeline
from ..core.preprocess import Preprocessor, to_original
from .video import open_video

OUTPUT_FILES = {"jsonl": "detections.jsonl", "video": "annotated.mp4", "vid": "imagenet_vid.txt"}


@dataclass
class RunSummary:
    frames: int
    seconds: float
    stage_ms: dict[str, list[float]]  # per stage: wall ms of every call
    outputs: dict[str, Path] = field(default_factory=dict)
    stage_of_frame: dict[int, str] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")

    def format(self) -> str:
        lines = [f"{self.frames} frames in {self.seconds:.2f} s: {self.fps:.1f} fps (wall, including decode and output)"]
        for stage, times in self.stage_ms.items():
            if times:
                lines.append(f"  {stage:<10} {len(times):>5} calls  mean {np.mean(times):8.2f} ms  median {np.median(times):8.2f} ms")
        for kind, path in self.outputs.items():
            lines.append(f"  {kind:<10} {path}")
        return "\n".join(lines)


def run_video(
    bundle: Bundle | str | Path,
    source,
    backend: str | Backend = "onnxruntime",
    out_dir: str | Path | None = None,
    outputs=("jsonl", "video", "vid"),
    pipeline_options: dict | None = None,
    progress: bool = True,
    backend_options: dict | None = None,
    collect: list | None = None,
) -> RunSummary:
    """Runs ``source`` (path, camera index or iterable of BGR frames) through the
    bundle on ``backend`` (a name, or a Backend instance to reuse). Writes the chosen outputs into ``out_dir``; appends each frame's
    Detections (original image coordinates) to ``collect`` when given."""
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    manifest = bundle.manifest
    if isinstance(backend, Backend):
        runner_backend = backend
    else:
        runner_backend = create_backend(backend, bundle, **(backend_options or {}))
    pipeline = create_pipeline(runner_backend, **{k: v for k, v in (pipeline_options or {}).items() if v is not None})
    stream = pipeline.stream()
    preprocess = Preprocessor.from_dict(manifest.preprocess)
    unknown = set(outputs) - set(OUTPUT_FILES)
    if unknown:
        raise ValueError(f"unknown outputs {sorted(unknown)}; choose from {sorted(OUTPUT_FILES)}")
    if outputs and out_dir is None:
        raise ValueError("out_dir is needed to write outputs")
    paths = {kind: Path(out_dir) / OUTPUT_FILES[kind] for kind in outputs}
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)

    summary = RunSummary(0, 0.0, {})
    with contextlib.ExitStack() as stack:
        frames = stack.enter_context(open_video(source))
        writers = []
        if "jsonl" in paths:
            writers.append(stack.enter_context(JsonLinesWriter(paths["jsonl"], manifest.class_names)))
        if "vid" in paths:
            writers.append(stack.enter_context(ImageNetVidWriter(paths["vid"])))
        if "video" in paths:
            writers.append(stack.enter_context(AnnotatedVideoWriter(paths["video"], frames.info.fps, manifest.class_names)))
        bar = None
        if progress:
            from tqdm import tqdm

            bar = stack.enter_context(
                tqdm(total=frames.info.frame_count, unit="frame", desc="vidtrt run", leave=False, disable=None)
            )
        waiting: dict[int, tuple[np.ndarray, object]] = {}  # frames whose detections are not out yet

        def emit(results) -> None:
            for result in results:
                frame, prepared = waiting.pop(result.index)
                d = result.detections
                valid = d["valid"].astype(bool)
                detections = Detections(
                    to_original(d["boxes"][valid], prepared), d["scores"][valid], d["labels"][valid], result.index
                )
                for writer in writers:
                    writer.write(result.index, detections, frame)
                if collect is not None:
                    collect.append(detections)
                summary.stage_of_frame[result.index] = result.stage
                summary.frames += 1
                if bar is not None:
                    bar.update(1)

        start = time.perf_counter()
        for index, frame in frames:
            prepared = preprocess(frame)
            waiting[index] = (frame, prepared)
            emit(stream.push(index, prepared.tensor))
        emit(stream.flush())
        summary.seconds = time.perf_counter() - start
    summary.stage_ms = {k: list(v) for k, v in runner_backend.timings.items()}
    summary.outputs = paths
    return summary
