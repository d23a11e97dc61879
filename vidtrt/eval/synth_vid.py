"""A labelled synthetic video set in the ImageNet VID devkit layout.

``write_synth_vid(out, ...)`` writes ``Data/VID/<split>/<snippet>/000000.JPEG
...``, ``Annotations/VID/<split>/<snippet>/000000.xml ...`` and
``ImageSets/VID/<split>.txt``, so ``vidtrt eval`` (and anything that reads
ImageNet VID) reads it as it is.

Each snippet is a textured background with a few tracks of textured shapes,
one shape per class (``SHAPES``; class i carries VID class id i + 1, so the
standard 30-class models train on it). Tracks get a speed from one of the
three motion bins (slow, medium, fast, by the FGFA motion IoU the speed
gives), enter and leave through the image borders, and pass in front of
each other (drawn in depth order; a box is annotated while at least
``MIN_VISIBLE`` of the shape shows, with ``occluded`` set when part is
hidden). Some stretches of frames are degraded by motion blur along the
motion or by defocus, the degradation temporal methods exist for. The
frame numbers of degraded frames are listed in ``degraded.json``.

Everything follows from the seed: the same seed writes the same bytes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..models.classes import IMAGENET_VID_CLASSES, IMAGENET_VID_SYNSETS

SHAPES = ("disc", "square", "triangle", "star", "ring", "cross", "diamond", "hexagon")
# Speed as a fraction of the object's size per frame: the mean IoU with itself
# shifted by 1..10 frames is about 1 − 11·v, so these land in slow (> 0.9),
# medium (0.7–0.9) and fast (< 0.7).
SPEEDS = {"slow": (0.001, 0.006), "medium": (0.012, 0.022), "fast": (0.04, 0.09)}
MIN_VISIBLE = 0.3


@dataclass(frozen=True)
class SynthConfig:
    videos: int = 8
    frames: int = 40
    width: int = 256
    height: int = 192
    classes: int = 5
    max_objects: int = 3
    min_size: float = 0.16  # object size range, as fractions of the frame's shorter side
    max_size: float = 0.32
    seed: int = 0
    split: str = "val"
    degraded_fraction: float = 0.25  # of a snippet's frames, in stretches of 3-6

    def __post_init__(self):
        if not 1 <= self.classes <= len(SHAPES):
            raise ValueError(f"classes must be in 1..{len(SHAPES)} (one shape each), got {self.classes}")
        for name in ("videos", "frames", "max_objects"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.min_size <= self.max_size <= 1.0:
            raise ValueError(f"object sizes must satisfy 0 < min <= max <= 1 (fractions of the shorter side), got {self.min_size}, {self.max_size}")
        if self.width < 64 or self.height < 64:
            raise ValueError(f"frames must be at least 64x64, got {self.width}x{self.height}")
        if not 0.0 <= self.degraded_fraction <= 1.0:
            raise ValueError(f"degraded_fraction must be in [0, 1], got {self.degraded_fraction}")


def _polygon(shape: str, size: float) -> np.ndarray | None:
    """Vertices around (0, 0) for polygonal shapes (None: drawn otherwise)."""
    r = size / 2
    if shape == "square":
        return np.array([[-r, -r], [r, -r], [r, r], [-r, r]])
    if shape == "triangle":
        return np.array([[0, -r], [r, r * 0.8], [-r, r * 0.8]])
    if shape == "diamond":
        return np.array([[0, -r], [r * 0.7, 0], [0, r], [-r * 0.7, 0]])
    if shape == "hexagon":
        return np.array([[r * math.cos(a), r * math.sin(a)] for a in np.linspace(0, 2 * math.pi, 7)[:-1]])
    if shape == "star":
        angles = np.linspace(-math.pi / 2, 1.5 * math.pi, 11)[:-1]
        return np.array([[(r if i % 2 == 0 else r * 0.45) * math.cos(a), (r if i % 2 == 0 else r * 0.45) * math.sin(a)] for i, a in enumerate(angles)])
    if shape == "cross":
        t = r * 0.35
        return np.array([[-t, -r], [t, -r], [t, -t], [r, -t], [r, t], [t, t], [t, r], [-t, r], [-t, t], [-r, t], [-r, -t], [-t, -t]])
    return None


def shape_mask(shape: str, size: float, cx: float, cy: float, height: int, width: int) -> np.ndarray:
    """The shape's pixels in an image of (height, width) (bool)."""
    mask = np.zeros((height, width), np.uint8)
    scale = 4  # sub-pixel positions via cv2's shift
    if shape in ("disc", "ring"):
        cv2.circle(mask, (round(cx * scale), round(cy * scale)), round(size / 2 * scale), 1, -1, cv2.LINE_8, 2)
        if shape == "ring":
            cv2.circle(mask, (round(cx * scale), round(cy * scale)), round(size / 4 * scale), 0, -1, cv2.LINE_8, 2)
    else:
        points = (_polygon(shape, size) + [cx, cy]) * scale
        cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1, cv2.LINE_8, 2)
    return mask.astype(bool)


def _texture(rng: np.random.Generator, height: int, width: int, base: np.ndarray) -> np.ndarray:
    """Stripes or checks in two tones around ``base`` (BGR), at a random angle and period."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle, period = rng.uniform(0, math.pi), rng.uniform(4, 10)
    u = xs * math.cos(angle) + ys * math.sin(angle)
    if rng.random() < 0.5:
        pattern = (np.floor(u / period) % 2).astype(np.float32)
    else:
        v = -xs * math.sin(angle) + ys * math.cos(angle)
        pattern = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    return np.clip(base[None, None, :] + (pattern[..., None] - 0.5) * 70, 0, 255)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    coarse = rng.uniform(40, 200, size=(max(2, height // 32), max(2, width // 32), 3)).astype(np.float32)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    noise = rng.normal(0, 6, size=(height, width, 3)).astype(np.float32)
    return np.clip(smooth + noise, 0, 255)


@dataclass
class _Track:
    track_id: int
    label: int
    size: float
    x: float
    y: float
    vx: float
    vy: float
    depth: float
    texture: np.ndarray  # full-frame texture, sampled under the mask
    speed: str


def _tracks(rng: np.random.Generator, cfg: SynthConfig) -> list[_Track]:
    tracks = []
    for track_id in range(int(rng.integers(1, cfg.max_objects + 1))):
        label = int(rng.integers(0, cfg.classes))
        size = float(rng.uniform(cfg.min_size, cfg.max_size) * min(cfg.width, cfg.height))
        speed = ("slow", "medium", "fast")[track_id % 3] if cfg.max_objects >= 3 else str(rng.choice(("slow", "medium", "fast")))
        v = float(rng.uniform(*SPEEDS[speed])) * size
        angle = float(rng.uniform(0, 2 * math.pi))
        vx, vy = v * math.cos(angle), v * math.sin(angle)
        # Fast tracks start outside and cross the frame (they enter and leave); others start inside.
        if speed == "fast":
            t_mid = rng.uniform(0.3, 0.7) * cfg.frames
            x = cfg.width / 2 + rng.uniform(-0.2, 0.2) * cfg.width - vx * t_mid
            y = cfg.height / 2 + rng.uniform(-0.2, 0.2) * cfg.height - vy * t_mid
        else:
            x = float(rng.uniform(size / 2, cfg.width - size / 2))
            y = float(rng.uniform(size / 2, cfg.height - size / 2))
        base = np.array(rng.uniform(30, 225, size=3), np.float32)
        tracks.append(_Track(track_id, label, size, x, y, vx, vy, float(rng.random()), _texture(rng, cfg.height, cfg.width, base), speed))
    return tracks


def _degradations(rng: np.random.Generator, cfg: SynthConfig) -> dict[int, str]:
    """frame → "motion_blur" | "defocus" for stretches covering about degraded_fraction of the frames."""
    out: dict[int, str] = {}
    target = round(cfg.degraded_fraction * cfg.frames)
    attempts = 0
    while len(out) < target and attempts < 100:
        attempts += 1
        length = int(rng.integers(3, 7))
        start = int(rng.integers(0, max(1, cfg.frames - length + 1)))
        kind = "motion_blur" if rng.random() < 0.5 else "defocus"
        for f in range(start, min(start + length, cfg.frames)):
            out.setdefault(f, kind)
    return out


def _degrade(image: np.ndarray, kind: str, tracks: list[_Track]) -> np.ndarray:
    if kind == "defocus":
        return cv2.GaussianBlur(image, (0, 0), sigmaX=3.0)
    # Motion blur along the fastest track's direction, over a length of its 3-frame motion (at least 7 px).
    fastest = max(tracks, key=lambda t: math.hypot(t.vx, t.vy))
    length = max(7, int(round(3 * math.hypot(fastest.vx, fastest.vy))) | 1)
    kernel = np.zeros((length, length), np.float32)
    angle = math.atan2(fastest.vy, fastest.vx)
    c = length // 2
    cv2.line(kernel, (round(c - c * math.cos(angle)), round(c - c * math.sin(angle))), (round(c + c * math.cos(angle)), round(c + c * math.sin(angle))), 1.0, 1)
    return cv2.filter2D(image, -1, kernel / kernel.sum())


def render_snippet(rng: np.random.Generator, cfg: SynthConfig):
    """Yields (frame BGR uint8, objects [(track_id, label, box, occluded)], degradation or None) per frame."""
    background = _background(rng, cfg.height, cfg.width)
    tracks = _tracks(rng, cfg)
    degraded = _degradations(rng, cfg)
    for f in range(cfg.frames):
        image = background.copy()
        masks = []
        for t in sorted(tracks, key=lambda t: t.depth):  # far to near
            mask = shape_mask(SHAPES[t.label], t.size, t.x + t.vx * f, t.y + t.vy * f, cfg.height, cfg.width)
            image[mask] = t.texture[mask]
            masks.append((t, mask))
        objects = []
        for i, (t, mask) in enumerate(masks):
            visible = mask.copy()
            for _, nearer in masks[i + 1:]:
                visible &= ~nearer
            total = _full_area(t)
            if total <= 0 or visible.sum() < MIN_VISIBLE * total:
                continue
            ys, xs = np.nonzero(mask)
            box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
            occluded = bool(visible.sum() < mask.sum()) or bool(mask.sum() < total * 0.98)
            objects.append((t.track_id, t.label, box, occluded))
        image = image.astype(np.uint8)
        kind = degraded.get(f)
        if kind:
            image = _degrade(image, kind, tracks)
        yield image, sorted(objects), kind


def _full_area(t: _Track) -> float:
    """The shape's area were it wholly inside the frame (drawn on a canvas that holds it)."""
    pad = int(t.size) + 4
    mask = shape_mask(SHAPES[t.label], t.size, pad, pad, 2 * pad, 2 * pad)
    return float(mask.sum())


def _annotation_xml(folder: str, frame: str, width: int, height: int, objects) -> str:
    lines = [
        "<annotation>", f"\t<folder>{folder}</folder>", f"\t<filename>{frame}</filename>", "\t<source><database>vidtrt synth-vid</database></source>",
        f"\t<size><width>{width}</width><height>{height}</height></size>",
    ]  # fmt: skip
    for track_id, label, (x1, y1, x2, y2), occluded in objects:
        lines += [
            "\t<object>", f"\t\t<trackid>{track_id}</trackid>", f"\t\t<name>{IMAGENET_VID_SYNSETS[label]}</name>",
            f"\t\t<bndbox><xmax>{x2}</xmax><xmin>{x1}</xmin><ymax>{y2}</ymax><ymin>{y1}</ymin></bndbox>",
            f"\t\t<occluded>{int(occluded)}</occluded>", "\t\t<generated>0</generated>", "\t</object>",
        ]  # fmt: skip
    return "\n".join(lines + ["</annotation>", ""])


def write_synth_vid(out: str | Path, cfg: SynthConfig = SynthConfig(), progress: bool = False) -> dict:
    """Writes the set; returns a summary (snippets, frames, boxes per motion speed, degraded frames)."""
    out = Path(out)
    split_lines, degraded_all = [], {}
    boxes = 0
    iterator = range(cfg.videos)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="vidtrt synth-vid", unit="snippet", disable=None)
    for v in iterator:
        snippet = f"synth_{cfg.split}_{cfg.seed:04d}_{v:04d}"
        rng = np.random.default_rng([cfg.seed, v])
        data_dir = out / "Data" / "VID" / cfg.split / snippet
        anno_dir = out / "Annotations" / "VID" / cfg.split / snippet
        data_dir.mkdir(parents=True, exist_ok=True)
        anno_dir.mkdir(parents=True, exist_ok=True)
        degraded = []
        for f, (image, objects, kind) in enumerate(render_snippet(rng, cfg)):
            frame = f"{f:06d}"
            if not cv2.imwrite(str(data_dir / f"{frame}.JPEG"), image, [cv2.IMWRITE_JPEG_QUALITY, 95]):
                raise OSError(f"cannot write {data_dir / frame}.JPEG")
            (anno_dir / f"{frame}.xml").write_text(_annotation_xml(f"{cfg.split}/{snippet}", frame, cfg.width, cfg.height, objects))
            split_lines.append(f"{snippet}/{frame} {len(split_lines) + 1}")
            boxes += len(objects)
            if kind:
                degraded.append(f)
        degraded_all[snippet] = degraded
    sets = out / "ImageSets" / "VID"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / f"{cfg.split}.txt").write_text("\n".join(split_lines) + "\n")
    summary = {
        "split": cfg.split, "snippets": cfg.videos, "frames": len(split_lines), "boxes": boxes,
        "classes": [IMAGENET_VID_CLASSES[i] + f" ({SHAPES[i]})" for i in range(cfg.classes)],
        "config": cfg.__dict__, "degraded": degraded_all,
    }  # fmt: skip
    (out / f"synth_{cfg.split}.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
