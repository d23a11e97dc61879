"""vidtrt: a TensorRT deployment toolkit for video object detectors.

The embedding API (``vidtrt.VideoDetector``, ``vidtrt.DetectionStream``,
``vidtrt.Detections``) is imported on first use, so ``import vidtrt`` stays
light: it loads neither numpy, torch, ONNX Runtime nor OpenCV.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public name → the module that defines it, imported when the name is first used.
_LAZY_EXPORTS = {
    "VideoDetector": "vidtrt.api",
    "DetectionStream": "vidtrt.api",
    "Detections": "vidtrt.runtime.outputs",
}

__all__ = ["__version__", *_LAZY_EXPORTS]


def __getattr__(name: str):
    module = _LAZY_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_EXPORTS))
