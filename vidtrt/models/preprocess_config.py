"""Input preprocessing as a model config field (the runtime's Preprocessor is
built from it and stored in every bundle manifest)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PreprocessConfig:
    """Fields of vidtrt.core.preprocess.Preprocessor (ImageNet mean/std, BGR)."""

    short_side: int = 600
    max_long_side: int = 1000
    mean: tuple[float, float, float] = (103.53, 116.28, 123.675)
    std: tuple[float, float, float] = (57.375, 57.12, 58.395)
    to_rgb: bool = False
    pad_to_multiple: int = 16
