"""Named model configs and ``build(name)``."""

from __future__ import annotations

import dataclasses

import torch

from .postprocess import DetectionConfig
from .psla import PreprocessConfig, PslaConfig, PslaDetector
from .rfcn import RFCNConfig
from .rpn import RPNConfig

# Parameter counts the papers report, printed next to ours.
PAPER_PARAMS = {"psla_r101_rfcn": "63.7M (PSLA Tab. 1, +RFU+DenseFT)"}

CONFIGS = {
    # The paper's: ResNet-101 (dilated res5), R-FCN, d = 4, l = 10, key frame in the middle.
    "psla_r101_rfcn": PslaConfig(name="psla_r101_rfcn"),
    # Small and fast for tests and the demo: ResNet-18, narrow heads, small input.
    "psla_small": PslaConfig(
        name="psla_small",
        depth=18,
        low_level_block="layer3.0",
        feat_channels=64,
        embed_channels=16,
        transform_reduce=32,
        transform_channels=32,
        fusion_channels=16,
        fusion_hidden=8,
        rpn=RPNConfig(anchor_sizes=(32.0, 64.0, 128.0), mid_channels=32, pre_nms=200, post_nms=32),
        rfcn=RFCNConfig(group_size=3, mid_channels=64),
        detection=DetectionConfig(max_detections=20, pre_nms=300, score_threshold=0.02),
        preprocess=PreprocessConfig(short_side=160, max_long_side=256),
        key_interval=10,
    ),
}

METHOD_OF = {name: "psla" for name in CONFIGS}


def get_config(name: str, **overrides):
    if name not in CONFIGS:
        raise ValueError(f"unknown model config {name!r}; known: {', '.join(sorted(CONFIGS))}")
    return dataclasses.replace(CONFIGS[name], **overrides)


def build_from_config(cfg) -> torch.nn.Module:
    if isinstance(cfg, PslaConfig):
        return PslaDetector(cfg)
    raise TypeError(f"no detector for config type {type(cfg).__name__}")


def build(name: str, **overrides) -> torch.nn.Module:
    """The detector of a named config, in eval mode with freshly initialised weights."""
    return build_from_config(get_config(name, **overrides)).eval()


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
