"""`vidtrt run`: a video through a bundle's pipeline into output files."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.bundle import Bundle
from .backends import Backend
from .interrupts import InterruptsBetweenFrames
from .outputs import AnnotatedVideoWriter, CocoResultsWriter, ImageNetVidWriter, JsonLinesWriter, _as_min_score
from ..api import VideoDetector
from .video import RandomAccessVideo, VideoError, open_video

OUTPUT_FILES = {
    "jsonl": "detections.jsonl",
    "video": "annotated.mp4",
    "vid": "imagenet_vid.txt",
    "coco": "detections_coco.json",
}


@dataclass
class RunSummary:
    frames: int
    seconds: float
    stage_ms: dict[str, list[float]]  # per stage: wall ms of every call
    outputs: dict[str, Path] = field(default_factory=dict)
    stage_of_frame: dict[int, str] = field(default_factory=dict)
    # Why the run stopped before the end of the source (None: it did not):
    # the outputs then hold every frame completed until then, in valid files.
    partial: str | None = None
    interrupted: bool = False  # stopped by Ctrl-C / SIGTERM (the CLI exits 130)
    backend: str = ""
    precision: str = "fp32"

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")

    def format(self) -> str:
        lines = [
            f"{self.frames} frames in {self.seconds:.2f} s: {self.fps:.1f} fps (wall, including decode and output) "
            f"on {self.backend or '?'}, {self.precision}"
        ]
        if self.partial:
            lines.insert(0, f"PARTIAL RUN: {self.partial}; the outputs hold the {self.frames} frames completed before it")
        for stage, times in self.stage_ms.items():
            if times:
                lines.append(f"  {stage:<10} {len(times):>5} calls  mean {np.mean(times):8.2f} ms  median {np.median(times):8.2f} ms")
        for kind, path in self.outputs.items():
            lines.append(f"  {kind:<10} {path}")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        """JSON-ready (``vidtrt run --json``)."""
        return {
            "frames": self.frames,
            "seconds": self.seconds,
            "fps": self.fps,
            "backend": self.backend,
            "precision": self.precision,
            "partial": self.partial,
            "interrupted": self.interrupted,
            "stage_ms": {k: {"calls": len(v), "mean": float(np.mean(v)) if v else None} for k, v in self.stage_ms.items()},
            "outputs": {k: str(v) for k, v in self.outputs.items()},
        }


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
    score_threshold: float = 0.0,
    vid_frame_offset: int = 0,
    allow_mixed_sizes: bool = False,
    detector=None,
) -> RunSummary:
    """Runs ``source`` (path, camera index or iterable of BGR frames) through the
    bundle on ``backend`` (a name, or a Backend instance to reuse) with a
    :class:`vidtrt.api.VideoDetector`. Writes the chosen outputs (OUTPUT_FILES:
    jsonl, video, vid, coco) into ``out_dir``; appends each frame's Detections
    (original image coordinates, every score) to ``collect`` when given.

    backend_options go to the backend, "precision" among them (fp32 when
    absent). score_threshold: detections scoring below it are left out of the
    written and drawn outputs (not out of ``collect``). vid_frame_offset: the
    ImageNet VID file's frame numbers start at vid_frame_offset + 1 — the
    number of frames listed before this snippet in the devkit's val.txt, so
    that per-snippet files concatenate into one results file.
    allow_mixed_sizes: an image sequence's images of another size are resized
    to the first one's instead of stopping the run.
    detector: a ready detector to use instead of opening ``bundle`` on
    ``backend`` (a :class:`vidtrt.serving.client.RemoteDetector` for
    ``vidtrt run --server``; it has the VideoDetector surface used here).
    """
    unknown = set(outputs) - set(OUTPUT_FILES)
    if unknown:
        raise ValueError(f"unknown outputs {sorted(unknown)}; choose from {sorted(OUTPUT_FILES)}")
    if outputs and out_dir is None:
        raise ValueError("out_dir is needed to write outputs")
    paths = {kind: Path(out_dir) / OUTPUT_FILES[kind] for kind in outputs}
    min_score = _as_min_score(score_threshold)
    if isinstance(vid_frame_offset, bool) or not isinstance(vid_frame_offset, (int, np.integer)) or vid_frame_offset < 0:
        raise ValueError(f"vid_frame_offset must be an integer >= 0, got {vid_frame_offset!r}")
    if detector is None:
        options = dict(backend_options or {})
        detector = VideoDetector(
            bundle, backend, options.pop("precision", None), backend_options=options, **(pipeline_options or {})
        )
    manifest, runner_backend = detector.bundle.manifest, detector.backend
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)

    summary = RunSummary(0, 0.0, {})
    summary.backend = getattr(runner_backend, "name", type(runner_backend).__name__)
    summary.precision = getattr(runner_backend, "precision", (backend_options or {}).get("precision", "fp32"))
    with contextlib.ExitStack() as stack:
        frames = stack.enter_context(open_video(source, allow_mixed_sizes=allow_mixed_sizes))
        live = frames.info.frame_count is None  # a stream or camera: results readable while it runs
        stream = detector.stream()
        if detector.pipeline.needs_random_access() and isinstance(source, (str, os.PathLike)) and frames.info.frame_count:
            # MEGA offline reads its global pool anywhere in the video: a second
            # decoder serves those frames, so memory stays constant in the length.
            reader = stack.enter_context(RandomAccessVideo(source, allow_mixed_sizes=allow_mixed_sizes))
            stream = detector.stream(video_length=frames.info.frame_count, frame_source=reader)
        writers = []
        if "jsonl" in paths:
            writers.append(
                stack.enter_context(
                    JsonLinesWriter(paths["jsonl"], manifest.class_names, source=_source_label(source), min_score=min_score, live=live)
                )
            )
        if "vid" in paths:
            writers.append(stack.enter_context(ImageNetVidWriter(paths["vid"], vid_frame_offset, min_score=min_score)))
        if "coco" in paths:
            writers.append(stack.enter_context(CocoResultsWriter(paths["coco"], min_score=min_score)))
        if "video" in paths:
            writers.append(
                stack.enter_context(
                    AnnotatedVideoWriter(paths["video"], frames.info.fps, manifest.class_names, min_score=min_score)
                )
            )
        bar = None
        if progress:
            from tqdm import tqdm

            bar = stack.enter_context(
                tqdm(total=frames.info.frame_count, unit="frame", desc="vidtrt run", leave=True, disable=None)
            )
        # Frames whose detections are not out yet, kept only for the annotated video.
        keep_frames = "video" in paths
        waiting: dict[int, np.ndarray] = {}

        # Each frame reaches every writer or none (see interrupts.py).
        interrupts = stack.enter_context(InterruptsBetweenFrames())

        def emit(results) -> None:
            for detections in results:
                with interrupts.frame():
                    index = detections.frame_index
                    frame = waiting.pop(index, None)
                    for writer in writers:
                        writer.write(index, detections, frame)
                    if collect is not None:
                        collect.append(detections)
                    summary.stage_of_frame[index] = detections.stage
                    summary.frames += 1
                    if bar is not None:
                        bar.update(1)

        start = time.perf_counter()
        try:
            for index, frame in frames:
                if keep_frames:
                    waiting[index] = frame
                meta = frames.last_meta
                # The stream numbers frames 0, 1, ... as the source does.
                emit(stream.push(frame, timestamp=meta.timestamp, file=meta.name))
        except KeyboardInterrupt:
            # Ctrl-C, or SIGTERM turned into one by the CLI: keep what was done.
            summary.partial, summary.interrupted = "interrupted", True
        except VideoError as err:  # truncated or corrupt mid-way: the frames before it are good
            summary.partial = str(err)
        # Frames already decoded but waiting (middle key frame, offline support)
        # are finished either way. A second interrupt stops that too, and the
        # outputs keep the frames written until then.
        try:
            emit(stream.flush())
        except KeyboardInterrupt:
            summary.partial, summary.interrupted = "interrupted", True
        summary.seconds = time.perf_counter() - start
    summary.stage_ms = {k: list(v) for k, v in runner_backend.timings.items()}
    summary.outputs = paths
    return summary


def _source_label(source):
    """How the JSON lines name the source: its path, its camera index, or "frames"."""
    if isinstance(source, (str, os.PathLike)):
        return os.fsdecode(os.fspath(source))
    if isinstance(source, (int, np.integer)) and not isinstance(source, bool):
        return int(source)
    return "frames"
