"""Frame preprocessing shared by every backend: resize, normalise, pad.

One implementation in numpy + OpenCV, so the torch, ONNX Runtime and TensorRT
backends are fed bit-identical tensors and any difference in their outputs is
the backends' own.

Steps, in this order (the order is part of the definition):

1. Resize keeping the aspect ratio: the shorter side becomes ``short_side``
   unless the longer side would then exceed ``max_long_side``, in which case the
   longer side becomes ``max_long_side``. Output sizes are rounded half up
   (``int(size * scale + 0.5)``, as mmcv does). ``cv2.resize`` with
   ``INTER_LINEAR`` on the uint8 frame.
2. uint8 → float32, optional BGR → RGB swap, then ``(x - mean) / std`` per
   channel, in float32 (subtract, then divide: a re-implementation that
   multiplies by 1/std differs in the last bit).
3. Zero-pad at the bottom and right to multiples of ``pad_to_multiple`` (zero
   after normalisation, i.e. the mean colour), as the backbone's stride needs.

``mean`` and ``std`` are given in the channel order of the network input, i.e.
after the optional swap (the mmdetection convention). The defaults are the
ImageNet statistics (RGB mean 0.485, 0.456, 0.406 and std 0.229, 0.224, 0.225,
times 255) in BGR order with ``to_rgb=False``; that is the same arithmetic as
mmdetection's ``mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
to_rgb=True`` except for the channel order the network sees. Caffe-style
backbones (MXNet FGFA/DFF, maskrcnn-benchmark MEGA) use ``std=(1, 1, 1)`` and
their own means; the bundle manifest stores the exact configuration
(``as_dict``/``from_dict``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

import cv2
import numpy as np

__all__ = [
    "IMAGENET_MEAN_BGR",
    "IMAGENET_STD_BGR",
    "PreparedFrame",
    "Preprocessor",
    "to_original",
]

IMAGENET_MEAN_BGR = (103.53, 116.28, 123.675)
IMAGENET_STD_BGR = (57.375, 57.12, 58.395)


@dataclass(frozen=True)
class PreparedFrame:
    """A network-ready frame and what is needed to map its detections back.

    tensor: float32 [1, 3, Hp, Wp]; the image occupies [:resized_h, :resized_w],
    the rest is zero padding. scale is the nominal resize factor;
    ``to_original`` uses the exact per-axis factors resized/original instead,
    because rounding the resized size makes them differ slightly from it.
    """

    tensor: np.ndarray = field(repr=False)
    scale: float
    resized_hw: tuple[int, int]
    original_hw: tuple[int, int]

    @property
    def padded_hw(self) -> tuple[int, int]:
        return (int(self.tensor.shape[2]), int(self.tensor.shape[3]))


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _three_floats(name: str, values) -> tuple[float, float, float]:
    try:
        result = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be three numbers, got {values!r}") from None
    if len(result) != 3 or not all(math.isfinite(v) for v in result):
        raise ValueError(f"{name} must be three finite numbers, got {values!r}")
    return result  # type: ignore[return-value]


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Preprocessor:
    """Resize (aspect kept), normalise, pad: see the module docstring for the exact definition.

    max_long_side=None removes the cap on the longer side; pad_to_multiple=1
    disables padding.
    """

    short_side: int = 600
    max_long_side: int | None = 1000
    mean: tuple[float, float, float] = IMAGENET_MEAN_BGR
    std: tuple[float, float, float] = IMAGENET_STD_BGR
    to_rgb: bool = False
    pad_to_multiple: int = 16

    def __post_init__(self):
        # Normalised here so that equal configurations compare equal and
        # as_dict() round-trips exactly, whatever sequence types were passed.
        set_field = object.__setattr__
        set_field(self, "short_side", _positive_int("short_side", self.short_side))
        if self.max_long_side is not None:
            set_field(self, "max_long_side", _positive_int("max_long_side", self.max_long_side))
        set_field(self, "mean", _three_floats("mean", self.mean))
        std = _three_floats("std", self.std)
        if not all(s > 0 for s in std):
            raise ValueError(f"std must be positive, got {self.std!r}")
        set_field(self, "std", std)
        if not isinstance(self.to_rgb, (bool, np.bool_)):
            raise ValueError(f"to_rgb must be a bool, got {self.to_rgb!r}")
        set_field(self, "to_rgb", bool(self.to_rgb))
        set_field(self, "pad_to_multiple", _positive_int("pad_to_multiple", self.pad_to_multiple))

    def plan(self, height: int, width: int) -> tuple[float, tuple[int, int], tuple[int, int]]:
        """(scale, resized_hw, padded_hw) for a frame of this size, without touching pixels."""
        height = _positive_int("height", height)
        width = _positive_int("width", width)
        scale = self.short_side / min(height, width)
        if self.max_long_side is not None and max(height, width) * scale > self.max_long_side:
            scale = self.max_long_side / max(height, width)
        resized_h = max(1, int(height * scale + 0.5))
        resized_w = max(1, int(width * scale + 0.5))
        padded = (_round_up(resized_h, self.pad_to_multiple), _round_up(resized_w, self.pad_to_multiple))
        return scale, (resized_h, resized_w), padded

    def __call__(self, frame_bgr: np.ndarray) -> PreparedFrame:
        if not isinstance(frame_bgr, np.ndarray) or frame_bgr.dtype != np.uint8:
            kind = frame_bgr.dtype if isinstance(frame_bgr, np.ndarray) else type(frame_bgr).__name__
            raise ValueError(f"frame must be a uint8 numpy array (H, W, 3) in BGR order, got {kind}")
        if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3 or frame_bgr.shape[0] == 0 or frame_bgr.shape[1] == 0:
            raise ValueError(f"frame must have shape (H, W, 3) with H, W > 0, got {frame_bgr.shape}")
        height, width = frame_bgr.shape[:2]
        scale, (resized_h, resized_w), (padded_h, padded_w) = self.plan(height, width)

        if (resized_h, resized_w) == (height, width):
            resized = frame_bgr
        else:
            resized = cv2.resize(frame_bgr, (resized_w, resized_h), interpolation=cv2.INTER_LINEAR)
        pixels = resized.astype(np.float32)
        if self.to_rgb:
            pixels = pixels[:, :, ::-1]
        pixels -= np.asarray(self.mean, dtype=np.float32)
        pixels /= np.asarray(self.std, dtype=np.float32)

        tensor = np.zeros((1, 3, padded_h, padded_w), dtype=np.float32)
        tensor[0, :, :resized_h, :resized_w] = pixels.transpose(2, 0, 1)
        return PreparedFrame(
            tensor=tensor,
            scale=float(scale),
            resized_hw=(resized_h, resized_w),
            original_hw=(int(height), int(width)),
        )

    @staticmethod
    def to_original(boxes, prepared: PreparedFrame) -> np.ndarray:
        return to_original(boxes, prepared)

    def as_dict(self) -> dict:
        """JSON-ready configuration for a bundle manifest; ``from_dict`` reverses it."""
        return {
            "short_side": self.short_side,
            "max_long_side": self.max_long_side,
            "mean": list(self.mean),
            "std": list(self.std),
            "to_rgb": self.to_rgb,
            "pad_to_multiple": self.pad_to_multiple,
        }

    @classmethod
    def from_dict(cls, config: Mapping) -> Preprocessor:
        """Rebuild from ``as_dict()`` output. Every key is required and no other is
        accepted: a manifest must not be read with silently different preprocessing."""
        if not isinstance(config, Mapping):
            raise ValueError(f"preprocessing config must be a mapping, got {type(config).__name__}")
        expected = {f.name for f in fields(cls)}
        missing = sorted(expected - set(config))
        unknown = sorted(set(config) - expected)
        if missing or unknown:
            problems = []
            if missing:
                problems.append(f"missing {', '.join(missing)}")
            if unknown:
                problems.append(f"unknown {', '.join(map(str, unknown))}")
            raise ValueError(f"preprocessing config: {'; '.join(problems)}")
        return cls(**{name: config[name] for name in expected})


def to_original(boxes, prepared: PreparedFrame) -> np.ndarray:
    """Map [K, 4] boxes (x1, y1, x2, y2) from network-input to original-image
    coordinates, clipped to the original image ([0, W] × [0, H]). float32 [K, 4]."""
    array = np.asarray(boxes, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"boxes must have shape [K, 4] (x1, y1, x2, y2), got {array.shape}")
    original_h, original_w = prepared.original_hw
    resized_h, resized_w = prepared.resized_hw
    factors = np.array(
        [original_w / resized_w, original_h / resized_h, original_w / resized_w, original_h / resized_h],
        dtype=np.float32,
    )
    mapped = array * factors
    np.clip(mapped[:, 0::2], 0.0, float(original_w), out=mapped[:, 0::2])
    np.clip(mapped[:, 1::2], 0.0, float(original_h), out=mapped[:, 1::2])
    return mapped
