"""A small synthetic video for the demo and the tests: moving shapes over texture.

Coloured rectangles and ellipses move with constant velocities over a static
textured background and bounce off the borders. The texture (smooth blobs plus
fine grain) gives codecs and detectors something realistic to chew on, so a
decode round trip is a meaningful check rather than a comparison of flat
colours. Everything follows from ``seed``; no wall-clock or global state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .outputs import temporary_sibling

__all__ = ["SHAPE_CLASSES", "moving_shapes_clip", "moving_shapes_ground_truth", "write_clip"]

# Class names of the shapes, indexed by the labels of moving_shapes_ground_truth.
SHAPE_CLASSES = ("rectangle", "ellipse")

_NUM_SHAPES = 4
_MIN_SIDE = 16


@dataclass
class _Shape:
    kind: int  # index into SHAPE_CLASSES
    colour: tuple[int, int, int]
    size: np.ndarray  # (w, h) px
    position: np.ndarray  # top-left (x, y) px, float
    velocity: np.ndarray  # px per frame


def _check_size(num_frames: int, height: int, width: int) -> None:
    for name, value, low in (("num_frames", num_frames, 1), ("height", height, _MIN_SIDE), ("width", width, _MIN_SIDE)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    grid = (max(2, height // 40), max(2, width // 40))
    # Muted blobs: grey levels with a mild tint, so the shapes' saturated
    # colours stand out as they would against a natural scene.
    coarse = rng.uniform(60, 190, size=(*grid, 1)) + rng.uniform(-25, 25, size=(*grid, 3))
    blobs = cv2.resize(coarse.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    grain = rng.normal(0.0, 4.0, size=(height, width, 3)).astype(np.float32)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ripples = 8.0 * np.sin((xs + 0.5 * ys) * (2 * np.pi / 23.0))[:, :, None]
    return np.clip(blobs + grain + ripples, 0, 255).astype(np.uint8)


def _make_shapes(rng: np.random.Generator, height: int, width: int) -> list[_Shape]:
    shapes = []
    for i in range(_NUM_SHAPES):
        size = np.array(
            [rng.uniform(0.12, 0.28) * width, rng.uniform(0.12, 0.28) * height], dtype=np.float64
        ).round().clip(4, None)
        position = np.array([rng.uniform(0, width - size[0]), rng.uniform(0, height - size[1])])
        angle = rng.uniform(0, 2 * np.pi)
        speed = rng.uniform(0.006, 0.02) * max(height, width)
        # Saturated colours, distinct from the mid-grey texture.
        hue = int((i * 180 / _NUM_SHAPES + rng.uniform(0, 30)) % 180)
        colour = cv2.cvtColor(np.array([[[hue, 230, 230]]], np.uint8), cv2.COLOR_HSV2BGR)[0, 0]
        shapes.append(
            _Shape(
                kind=i % len(SHAPE_CLASSES),
                colour=tuple(int(c) for c in colour),
                size=size,
                position=position,
                velocity=speed * np.array([np.cos(angle), np.sin(angle)]),
            )
        )
    return shapes


def _step(shape: _Shape, height: int, width: int) -> None:
    limits = np.array([width, height], dtype=np.float64) - shape.size
    shape.position += shape.velocity
    for axis in range(2):
        # Reflect off the border rather than clamp, so speed is conserved.
        if shape.position[axis] < 0:
            shape.position[axis] = -shape.position[axis]
            shape.velocity[axis] = -shape.velocity[axis]
        elif shape.position[axis] > limits[axis]:
            shape.position[axis] = 2 * limits[axis] - shape.position[axis]
            shape.velocity[axis] = -shape.velocity[axis]
        shape.position[axis] = min(max(shape.position[axis], 0.0), limits[axis])


def _simulate(num_frames: int, height: int, width: int, seed: int):
    _check_size(num_frames, height, width)
    rng = np.random.default_rng(seed)
    background = _background(rng, height, width)
    shapes = _make_shapes(rng, height, width)
    frames, truth = [], []
    for _ in range(num_frames):
        frame = background.copy()
        boxes = np.zeros((len(shapes), 4), np.float32)
        labels = np.zeros(len(shapes), np.int64)
        for k, shape in enumerate(shapes):
            x1, y1 = (int(round(v)) for v in shape.position)
            w, h = (int(v) for v in shape.size)
            outline = tuple(c // 2 for c in shape.colour)
            if SHAPE_CLASSES[shape.kind] == "rectangle":
                cv2.rectangle(frame, (x1, y1), (x1 + w - 1, y1 + h - 1), shape.colour, cv2.FILLED)
                cv2.rectangle(frame, (x1, y1), (x1 + w - 1, y1 + h - 1), outline, 2)
            else:
                centre = (x1 + w // 2, y1 + h // 2)
                axes = (w // 2, h // 2)
                cv2.ellipse(frame, centre, axes, 0, 0, 360, shape.colour, cv2.FILLED)
                cv2.ellipse(frame, centre, axes, 0, 0, 360, outline, 2)
            boxes[k] = (x1, y1, x1 + w, y1 + h)
            labels[k] = shape.kind
        frames.append(frame)
        truth.append((boxes, labels))
        for shape in shapes:
            _step(shape, height, width)
    return frames, truth


def moving_shapes_clip(num_frames: int = 48, height: int = 240, width: int = 320, seed: int = 0) -> list[np.ndarray]:
    """num_frames BGR uint8 frames (height × width × 3), the same for the same arguments."""
    return _simulate(num_frames, height, width, seed)[0]


def moving_shapes_ground_truth(
    num_frames: int = 48, height: int = 240, width: int = 320, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per frame of the matching clip: (boxes float32 [K, 4] x1, y1, x2, y2 in
    pixels, labels int64 [K] indexing SHAPE_CLASSES). Shapes drawn later cover
    earlier ones; the boxes are the full shapes regardless."""
    return _simulate(num_frames, height, width, seed)[1]


def write_clip(frames, path, fps: float = 25) -> Path:
    """Encode frames (BGR uint8, one size) to path with mp4v; the file appears only when complete."""
    frames = list(frames)
    if not frames:
        raise ValueError("write_clip needs at least one frame")
    first = frames[0]
    for index, frame in enumerate(frames):
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            described = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
            raise ValueError(f"frame {index} must be a uint8 BGR array (H, W, 3), got {described}")
        if frame.shape != first.shape:
            raise ValueError(f"frame {index} has shape {frame.shape}, frame 0 has {first.shape}")
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    height, width = first.shape[:2]
    if height % 2 or width % 2:
        # FFmpeg's mpeg4 encoder silently crops odd sizes to even ones.
        raise ValueError(f"mp4v needs an even width and height, got {width}x{height}")
    target = Path(path)
    if not target.parent.is_dir():
        raise FileNotFoundError(f"output directory does not exist: {target.parent}")
    temporary = temporary_sibling(target)
    writer = cv2.VideoWriter(str(temporary), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
    try:
        if not writer.isOpened():
            raise RuntimeError(f"OpenCV cannot open an mp4v video writer for {target} ({width}x{height})")
        for frame in frames:
            writer.write(frame)
        writer.release()
        if not temporary.is_file() or temporary.stat().st_size == 0:
            raise RuntimeError(f"OpenCV produced no video data for {target}")
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        writer.release()
        temporary.unlink(missing_ok=True)
        raise
    return target
