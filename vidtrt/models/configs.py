"""Named model configs and ``build(name)``."""

from __future__ import annotations

import dataclasses

import torch

from .mfsa import MfsaConfig, MfsaDetector
from .postprocess import DetectionConfig
from .psla import PreprocessConfig, PslaConfig, PslaDetector
from .rfcn import RFCNConfig
from .rpn import RPNConfig
from .troi import TroiConfig, TroiDetector

# Parameter counts the papers report, printed next to ours.
PAPER_PARAMS = {"psla_r101_rfcn": "63.7M (PSLA Tab. 1, +RFU+DenseFT)", "mfsa_r101": "65.3M (MFSA Tab. 3, multi-focus)"}

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

CONFIGS.update(
    {
        # The paper's: Faster R-CNN R-101 (RPN after conv4, 300 proposals, NMS 0.7), D = 1024, K = 21.
        "mfsa_r101": MfsaConfig(name="mfsa_r101"),
        "mfsa_small": MfsaConfig(
            name="mfsa_small",
            depth=18,
            region_dim=64,
            relation_dim=32,
            roi_size=8,
            batch_frames=4,
            rpn=RPNConfig(anchor_sizes=(32.0, 64.0, 128.0), mid_channels=32, pre_nms=200, post_nms=16),
            detection=DetectionConfig(max_detections=10, pre_nms=300, score_threshold=0.02, nms_iou=0.5),
            preprocess=PreprocessConfig(short_side=128, max_long_side=224),
        ),
    }
)

CONFIGS.update(
    {
        # mmtracking's selsa_troialign_faster_rcnn_{r50,r101}_dc5_7e_imagenetvid: DC5 backbone, 512-channel
        # neck, 300 proposals, K = 2 most similar points, 4 TAFA blocks, 14 support frames, 3 SELSA FCs.
        "selsa_troi_r50_dc5": TroiConfig(name="selsa_troi_r50_dc5"),
        "selsa_troi_r101_dc5": TroiConfig(name="selsa_troi_r101_dc5", depth=101),
        "troi_small": TroiConfig(
            name="troi_small",
            depth=18,
            neck_channels=32,
            fc_channels=64,
            num_support=3,
            online_stride=2,
            rpn=RPNConfig(anchor_sizes=(32.0, 64.0, 128.0), mid_channels=32, pre_nms=200, post_nms=12),
            detection=DetectionConfig(max_detections=10, pre_nms=300, score_threshold=0.02, nms_iou=0.5, box_weights=(5.0, 5.0, 5.0, 5.0)),
            preprocess=PreprocessConfig(short_side=128, max_long_side=192),
        ),
    }
)

METHOD_OF = {
    name: ("mfsa" if isinstance(cfg, MfsaConfig) else "troi" if isinstance(cfg, TroiConfig) else "psla")
    for name, cfg in CONFIGS.items()
}


def get_config(name: str, **overrides):
    if name not in CONFIGS:
        raise ValueError(f"unknown model config {name!r}; known: {', '.join(sorted(CONFIGS))}")
    return dataclasses.replace(CONFIGS[name], **overrides)


def build_from_config(cfg) -> torch.nn.Module:
    if isinstance(cfg, PslaConfig):
        return PslaDetector(cfg)
    if isinstance(cfg, MfsaConfig):
        return MfsaDetector(cfg)
    if isinstance(cfg, TroiConfig):
        return TroiDetector(cfg)
    raise TypeError(f"no detector for config type {type(cfg).__name__}")


def build(name: str, **overrides) -> torch.nn.Module:
    """The detector of a named config, in eval mode with freshly initialised weights."""
    return build_from_config(get_config(name, **overrides)).eval()


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
