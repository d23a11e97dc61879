"""Frames in: video files, cameras and in-memory frames behind one iterator.

``open_video(source)`` returns a :class:`FrameSource`, an iterator of
``(frame_index, frame)`` pairs (``frame``: H×W×3 uint8, BGR, C-contiguous) that is
also a context manager. Frame indices count from 0 in decode order.

Files and cameras are decoded by ``cv2.VideoCapture`` on a background thread
that feeds a bounded queue, so decoding overlaps with inference while memory
stays bounded by ``queue_size`` frames. The capture is opened and its first frame
decoded before ``open_video`` returns, so an unreadable source fails there, not
somewhere inside the consumer's loop.

In-memory iterables (lists of arrays, generators, a [N, H, W, 3] array) are read
on the consumer's thread: the frames already exist or are made by Python code
that holds the GIL anyway, and an arbitrary Python iterator cannot be
interrupted from another thread, so a thread would buy nothing and could be left
hanging on close.

Every frame of a source must have the size of its first frame: pipelines carry
per-stream state (feature maps, memories) whose shape follows the frame size.

Errors about the media or the frames are :class:`VideoError`, a
``RuntimeError``: they are discovered while running, from data, not from the
caller's arguments (wrong argument *types* and values such as ``queue_size=0``
still raise ``TypeError``/``ValueError``).
"""

from __future__ import annotations

import abc
import glob
import itertools
import math
import os
import queue
import re
import threading
import warnings
import weakref
from collections.abc import Iterable, Iterator, Sized
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

__all__ = ["DEFAULT_FPS", "FrameMeta", "FrameSource", "VideoError", "VideoInfo", "image_sequence", "open_video"]

DEFAULT_FPS = 25.0

# Beyond this a reported frame rate is a container time base, not a frame rate.
_MAX_PLAUSIBLE_FPS = 1000.0
# How often a blocked producer or consumer looks at the stop flag / thread state.
_POLL_SECONDS = 0.05
# A decode thread can only be stuck inside cv2's read(), which returns within
# one frame interval for files and live cameras alike.
_JOIN_TIMEOUT_SECONDS = 5.0

_thread_numbers = itertools.count()


class VideoError(RuntimeError):
    """A video source cannot be opened or decoded, or delivered an invalid frame."""


@dataclass(frozen=True)
class VideoInfo:
    """What is known about a source before it has been read to the end.

    fps is DEFAULT_FPS when the source does not report a usable rate; width and
    height are those of the first frame; frame_count is None when unknown
    (cameras, streams, generators).
    """

    fps: float
    width: int
    height: int
    frame_count: int | None


@dataclass(frozen=True)
class FrameMeta:
    """What a source knows about one frame besides its pixels: ``name``, the
    image file it came from (image sequences), and ``timestamp``, its
    presentation time in seconds (the container's for files and streams,
    index / fps for image sequences and iterables)."""

    name: str | None = None
    timestamp: float | None = None


class _End:
    """Queue item: the source reported end of stream."""


class _Failed:
    """Queue item: the decode thread raised; the consumer re-raises."""

    def __init__(self, error: BaseException):
        self.error = error


_END = _End()


def _check_frame(frame, index: int, expected_shape: tuple[int, ...] | None, origin: str) -> np.ndarray:
    if not isinstance(frame, np.ndarray):
        raise VideoError(
            f"{origin}: frame {index} is a {type(frame).__name__}, expected a numpy array "
            "of shape (H, W, 3) and dtype uint8 (BGR)"
        )
    if frame.dtype != np.uint8:
        raise VideoError(f"{origin}: frame {index} has dtype {frame.dtype}, expected uint8 (BGR)")
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] == 0 or frame.shape[1] == 0:
        raise VideoError(f"{origin}: frame {index} has shape {frame.shape}, expected (H, W, 3) with H, W > 0")
    if expected_shape is not None and frame.shape != expected_shape:
        raise VideoError(
            f"{origin}: frame {index} has shape {frame.shape} but frame 0 had {expected_shape}; "
            "all frames of a source must have one size"
        )
    return np.ascontiguousarray(frame)


def _usable_fps(reported: float, fallback: float) -> float:
    if math.isfinite(reported) and 0.0 < reported <= _MAX_PLAUSIBLE_FPS:
        return float(reported)
    return fallback


class FrameSource(Iterator[tuple[int, np.ndarray]]):
    """Iterator of (frame_index, frame); close it (or use ``with``) to stop early.

    Breaking out of a ``for`` loop over a source that is not otherwise referenced
    also closes it, when the source is garbage-collected (immediately in CPython).
    """

    def __init__(self, info: VideoInfo, origin: str):
        self._info = info
        self._origin = origin
        self._closed = False
        self.last_meta = FrameMeta()  # of the frame the last next() returned

    @property
    def info(self) -> VideoInfo:
        return self._info

    @property
    def origin(self) -> str:
        """Human-readable name of the source, as used in error messages."""
        return self._origin

    @property
    def closed(self) -> bool:
        return self._closed

    def __iter__(self) -> FrameSource:
        return self

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    @abc.abstractmethod
    def close(self) -> None:
        """Stop reading and release the source; idempotent. Iteration then ends."""

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} {self._origin} {state} {self._info}>"


def _timestamp(capture: cv2.VideoCapture) -> float | None:
    """The presentation time (s) of the frame cv2 just decoded, when it reports one."""
    ms = capture.get(cv2.CAP_PROP_POS_MSEC)
    return float(ms) / 1000.0 if math.isfinite(ms) and ms >= 0 else None


def _reached_duration(last_timestamp: float | None, frame_count: int, fps: float) -> bool:
    """Whether the last frame decoded ends the stream's duration. Containers
    of variable-frame-rate video report a frame count estimated as duration ×
    fps, which the real count need not reach; a truncated file stops well
    before its duration."""
    return last_timestamp is not None and last_timestamp + 1.5 / fps >= frame_count / fps


def _decode_loop(
    capture: cv2.VideoCapture,
    first_frame: np.ndarray,
    frame_count: int | None,
    is_camera: bool,
    origin: str,
    frames: queue.Queue,
    stop: threading.Event,
    first_timestamp: float | None = None,
    reopen=None,
    reconnects: int = 0,
    backoff: float = 0.5,
    fps: float = DEFAULT_FPS,
) -> None:
    # Holds no reference to the FrameSource, so dropping the source (e.g. after
    # `break`) lets its finalizer run and stop this thread.
    def deliver(item) -> bool:
        while not stop.is_set():
            try:
                frames.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    try:
        if not deliver((0, first_frame, first_timestamp)):
            return
        index = 1
        last_timestamp = first_timestamp
        while not stop.is_set():
            ok, frame = capture.read()
            if not ok and reopen is not None:
                # A network stream: a failed read is a dropped connection until
                # the bounded reconnect policy says the stream is gone.
                for attempt in range(reconnects):
                    if stop.wait(backoff * 2**attempt):
                        return
                    capture.release()
                    try:
                        capture = reopen()
                    except VideoError:
                        continue
                    ok, frame = capture.read()
                    if ok:
                        break
                if not ok:
                    raise VideoError(
                        f"{origin}: the stream stopped after frame {index - 1}; {reconnects} reconnect attempts failed"
                    )
            if not ok:
                if stop.is_set():
                    return
                if is_camera:
                    raise VideoError(f"{origin}: the camera stopped delivering frames after frame {index - 1}")
                # cv2 reports a failed read the same way at the end of the file
                # and on a decode error; the container's frame count tells them
                # apart. Without a count (some streams) there is nothing to
                # compare with, and the failure has to be taken as the end.
                if frame_count is None or index >= frame_count or _reached_duration(last_timestamp, frame_count, fps):
                    deliver(_END)
                    return
                raise VideoError(
                    f"{origin}: decoding stopped at frame {index} of {frame_count}; "
                    "the file is corrupt or truncated"
                )
            frame = _check_frame(frame, index, first_frame.shape, origin)
            last_timestamp = _timestamp(capture)
            if not deliver((index, frame, last_timestamp)):
                return
            index += 1
    except BaseException as error:  # noqa: BLE001 — handed to the consumer, which re-raises it
        deliver(_Failed(error))
    finally:
        capture.release()


def _stop_decoder(stop: threading.Event, frames: queue.Queue, thread: threading.Thread) -> None:
    stop.set()
    # Dropping queued frames frees their memory now rather than when the source
    # object is collected; the producer is not blocked on put() anyway.
    while True:
        try:
            frames.get_nowait()
        except queue.Empty:
            break
    if thread is threading.current_thread() or not thread.is_alive():
        return
    thread.join(_JOIN_TIMEOUT_SECONDS)
    if thread.is_alive():
        warnings.warn(
            f"video decode thread {thread.name} did not stop within {_JOIN_TIMEOUT_SECONDS:.0f} s; "
            "it will release its capture when the pending read returns",
            RuntimeWarning,
            stacklevel=3,
        )


class _CaptureSource(FrameSource):
    """A cv2.VideoCapture decoded on a background thread into a bounded queue."""

    def __init__(
        self, capture: cv2.VideoCapture, origin: str, is_camera: bool, queue_size: int, fallback_fps: float,
        reopen=None, reconnects: int = 0,
    ):
        try:
            try:
                ok, first_frame = capture.read()
            except cv2.error as error:
                raise VideoError(
                    f"{origin}: the first frame cannot be decoded ({error}); the file is unreadable or corrupt"
                ) from error
            if not ok or first_frame is None:
                if is_camera:
                    raise VideoError(f"{origin} opened but delivered no frame")
                raise VideoError(f"{origin}: the first frame cannot be decoded; the file is unreadable or corrupt")
            first_frame = _check_frame(first_frame, 0, None, origin)
            first_timestamp = _timestamp(capture)
            frame_count = None
            if not is_camera:
                reported = capture.get(cv2.CAP_PROP_FRAME_COUNT)
                if math.isfinite(reported) and reported > 0:
                    frame_count = int(round(reported))
            info = VideoInfo(
                fps=_usable_fps(capture.get(cv2.CAP_PROP_FPS), fallback_fps),
                width=int(first_frame.shape[1]),
                height=int(first_frame.shape[0]),
                frame_count=frame_count,
            )
        except BaseException:
            capture.release()
            raise
        super().__init__(info, origin)
        self._frames: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=_decode_loop,
            args=(
                capture, first_frame, frame_count, is_camera, origin, self._frames, self._stop, first_timestamp, reopen, reconnects,
                0.5, info.fps,
            ),
            name=f"vidtrt-decode-{next(_thread_numbers)}",
            daemon=True,
        )
        self._thread.start()
        self._finalizer = weakref.finalize(self, _stop_decoder, self._stop, self._frames, self._thread)

    @property
    def thread(self) -> threading.Thread:
        """The decode thread (exposed so callers and tests can check it has ended)."""
        return self._thread

    def close(self) -> None:
        self._closed = True
        self._finalizer()

    def __next__(self) -> tuple[int, np.ndarray]:
        while True:
            if self._closed:
                raise StopIteration
            try:
                item = self._frames.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if self._thread.is_alive() or not self._frames.empty():
                    continue
                self.close()
                raise VideoError(f"{self._origin}: the decode thread ended without reporting why") from None
            if isinstance(item, tuple):
                index, frame, timestamp = item
                self.last_meta = FrameMeta(None, timestamp)
                return index, frame
            self.close()
            if isinstance(item, _Failed):
                error = item.error
                if isinstance(error, VideoError) or not isinstance(error, Exception):
                    raise error
                raise VideoError(f"{self._origin}: decoding failed: {error}") from error
            raise StopIteration


class _IterableSource(FrameSource):
    """Frames from a Python iterable, validated one by one on the consumer's thread."""

    def __init__(self, frames: Iterable, fps: float):
        origin = "frame iterable"
        self._iterator = iter(frames)
        try:
            first_frame = next(self._iterator)
        except StopIteration:
            raise VideoError(f"{origin}: yielded no frames") from None
        try:
            first_frame = _check_frame(first_frame, 0, None, origin)
        except VideoError:
            close = getattr(self._iterator, "close", None)
            if callable(close):
                close()
            raise
        frame_count = None
        if isinstance(frames, Sized):
            frame_count = len(frames)
        super().__init__(
            VideoInfo(
                fps=fps,
                width=int(first_frame.shape[1]),
                height=int(first_frame.shape[0]),
                frame_count=frame_count,
            ),
            origin,
        )
        self._shape = first_frame.shape
        self._pending: np.ndarray | None = first_frame
        self._next_index = 0

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pending = None
        # A generator may hold resources in its own try/finally.
        close = getattr(self._iterator, "close", None)
        if callable(close):
            close()

    def __next__(self) -> tuple[int, np.ndarray]:
        if self._closed:
            raise StopIteration
        index = self._next_index
        if self._pending is not None:
            frame, self._pending = self._pending, None
        else:
            try:
                frame = next(self._iterator)
            except StopIteration:
                self.close()
                raise
            try:
                frame = _check_frame(frame, index, self._shape, self._origin)
            except VideoError:
                self.close()
                raise
        self._next_index = index + 1
        self.last_meta = FrameMeta(None, index / self._info.fps)
        return index, frame


IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".jp2", ".sr", ".ras"})


def natural_key(text: str):
    """Sort key under which frame2 < frame10 (digit runs compare as numbers)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part.lower()) for part in re.split(r"(\d+)", text) if part]


def image_sequence(source: str | os.PathLike) -> list[Path] | None:
    """The image files a folder, printf-style pattern (``frames/%06d.JPEG``) or
    glob (``frames/*.png``) names, in natural order; None when ``source`` is
    none of these (a video file or a stream). A pattern runs from its first
    existing number among 0..4 (as FFmpeg's image2 demuxer) to the last of the
    unbroken run."""
    text = os.fspath(source)
    path = Path(text)
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise VideoError(f"folder {path} holds no images (looked for {', '.join(sorted({'.jpg', '.jpeg', '.png', '.bmp', '.tif', '.webp'}))}, ...)")
        return sorted(files, key=lambda p: natural_key(p.name))
    if re.search(r"%0?\d*d", text):
        try:
            text % 0
        except (TypeError, ValueError):
            raise VideoError(f"{text!r} is not a printf-style frame pattern (one %d or %0Nd)") from None
        start = next((n for n in range(5) if Path(text % n).is_file()), None)
        if start is None:
            raise VideoError(f"no file matches the pattern {text!r} (looked for numbers 0..4 to start from)")
        files = []
        n = start
        while Path(text % n).is_file():
            files.append(Path(text % n))
            n += 1
        return files
    if any(c in text for c in "*?["):
        files = [Path(p) for p in glob.glob(text) if Path(p).is_file()]
        if not files:
            raise VideoError(f"no file matches the glob {text!r}")
        return sorted(files, key=lambda p: natural_key(str(p)))
    return None


class _ImageSequenceSource(FrameSource):
    """Frames from image files, read on the consumer's thread (cv2.imread, EXIF
    orientation applied). Each frame's name is its file name. Images of
    another size than the first are an error unless ``allow_mixed_sizes``,
    which resizes them to the first one's size."""

    def __init__(self, files: list[Path], origin: str, fps: float, allow_mixed_sizes: bool = False):
        self._files = files
        self._allow_mixed = allow_mixed_sizes
        first = self._read(0, None)
        super().__init__(VideoInfo(fps=fps, width=int(first.shape[1]), height=int(first.shape[0]), frame_count=len(files)), origin)
        self._shape = first.shape
        self._pending: np.ndarray | None = first
        self._next_index = 0

    def _read(self, index: int, shape) -> np.ndarray:
        path = self._files[index]
        try:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        except cv2.error:
            image = None
        if image is None:
            raise VideoError(f"image {path} (frame {index}) cannot be read: unreadable, corrupt or not an image")
        if shape is not None and image.shape != shape:
            if not self._allow_mixed:
                raise VideoError(
                    f"image {path} (frame {index}) is {image.shape[1]}x{image.shape[0]}, the first image "
                    f"{shape[1]}x{shape[0]}; a video keeps one size (--allow-mixed-sizes resizes to the first)"
                )
            image = cv2.resize(image, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(image)

    def close(self) -> None:
        self._closed = True
        self._pending = None

    def __next__(self) -> tuple[int, np.ndarray]:
        if self._closed or self._next_index >= len(self._files):
            self._closed = True
            raise StopIteration
        index = self._next_index
        if self._pending is not None:
            frame, self._pending = self._pending, None
        else:
            try:
                frame = self._read(index, self._shape)
            except VideoError:
                self.close()
                raise
        self._next_index = index + 1
        self.last_meta = FrameMeta(self._files[index].name, index / self._info.fps)
        return index, frame


def _open_capture(target, origin: str, is_camera: bool) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(target)
    if capture.isOpened():
        return capture
    capture.release()
    if is_camera:
        raise VideoError(f"cannot open {origin}: no such camera, or it is in use")
    raise VideoError(f"{origin}: OpenCV cannot open it; the file is unreadable or corrupt, or not a video")


class RandomAccessVideo:
    """Frames of a video file or an image sequence by index, for schedules
    that read frames out of order (MEGA offline's global pool). A video reads
    on from the last frame when the next one is asked for and seeks
    otherwise; the frames equal the sequential decoder's (the same OpenCV
    capture, orientation applied). An image sequence (folder, pattern, glob)
    reads the index's file, as the sequential source does."""

    def __init__(self, path: str | os.PathLike, allow_mixed_sizes: bool = False):
        self.path = Path(path)
        files = image_sequence(path)
        self._sequence = None
        self._capture = None
        if files is not None:
            self._sequence = _ImageSequenceSource(files, f"image sequence {self.path}", 25.0, allow_mixed_sizes)
            self.frame_count = len(files)
            return
        self._capture = _open_capture(str(self.path), f"video file {self.path}", is_camera=False)
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if count > 0 else None
        self._position = 0  # the index the next read() returns

    def __call__(self, index: int) -> np.ndarray:
        if self._sequence is not None:
            if not 0 <= index < self.frame_count:
                raise VideoError(f"image sequence {self.path}: no frame {index} (it has {self.frame_count})")
            return self._sequence._read(index, self._sequence._shape)
        if self.frame_count is not None and not 0 <= index < self.frame_count:
            raise VideoError(f"video file {self.path}: no frame {index} (it has {self.frame_count})")
        if index != self._position:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = self._capture.read()
        if not ok or frame is None:
            self._position = -1
            raise VideoError(f"video file {self.path}: cannot read frame {index}")
        self._position = index + 1
        return frame

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
        if self._sequence is not None:
            self._sequence.close()

    def __enter__(self) -> "RandomAccessVideo":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


STREAM_RECONNECTS = 3


def open_video(
    source, queue_size: int = 8, *, fps: float | None = None, allow_mixed_sizes: bool = False, reconnects: int = STREAM_RECONNECTS
) -> FrameSource:
    """Open a video file (path), a folder of images, a printf-style pattern or
    a glob of image files, a network stream (``rtsp://``, ``http://``,
    ``udp://`` ...), a camera (int index) or an iterable of BGR uint8 frames.

    queue_size bounds the number of decoded frames waiting for the consumer.
    fps is the frame rate to report when the source reports none (image
    sequences and iterables never do, some cameras and streams don't);
    DEFAULT_FPS when not given. allow_mixed_sizes: image sequences resize
    images of another size to the first one's instead of failing. reconnects:
    how many times a network stream that drops is reopened (with backoff
    0.5, 1, 2 s ...) before the source ends with a VideoError.
    """
    if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
        raise ValueError(f"queue_size must be a positive integer, got {queue_size!r}")
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    fallback_fps = DEFAULT_FPS if fps is None else float(fps)

    if isinstance(source, bool):
        raise TypeError("source must be a path, a camera index or an iterable of frames, not a bool")
    if isinstance(source, (int, np.integer)):
        index = int(source)
        capture = _open_capture(index, f"camera {index}", is_camera=True)
        return _CaptureSource(
            capture, f"camera {index}", is_camera=True, queue_size=queue_size, fallback_fps=fallback_fps
        )
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if isinstance(text, bytes):
            text = os.fsdecode(text)
        if "://" in text:
            # A network stream: nothing on disk to check first.
            origin = f"stream {text}"
            capture = _open_capture(text, origin, is_camera=False)
            return _CaptureSource(
                capture, origin, is_camera=False, queue_size=queue_size, fallback_fps=fallback_fps,
                reopen=lambda: _open_capture(text, origin, is_camera=False), reconnects=reconnects,
            )
        files = image_sequence(text)
        if files is not None:
            origin = f"images {text}"
            return _ImageSequenceSource(files, origin, fallback_fps, allow_mixed_sizes)
        path = Path(text)
        if not path.exists():
            raise VideoError(f"video file not found: {path}")
        if not path.is_file():
            raise VideoError(f"not a video file: {path}")
        capture = _open_capture(str(path), f"video file {path}", is_camera=False)
        return _CaptureSource(
            capture, f"video file {path}", is_camera=False, queue_size=queue_size, fallback_fps=fallback_fps
        )
    if isinstance(source, np.ndarray) and source.ndim != 4:
        raise VideoError(
            f"an array source must be [N, H, W, 3] (a stack of frames), got shape {source.shape}; "
            "wrap a single frame in a list"
        )
    if isinstance(source, (bytes, bytearray, memoryview)):
        raise TypeError("source must be a path, a camera index or an iterable of frames, not raw bytes")
    if isinstance(source, Iterable):
        return _IterableSource(source, fallback_fps)
    raise TypeError(
        f"source must be a path, a camera index or an iterable of frames, got {type(source).__name__}"
    )
