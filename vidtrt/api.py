"""The embedding API: a bundle on a backend, frames in, detections out.

::

    import vidtrt

    detector = vidtrt.VideoDetector("bundles/psla_small", backend="onnxruntime", precision="fp32")
    for frame in frames:                      # BGR uint8 (H, W, 3) numpy arrays
        for detections in detector.push(frame):
            print(detections.frame_index, detections.names, detections.scores)
    for detections in detector.flush():       # the end of the video: what was still waiting
        ...

A :class:`VideoDetector` loads a bundle once: its backend (ONNX Runtime
sessions, TensorRT engines or the eager PyTorch modules), the method's
pipeline with its schedule, the preprocessing. A :class:`DetectionStream`
(``detector.stream()``) is one video going through it, with its own temporal
state; the detector's ``push``/``flush``/``reset`` use a default stream.

Detections come out in frame order, in the original image's pixels
(:class:`vidtrt.runtime.outputs.Detections`, with ``stage``, ``image_hw`` and
``class_names`` filled in), but not necessarily one per push: a method may
hold frames back until it can detect them. PSLA with the key frame in the
middle of a segment returns nothing for the frames before that key frame,
then all of them at once; MFSA waits for a batch (Multi-Focus) or for the
frames after each frame (Single-Focus); offline Temporal RoI Align returns
everything from ``flush()``. ``flush()`` ends the video: it returns every
frame still waiting, and the stream then starts a new video, frame indices
counting from 0 again. ``reset()`` abandons the current video (frames still
waiting are dropped).

Threads. A VideoDetector may be shared by threads, each with its own stream
(``detector.stream()``); a stream is one video and must be fed by one thread
at a time (a second concurrent call raises RuntimeError rather than mixing two
videos' frames). vidtrt serialises the backend calls of all streams of one
VideoDetector with a lock: preprocessing and box mapping run in parallel, the
stage calls one at a time. That holds on every backend, whatever the backend
library promises: ONNX Runtime documents ``InferenceSession.run`` as safe to
call concurrently, but its Python API's CUDA allocator is not thread-safe; a
TensorRT execution context is not thread-safe and vidtrt's TensorRT backend
shares one CUDA stream and one scratch buffer between its contexts; PyTorch
makes no thread-safety promise for a module's forward. For parallel
inference, give each thread its own VideoDetector (each loads its own
sessions or engines).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .core.bundle import Bundle, load_bundle
from .core.preprocess import PreparedFrame, Preprocessor, to_original
from .runtime.backends import Backend, create_backend
from .runtime.outputs import Detections
from .runtime.pipelines import FrameResult, Pipeline, create_pipeline

__all__ = ["DetectionStream", "VideoDetector"]


class VideoDetector:
    """A bundle opened on a backend and precision, ready to detect objects in videos.

    bundle: a bundle directory or a loaded :class:`~vidtrt.core.bundle.Bundle`.
    backend: "onnxruntime", "torch", "tensorrt" or "tensorrt-rtx", or a
    Backend instance to reuse (then ``precision`` and ``backend_options`` must
    agree with it or be left out). precision: "fp32" (default), "fp16" or
    "int8" — graphs or engines the bundle holds; the torch backend runs FP32
    only. backend_options: passed on to the backend (e.g. ``providers`` or
    ``threads`` for onnxruntime, ``device`` for torch and tensorrt).
    ``schedule``: the method's schedule options (PSLA ``key_interval``,
    ``key_placement``; MFSA ``mode``, ``batch_frames``; Temporal RoI Align
    ``mode``, ``num_support``, ``stride``), overriding the bundle's; None
    keeps the bundle's.

    See the module docstring for delays, streams and threads.
    """

    def __init__(
        self,
        bundle: Bundle | str | os.PathLike,
        backend: str | Backend = "onnxruntime",
        precision: str | None = None,
        *,
        backend_options: dict[str, Any] | None = None,
        **schedule: Any,
    ):
        if isinstance(backend, Backend):
            self.backend = backend
            self.bundle = _bundle_of_backend(bundle, backend)
            if backend_options:
                raise ValueError("backend_options apply when the backend is created; this one is given ready-made")
            built = getattr(backend, "precision", "fp32")
            if precision is not None and precision != built:
                raise ValueError(f"the given {backend.name} backend runs {built}, not {precision}")
            self.precision = built
        else:
            self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
            self.precision = "fp32" if precision is None else precision
            options = dict(backend_options or {})
            if "precision" in options:
                raise ValueError("give the precision as VideoDetector(..., precision=...), not in backend_options")
            if backend == "torch":
                if self.precision != "fp32":
                    raise ValueError(
                        f"the torch backend runs the FP32 model only, not {self.precision}; "
                        "use onnxruntime or tensorrt for the variants"
                    )
            else:
                options["precision"] = self.precision
            self.backend = create_backend(backend, self.bundle, **options)
        self.pipeline: Pipeline = create_pipeline(
            self.backend, **{name: value for name, value in schedule.items() if value is not None}
        )
        manifest = self.bundle.manifest
        self.preprocess = Preprocessor.from_dict(manifest.preprocess)
        self.class_names: tuple[str, ...] = tuple(manifest.class_names)
        # One stage call at a time over the shared backend (see the module docstring).
        self._backend_lock = threading.Lock()
        self._default_stream: DetectionStream | None = None

    # ------------------------------------------------------------ description

    @property
    def method(self) -> str:
        """The bundle's method ("psla", "mfsa", "troi", "impression", "mega")."""
        return self.bundle.manifest.method

    @property
    def schedule(self) -> dict[str, Any]:
        """The schedule in effect: the bundle's, overridden by the options given."""
        return dict(self.pipeline.schedule)

    def __repr__(self) -> str:
        return (
            f"<VideoDetector {self.method} {self.bundle.directory} on {self.backend.name} {self.precision}, "
            f"schedule {self.schedule}>"
        )

    # ------------------------------------------------------------ streams

    def stream(self, video_length: int | None = None, frame_source: Callable[[int], np.ndarray] | None = None) -> DetectionStream:
        """A new, independent video stream (own state) over this detector's backend.

        For a schedule that reads frames out of order (``pipeline.needs_random_access()``:
        MEGA offline), ``video_length`` and ``frame_source`` (frame index → BGR
        uint8 frame of this video) let the stream run in constant memory; without
        them it keeps the video's frame outputs until ``flush()``. They describe
        one video: after ``flush()`` the stream is a plain one again."""
        return DetectionStream(self, video_length, frame_source)

    @property
    def default_stream(self) -> DetectionStream:
        """The stream behind ``push``, ``flush`` and ``reset``."""
        if self._default_stream is None:
            self._default_stream = self.stream()
        return self._default_stream

    def push(self, frame: np.ndarray, *, timestamp: float | None = None, file: str | None = None) -> list[Detections]:
        """Adds the next frame (BGR uint8 (H, W, 3)) of the default stream's video;
        returns the detections that became ready (none, one or several), in frame order.
        ``timestamp`` (s) and ``file`` are carried into that frame's Detections."""
        return self.default_stream.push(frame, timestamp=timestamp, file=file)

    def flush(self) -> list[Detections]:
        """Ends the default stream's video: returns the detections of every frame
        still waiting; the next push starts a new video."""
        return self.default_stream.flush()

    def reset(self) -> None:
        """Abandons the default stream's video (waiting frames are dropped); the
        next push starts a new video."""
        self.default_stream.reset()

    def detect_video(self, frames) -> Iterator[Detections]:
        """Detections of a whole video, one per frame, in frame order, on a stream
        of its own (the default stream is left alone).

        frames: an iterable of BGR uint8 (H, W, 3) arrays (a list, a generator,
        an [N, H, W, 3] array), or a video file path or camera index, opened with
        :func:`vidtrt.runtime.video.open_video`. Lazy: frames are read as the
        detections are consumed; the video ends with the iterable.
        """
        stream = self.stream()
        if isinstance(frames, (str, os.PathLike)) or (
            isinstance(frames, (int, np.integer)) and not isinstance(frames, bool)
        ):
            from .runtime.video import open_video

            with open_video(frames) as source:
                for _, frame in source:
                    yield from stream.push(frame)
        elif isinstance(frames, Iterable):
            for frame in frames:
                yield from stream.push(frame)
        else:
            raise TypeError(
                f"frames must be an iterable of BGR uint8 arrays, a video path or a camera index, "
                f"got {type(frames).__name__}"
            )
        yield from stream.flush()

    def _call_pipeline(self, method, *args) -> list[FrameResult]:
        with self._backend_lock:
            return method(*args)


class DetectionStream:
    """One video through a :class:`VideoDetector`: its own temporal state and the
    frames waiting for their detections. Frame indices count the frames pushed
    since the video began (the last ``flush()`` or ``reset()``), from 0."""

    def __init__(self, detector: VideoDetector, video_length: int | None = None, frame_source=None):
        self.detector = detector
        if video_length is None and frame_source is None:
            self._stream = detector.pipeline.stream()
        else:
            if not detector.pipeline.needs_random_access():
                raise ValueError(
                    f"video_length and frame_source are for schedules that read frames out of order (MEGA offline); "
                    f"the {detector.method} schedule {detector.schedule} reads them in order"
                )

            def preprocessed(index: int) -> np.ndarray:
                return detector.preprocess(self._checked_frame(frame_source(index), index)).tensor

            self._stream = detector.pipeline.stream(video_length=video_length, frame_source=preprocessed)
        self._in_use = threading.Lock()
        self._begin_video()

    def _begin_video(self) -> None:
        self._meta: dict[int, tuple] = {}  # frame → (timestamp, file) until its detections come out
        self._next_index = 0
        self._frame_shape: tuple[int, ...] | None = None
        self._geometry: PreparedFrame | None = None  # resize of this video's frames (all one size)
        self._waiting = 0

    @property
    def frames_pushed(self) -> int:
        """Frames of the current video pushed so far (the next frame's index)."""
        return self._next_index

    @property
    def waiting(self) -> int:
        """Frames pushed whose detections have not been returned yet."""
        return self._waiting

    def push(self, frame: np.ndarray, *, timestamp: float | None = None, file: str | None = None) -> list[Detections]:
        """Adds the video's next frame (BGR uint8 (H, W, 3)); returns the
        detections that became ready (none, one or several), in frame order.
        A frame that is not such an array, or whose size differs from the
        video's first frame, raises ValueError and leaves the stream as it was.
        ``timestamp`` (its presentation time, s) and ``file`` (its image file)
        are carried into the frame's Detections when it comes out."""
        with self._exclusive("push"):
            index = self._next_index
            frame = self._checked_frame(frame, index)
            prepared = self.detector.preprocess(frame)
            results = self.detector._call_pipeline(self._stream.push, index, prepared.tensor)
            self._meta[index] = (timestamp, file)
            if self._geometry is None:
                self._geometry = prepared
                self._frame_shape = frame.shape
            self._next_index = index + 1
            self._waiting += 1
            return self._detections(results)

    def flush(self) -> list[Detections]:
        """Ends the video: returns the detections of every frame still waiting,
        in frame order. The next push starts a new video (state cleared, frame
        indices from 0)."""
        with self._exclusive("flush"):
            try:
                return self._detections(self.detector._call_pipeline(self._stream.flush))
            finally:
                self._stream.reset()
                self._begin_video()

    def reset(self) -> None:
        """Abandons the video: state and waiting frames are dropped; the next
        push starts a new video."""
        with self._exclusive("reset"):
            self._stream.reset()
            self._begin_video()

    @contextlib.contextmanager
    def _exclusive(self, operation: str):
        # Refuse rather than wait: two threads feeding one stream would
        # interleave two videos' frames, a bug to report, not to serialise.
        if not self._in_use.acquire(blocking=False):
            raise RuntimeError(
                f"DetectionStream.{operation}() called while another call on this stream is running "
                "(from another thread?); give each thread its own stream: detector.stream()"
            )
        try:
            yield
        finally:
            self._in_use.release()

    def _checked_frame(self, frame, index: int) -> np.ndarray:
        if not isinstance(frame, np.ndarray):
            raise ValueError(
                f"frame {index}: expected a numpy array (H, W, 3) of dtype uint8 in BGR order, "
                f"got {type(frame).__name__}"
            )
        if frame.dtype != np.uint8:
            raise ValueError(
                f"frame {index}: expected dtype uint8 (BGR, 0-255), got {frame.dtype}"
                + ("; convert with (frame * 255).astype(np.uint8) if it holds 0-1 floats" if frame.dtype.kind == "f" else "")
            )
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] == 0 or frame.shape[1] == 0:
            raise ValueError(f"frame {index}: expected shape (H, W, 3) with H, W > 0 (BGR), got {frame.shape}")
        if self._frame_shape is not None and frame.shape != self._frame_shape:
            raise ValueError(
                f"frame {index} has shape {frame.shape}, but this video's frames have {self._frame_shape}; "
                "a video keeps one frame size (its state has that size): flush() or reset() before a new video"
            )
        return np.ascontiguousarray(frame)

    def _detections(self, results: list[FrameResult]) -> list[Detections]:
        geometry = self._geometry
        detections = []
        for result in results:
            out = result.detections
            timestamp, file = self._meta.pop(result.index, (None, None))
            detections.append(
                Detections.from_padded(
                    result.index,
                    to_original(np.asarray(out["boxes"]), geometry),
                    out["scores"],
                    out["labels"],
                    valid=np.asarray(out["valid"]).astype(bool),
                    stage=result.stage,
                    image_hw=geometry.original_hw,
                    class_names=self.detector.class_names,
                    timestamp=timestamp,
                    file=file,
                )
            )
        self._waiting -= len(detections)
        return detections


def _bundle_of_backend(bundle, backend: Backend) -> Bundle:
    """The ready-made backend's bundle, after checking it is the one named."""
    own = backend.bundle
    named = bundle.directory if isinstance(bundle, Bundle) else Path(bundle)
    if Path(named).resolve() != Path(own.directory).resolve():
        raise ValueError(f"the given backend runs bundle {own.directory}, not {named}")
    return own
