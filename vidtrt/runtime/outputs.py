"""Detections out: the per-frame record and the writers that store it.

:class:`Detections` holds one frame's detections in original-image coordinates,
and optionally what produced them (the pipeline stage, the image size, the
class names). Four writers store them, each a context manager with
``write(frame_index, detections, frame=None)`` and an optional ``min_score``:
detections scoring below it are neither written nor drawn.

- :class:`JsonLinesWriter` — one JSON object per frame, every frame (also those
  without detections)::

      {"frame": 0, "source": "clip.mp4", "width": 640, "height": 360, "stage": "key",
       "detections": [{"box": [x1, y1, x2, y2], "score": 0.93, "label": 4, "class": "bird"}]}

  (on one line). source is the video's path, a camera index (an integer) or
  "frames" (in-memory frames), null when the writer was not told; width and
  height are the original image's, stage the pipeline stage that produced the
  frame ("key", "nonkey", "batch", "head", ...), null when unknown. box is
  rounded to 1/1000 px and score to 6 decimals; label is the 0-based class
  index (background excluded), class its name.
- :class:`AnnotatedVideoWriter` — the frames with boxes and "class score" tags
  drawn, one stable colour per class, mp4v in whatever container the suffix
  names (.mp4 normally); the size is taken from the first frame.
- :class:`ImageNetVidWriter` — the ILSVRC2015 VID devkit result format, one line
  per detection: ``<frame_index> <ILSVRC2015_VID_ID> <confidence> <xmin> <ymin> <xmax> <ymax>``.
  See the class for the numbering.
- :class:`CocoResultsWriter` — the COCO results format (what pycocotools'
  ``COCO.loadRes`` reads): one JSON list of
  ``{"image_id": frame, "category_id": label + 1, "bbox": [x, y, w, h], "score": s}``.

Frames must be written in strictly increasing frame order (gaps allowed): every
consumer of these files reads them in order, and a pipeline that emits frames
out of order is a bug worth failing loudly on.

Every writer writes to a hidden temporary file next to the target
(``.<stem>.partial-<random><suffix>``; the suffix is kept because OpenCV picks
the container from it) and renames it onto the target only when closed cleanly,
after an fsync, so an existing file at the target is replaced atomically. An
exception inside the ``with`` block, ``abort()``, an error while writing, or a
writer dropped without being closed deletes the temporary file: a file at the
target path is always complete.
"""

from __future__ import annotations

import abc
import colorsys
import dataclasses
import json
import math
import numbers
import operator
import os
import secrets
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

__all__ = [
    "AnnotatedVideoWriter",
    "CocoResultsWriter",
    "DetectionWriter",
    "Detections",
    "ImageNetVidWriter",
    "JsonLinesWriter",
    "class_colour",
    "draw_detections",
    "temporary_sibling",
]


def _as_frame_index(value) -> int:
    try:
        index = operator.index(value)
    except TypeError:
        raise TypeError(f"frame_index must be an integer, got {type(value).__name__}") from None
    if index < 0:
        raise ValueError(f"frame_index must be >= 0, got {index}")
    return index


@dataclass(frozen=True, eq=False)
class Detections:
    """One frame's detections, in original-image pixel coordinates.

    boxes float32 [K, 4] (x1, y1, x2, y2); scores float32 [K]; labels int64 [K],
    the 0-based class index with background excluded (class_names[label]).
    Inputs are converted to these dtypes; shapes, finiteness and label signs are
    checked so that no writer has to.

    What produced them, when known (keyword-only, None otherwise): ``stage``,
    the pipeline stage that detected the frame ("key", "nonkey", "batch",
    "head", ...); ``image_hw``, the original image's (height, width);
    ``class_names``, every class's name by label (then ``names`` gives each
    detection's); ``timestamp``, the frame's presentation time in seconds;
    ``file``, the image file the frame came from (image sequences).
    """

    boxes: np.ndarray = field(repr=False)
    scores: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    frame_index: int
    stage: str | None = field(default=None, kw_only=True)
    image_hw: tuple[int, int] | None = field(default=None, kw_only=True)
    class_names: tuple[str, ...] | None = field(default=None, kw_only=True, repr=False)
    timestamp: float | None = field(default=None, kw_only=True)
    file: str | None = field(default=None, kw_only=True)

    def __post_init__(self):
        boxes = np.asarray(self.boxes, dtype=np.float32)
        if boxes.size == 0 and boxes.ndim != 2:
            boxes = boxes.reshape(0, 4)
        scores = np.asarray(self.scores, dtype=np.float32)
        labels = _as_labels(self.labels)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"boxes must have shape [K, 4], got {boxes.shape}")
        if scores.ndim != 1:
            raise ValueError(f"scores must have shape [K], got {scores.shape}")
        if not (len(boxes) == len(scores) == len(labels)):
            raise ValueError(
                f"boxes, scores and labels disagree on the number of detections: "
                f"{len(boxes)}, {len(scores)}, {len(labels)}"
            )
        if not np.isfinite(boxes).all():
            raise ValueError("boxes contain NaN or infinity")
        if not np.isfinite(scores).all():
            raise ValueError("scores contain NaN or infinity")
        if (labels < 0).any():
            raise ValueError(f"labels must be >= 0 (0-based, background excluded), got {int(labels.min())}")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "frame_index", _as_frame_index(self.frame_index))
        if self.stage is not None and not isinstance(self.stage, str):
            raise TypeError(f"stage must be a string or None, got {type(self.stage).__name__}")
        if self.image_hw is not None:
            object.__setattr__(self, "image_hw", _as_image_hw(self.image_hw))
        if self.class_names is not None:
            names = _check_class_names(self.class_names)
            object.__setattr__(self, "class_names", names)
            if len(labels) and int(labels.max()) >= len(names):
                raise ValueError(f"label {int(labels.max())} has no name ({len(names)} class names)")

    def __len__(self) -> int:
        return len(self.scores)

    def __repr__(self) -> str:
        stage = f", stage={self.stage!r}" if self.stage is not None else ""
        return f"Detections(frame_index={self.frame_index}, count={len(self)}{stage})"

    @property
    def names(self) -> tuple[str, ...]:
        """Each detection's class name (needs ``class_names``)."""
        if self.class_names is None:
            raise ValueError("these Detections were made without class_names; look labels up in the bundle's")
        return tuple(self.class_names[int(label)] for label in self.labels)

    @classmethod
    def empty(cls, frame_index: int, **about) -> Detections:
        """No detections; ``about``: stage, image_hw, class_names."""
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), frame_index, **about)

    @classmethod
    def from_padded(cls, frame_index: int, boxes, scores, labels, *, valid=None, count=None, **about) -> Detections:
        """From fixed-size [N, ...] engine outputs, keeping the rows marked by
        ``valid`` (a [N] boolean or 0/1 mask) or the first ``count`` rows (an
        int or a one-element array). Exactly one of the two is required.
        ``about``: stage, image_hw, class_names, timestamp, file."""
        if (valid is None) == (count is None):
            raise ValueError("give exactly one of valid (a [N] mask) or count (number of leading valid rows)")
        boxes = np.asarray(boxes)
        scores = np.asarray(scores)
        labels = np.asarray(labels)
        capacity = len(scores) if scores.ndim == 1 else -1
        if capacity < 0 or boxes.shape != (capacity, 4) or labels.shape != (capacity,):
            raise ValueError(
                f"padded outputs must be boxes [N, 4], scores [N], labels [N]; got {boxes.shape}, "
                f"{scores.shape}, {labels.shape}"
            )
        if valid is not None:
            mask = np.asarray(valid)
            if mask.shape != (capacity,):
                raise ValueError(f"valid must have shape [{capacity}], got {mask.shape}")
            if mask.dtype != np.bool_:
                if not np.isin(mask, (0, 1)).all():
                    raise ValueError("valid must be boolean or contain only 0 and 1")
                mask = mask.astype(bool)
            return cls(boxes[mask], scores[mask], labels[mask], frame_index, **about)
        count_array = np.asarray(count)
        if count_array.size != 1 or not np.issubdtype(count_array.dtype, np.integer):
            raise ValueError(f"count must be one integer, got {count!r}")
        n = int(count_array.reshape(-1)[0])
        if not 0 <= n <= capacity:
            raise ValueError(f"count must be in [0, {capacity}], got {n}")
        return cls(boxes[:n], scores[:n], labels[:n], frame_index, **about)

    def with_min_score(self, threshold: float) -> Detections:
        """The detections scoring at least ``threshold`` (self when that is all of them)."""
        keep = self.scores >= threshold
        if keep.all():
            return self
        return dataclasses.replace(self, boxes=self.boxes[keep], scores=self.scores[keep], labels=self.labels[keep])


def _as_image_hw(value) -> tuple[int, int]:
    try:
        height, width = (operator.index(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"image_hw must be two integers (height, width), got {value!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"image_hw must be positive, got {value!r}")
    return (height, width)


def _as_min_score(value) -> float | None:
    """A score threshold: None (keep every detection) or a finite number (NaN
    would silently drop everything)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError("min_score must be a number, not a bool")
    if not isinstance(value, numbers.Real):
        raise TypeError(f"min_score must be a number, got {value!r}")
    threshold = float(value)
    if not math.isfinite(threshold):
        raise ValueError(f"min_score must be a finite number, got {value!r}")
    return threshold


def _as_labels(values) -> np.ndarray:
    labels = np.asarray(values)
    if labels.size == 0:
        return np.zeros(0, np.int64)
    if labels.ndim != 1:
        raise ValueError(f"labels must have shape [K], got {labels.shape}")
    if np.issubdtype(labels.dtype, np.integer):
        return labels.astype(np.int64)
    if np.issubdtype(labels.dtype, np.floating) and np.isfinite(labels).all() and (labels == np.round(labels)).all():
        # Engines often return class indices as floats.
        return labels.astype(np.int64)
    raise ValueError(f"labels must be integers (class indices), got dtype {labels.dtype}")


def class_colour(label: int) -> tuple[int, int, int]:
    """A BGR colour for a class index: the same for a class in every run and
    video, and far from its neighbours' (golden-ratio steps around the hue circle)."""
    hue = (int(label) * 0.618033988749895) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.8, 0.95)
    return (int(blue * 255), int(green * 255), int(red * 255))


def temporary_sibling(path: Path) -> Path:
    """A fresh hidden path in path's directory that keeps path's suffix."""
    return path.with_name(f".{path.stem}.partial-{secrets.token_hex(4)}{path.suffix}")


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _check_class_names(class_names) -> tuple[str, ...]:
    if isinstance(class_names, str) or not isinstance(class_names, Sequence):
        raise TypeError("class_names must be a sequence of strings (index = 0-based label)")
    names = tuple(class_names)
    if not all(isinstance(name, str) for name in names):
        raise TypeError("class_names must contain only strings")
    return names


class DetectionWriter(abc.ABC):
    """Common behaviour: temporary file, ordered frames, score threshold,
    commit on clean close."""

    def __init__(self, path, *, min_score: float | None = None):
        self.min_score = _as_min_score(min_score)
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"output directory does not exist: {self.path.parent}")
        if self.path.is_dir():
            raise IsADirectoryError(f"output path is a directory: {self.path}")
        self.temporary_path = temporary_sibling(self.path)
        self._state = "open"
        self._last_frame_index: int | None = None
        self.frames_written = 0

    # Subclass hooks -----------------------------------------------------------
    def _check(self, frame_index: int, detections: Detections, frame) -> None:
        """Reject bad input before anything is written (the writer stays usable)."""

    @abc.abstractmethod
    def _write(self, frame_index: int, detections: Detections, frame) -> None:
        """Append one frame's output to the temporary file."""

    @abc.abstractmethod
    def _finish(self) -> None:
        """Flush and close the temporary file so it is complete on disk."""

    @abc.abstractmethod
    def _release(self) -> None:
        """Close handles without finishing; must not raise."""

    # Public API ---------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._state != "open"

    def write(self, frame_index: int, detections: Detections, frame: np.ndarray | None = None) -> None:
        if self._state != "open":
            raise ValueError(f"{type(self).__name__} for {self.path} is {self._state}; cannot write")
        frame_index = _as_frame_index(frame_index)
        if not isinstance(detections, Detections):
            raise TypeError(f"detections must be a Detections, got {type(detections).__name__}")
        if detections.frame_index != frame_index:
            raise ValueError(
                f"write() was given frame {frame_index} with the detections of frame {detections.frame_index}"
            )
        if self._last_frame_index is not None and frame_index <= self._last_frame_index:
            raise ValueError(
                f"frame {frame_index} written after frame {self._last_frame_index} to {self.path}: "
                "frames must be written in increasing order"
            )
        self._check(frame_index, detections, frame)
        if self.min_score is not None:
            detections = detections.with_min_score(self.min_score)
        try:
            self._write(frame_index, detections, frame)
        except BaseException:
            # Part of this frame may be on disk already: the output is no longer trustworthy.
            self.abort()
            raise
        self._last_frame_index = frame_index
        self.frames_written += 1

    def close(self) -> None:
        """Finish the output and move it into place. No effect once closed or aborted."""
        if self._state != "open":
            return
        try:
            self._finish()
            _fsync_file(self.temporary_path)
            os.replace(self.temporary_path, self.path)
        except BaseException:
            self.abort()
            raise
        self._state = "closed"

    def abort(self) -> None:
        """Discard the output: the temporary file is deleted, the target left untouched."""
        if self._state == "closed":
            return
        self._state = "aborted"
        self._release()
        self.temporary_path.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self):
        if getattr(self, "_state", None) == "open":
            warnings.warn(
                f"{type(self).__name__} for {self.path} was neither closed nor aborted; output discarded",
                ResourceWarning,
                stacklevel=2,
            )
            self.abort()


class _TextWriter(DetectionWriter):
    def __init__(self, path, *, min_score: float | None = None):
        super().__init__(path, min_score=min_score)
        try:
            # "x": never clobber an existing file, however unlikely the name clash.
            self._file = open(self.temporary_path, "x", encoding="utf-8", newline="\n")
        except BaseException:
            self._state = "aborted"
            raise

    def _finish(self) -> None:
        self._file.flush()
        self._file.close()

    def _release(self) -> None:
        file = getattr(self, "_file", None)
        if file is not None and not file.closed:
            file.close()


class JsonLinesWriter(_TextWriter):
    """One JSON object per frame: {"frame", "source", "width", "height", "stage",
    "detections": [{"box", "score", "label", "class"}]} (see the module docstring),
    plus "time" (seconds) and "file" (the image file) when the frame has them.

    ``source`` names the video in every record: a path (str or PathLike,
    written as a string), a camera index (int), "frames", or None (null). The
    image size comes from ``detections.image_hw``, else from the frame when
    one is given, else it is null; the stage from ``detections.stage``.
    ``live``: every record is flushed to the (temporary) file as it is
    written, so a long-running stream's results can be read while it runs.
    """

    def __init__(self, path, class_names: Sequence[str], *, source=None, min_score: float | None = None, live: bool = False):
        self.class_names = _check_class_names(class_names)
        self.source = _as_source(source)
        self.live = live
        super().__init__(path, min_score=min_score)

    def _check(self, frame_index, detections, frame) -> None:
        _check_labels(detections, self.class_names)

    def _write(self, frame_index, detections, frame) -> None:
        height = width = None
        if detections.image_hw is not None:
            height, width = detections.image_hw
        elif isinstance(frame, np.ndarray) and frame.ndim >= 2:
            height, width = int(frame.shape[0]), int(frame.shape[1])
        items = [
            {
                "box": [round(float(v), 3) for v in box],
                "score": round(float(score), 6),
                "label": int(label),
                "class": self.class_names[int(label)],
            }
            for box, score, label in zip(detections.boxes, detections.scores, detections.labels)
        ]
        record = {
            "frame": frame_index,
            "source": self.source,
            "width": width,
            "height": height,
            "stage": detections.stage,
        }
        if detections.timestamp is not None:
            record["time"] = round(float(detections.timestamp), 6)
        if detections.file is not None:
            record["file"] = detections.file
        record["detections"] = items
        self._file.write(json.dumps(record) + "\n")
        if self.live:
            self._file.flush()


def _as_source(source):
    if source is None or isinstance(source, str):
        return source
    if isinstance(source, os.PathLike):
        return os.fsdecode(os.fspath(source))
    if isinstance(source, (int, np.integer)) and not isinstance(source, bool):
        return int(source)
    raise TypeError(f"source must be a path, a camera index, a string or None, got {type(source).__name__}")


class ImageNetVidWriter(_TextWriter):
    """ILSVRC2015 VID devkit results: ``<frame_index> <class_id> <confidence> <xmin> <ymin> <xmax> <ymax>``.

    Per the devkit (readme §4.4 and evaluation/eval_vid_detection.m):

    - frame_index is the frame's index in ImageSets/VID/val.txt (or test.txt),
      whose lines are ``<snippet>/<%06d frame> <index>`` with index counting
      from 1 over the whole set. Written as ``video_frame_offset + frame_index + 1``,
      so ``video_frame_offset`` is the number of frames listed before this
      snippet (val.txt index of its frame 0, minus 1); 0 for the first snippet
      or a lone video.
    - class_id is ILSVRC2015_VID_ID, 1..30 in the devkit's synset order: our
      0-based label + 1 (detectors trained on VID use that order, background
      being their class 0).
    - boxes are written as they are, in original-image pixels, as the MXNet
      FGFA/DFF reference implementations do ("{:d} {:d} {:.4f} {:.2f} ..."); the
      devkit compares them with the XML boxes using inclusive (+1) widths.

    Confidence gets 6 decimals rather than the reference's 4 so that AP ranking
    is not coarsened; the devkit reads it with %f either way. Lines are written
    in frame order; the devkit sorts by frame index itself. Results of several
    snippets go into one file by concatenating the per-snippet files.
    """

    def __init__(self, path, video_frame_offset: int = 0, *, min_score: float | None = None):
        self.video_frame_offset = _as_frame_index(video_frame_offset)
        super().__init__(path, min_score=min_score)

    def _write(self, frame_index, detections, frame) -> None:
        frame_id = self.video_frame_offset + frame_index + 1
        lines = [
            f"{frame_id} {int(label) + 1} {float(score):.6f} "
            f"{float(box[0]):.2f} {float(box[1]):.2f} {float(box[2]):.2f} {float(box[3]):.2f}\n"
            for box, score, label in zip(detections.boxes, detections.scores, detections.labels)
        ]
        self._file.write("".join(lines))


class CocoResultsWriter(_TextWriter):
    """COCO detection results: one JSON list of
    ``{"image_id": frame_index, "category_id": label + 1, "bbox": [x, y, w, h], "score": s}``.

    image_id is the frame index; category_id is the 0-based label + 1 (COCO
    category ids start at 1, and detectors trained on VID number their classes
    so, background being 0); bbox is (left, top, width, height) in original
    pixels, rounded to 1/1000 px, score to 6 decimals. One entry per line, so
    the file can also be read line by line. Frames without detections add
    nothing.
    """

    def __init__(self, path, *, min_score: float | None = None):
        super().__init__(path, min_score=min_score)
        self._entries = 0
        self._file.write("[")

    def _write(self, frame_index, detections, frame) -> None:
        parts = []
        for box, score, label in zip(detections.boxes, detections.scores, detections.labels):
            x1, y1, x2, y2 = (float(v) for v in box)
            entry = {
                "image_id": frame_index,
                "category_id": int(label) + 1,
                "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                "score": round(float(score), 6),
            }
            separator = ",\n" if self._entries + len(parts) else "\n"
            parts.append(separator + json.dumps(entry))
        self._file.write("".join(parts))
        self._entries += len(parts)

    def _finish(self) -> None:
        self._file.write("\n]\n" if self._entries else "]\n")
        super()._finish()


def _check_labels(detections: Detections, class_names: tuple[str, ...]) -> None:
    if len(detections) and int(detections.labels.max()) >= len(class_names):
        raise ValueError(
            f"frame {detections.frame_index}: label {int(detections.labels.max())} has no name "
            f"({len(class_names)} class names)"
        )


class AnnotatedVideoWriter(DetectionWriter):
    """The frames with their detections drawn, encoded with mp4v.

    Detections scoring below min_score (when given) are not drawn. The frame passed to
    write() is not modified. Odd frame sizes get one black row/column at the
    bottom/right, as mp4v needs even sizes.
    """

    fourcc = "mp4v"

    def __init__(self, path, fps: float, class_names: Sequence[str], *, min_score: float | None = None):
        try:
            fps_value = float(fps)
        except (TypeError, ValueError):
            fps_value = math.nan
        if not (math.isfinite(fps_value) and fps_value > 0):
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        self.fps = fps_value
        self.class_names = _check_class_names(class_names)
        super().__init__(path, min_score=min_score)
        self._video: cv2.VideoWriter | None = None
        self._frame_shape: tuple[int, ...] | None = None

    def _check(self, frame_index, detections, frame) -> None:
        if frame is None:
            raise ValueError(f"{type(self).__name__}.write() needs the frame to draw on (frame {frame_index})")
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            described = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
            raise ValueError(f"frame {frame_index} must be a uint8 BGR array (H, W, 3), got {described}")
        if self._frame_shape is not None and frame.shape != self._frame_shape:
            raise ValueError(
                f"frame {frame_index} has shape {frame.shape}, but the video was started with {self._frame_shape}"
            )
        _check_labels(detections, self.class_names)

    def _write(self, frame_index, detections, frame) -> None:
        height, width = frame.shape[:2]
        # FFmpeg's mpeg4 encoder would crop an odd size; a black row/column at
        # the bottom/right keeps every original pixel (and box) where it was.
        pad_bottom, pad_right = height % 2, width % 2
        if self._video is None:
            video = cv2.VideoWriter(
                str(self.temporary_path),
                cv2.VideoWriter_fourcc(*self.fourcc),
                self.fps,
                (width + pad_right, height + pad_bottom),
            )
            if not video.isOpened():
                video.release()
                raise RuntimeError(
                    f"OpenCV cannot open a {self.fourcc} video writer for {self.path} ({width}x{height})"
                )
            self._video = video
            self._frame_shape = frame.shape
        canvas = draw_detections(frame, detections, self.class_names)
        if pad_bottom or pad_right:
            canvas = cv2.copyMakeBorder(canvas, 0, pad_bottom, 0, pad_right, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        self._video.write(canvas)

    def _finish(self) -> None:
        if self._video is None:
            raise ValueError(f"no frames were written to {self.path}; a video needs at least one")
        self._video.release()
        self._video = None
        if not self.temporary_path.is_file() or self.temporary_path.stat().st_size == 0:
            raise RuntimeError(f"OpenCV produced no video data for {self.path}")

    def _release(self) -> None:
        video = getattr(self, "_video", None)
        if video is not None:
            video.release()
            self._video = None


def draw_detections(frame: np.ndarray, detections: Detections, class_names: Sequence[str]) -> np.ndarray:
    """A copy of frame with boxes and "class score" tags, lowest scores drawn first."""
    canvas = frame.copy()
    height, width = canvas.shape[:2]
    # Line and text size follow the frame size so tags stay legible on 4K
    # frames and don't swamp 240p ones.
    thickness = max(1, round(min(height, width) / 300))
    font_scale = max(0.35, min(height, width) / 900)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for k in np.argsort(detections.scores, kind="stable"):
        x1, y1, x2, y2 = (int(round(float(v))) for v in detections.boxes[k])
        label = int(detections.labels[k])
        colour = class_colour(label)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_AA)
        text = f"{class_names[label]} {float(detections.scores[k]):.2f}"
        (text_w, text_h), baseline = cv2.getTextSize(text, font, font_scale, 1)
        tag_h = text_h + baseline + 2
        # Above the box when there is room, otherwise just inside its top edge.
        top = y1 - tag_h if y1 - tag_h >= 0 else max(0, y1)
        left = min(max(0, x1), max(0, width - text_w - 2))
        cv2.rectangle(canvas, (left, top), (left + text_w + 2, top + tag_h), colour, cv2.FILLED)
        luminance = 0.114 * colour[0] + 0.587 * colour[1] + 0.299 * colour[2]
        text_colour = (0, 0, 0) if luminance > 128 else (255, 255, 255)
        cv2.putText(canvas, text, (left + 1, top + text_h + 1), font, font_scale, text_colour, 1, cv2.LINE_AA)
    return canvas
