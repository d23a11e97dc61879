"""MFSA as stages + schedule.

Stages: ``frame`` (N_feat, RPN, region features of one frame) runs once per
frame; ``batch`` (RPM over K frames' regions + classification/regression +
post-processing of all K frames) runs once per batch in Multi-Focus mode and
once per frame in Single-Focus mode; ``perframe`` (Faster R-CNN without RPM)
is the benchmark baseline. Nothing is carried between batches: the pipeline
assembles each batch from the frame stage's outputs.
"""

from __future__ import annotations

import torch

from ..models.init import calibrate_logits, seeded_weights
from ..models.mfsa import MfsaBatchStage, MfsaConfig, MfsaDetector, MfsaFrameStage, PerFrameDetectorStage, detect_video_reference
from .common import load_native, named_config
from .psla import sample_image

NAME = "mfsa"


@torch.no_grad()
def seeded_detector(cfg: MfsaConfig, seed: int = 0) -> MfsaDetector:
    detector = MfsaDetector(cfg).eval()
    seeded_weights(detector, seed)
    for blocks in [getattr(detector.backbone, n) for n in detector.backbone.stage_names] + [detector.res5]:
        for block in blocks:
            (block.bn3 if hasattr(block, "bn3") else block.bn2).weight.fill_(0.25)
    image = sample_image(cfg, seed)
    feature = detector.backbone(image)
    calibrate_logits(detector.rpn.cls, torch.relu(detector.rpn.conv(feature)), 2.0)
    _, _, regions = detector.frame(image)
    calibrate_logits(detector.cls, regions, 3.0)
    calibrate_logits(detector.reg, regions, 0.5)
    return detector


def load_detector(config_name=None, checkpoint=None, seed: int = 0, overrides: dict | None = None):
    if checkpoint is not None:
        return load_native(NAME, MfsaConfig, MfsaDetector, checkpoint, config_name)
    cfg = named_config(MfsaConfig, "MFSA", config_name, overrides)
    return cfg, seeded_detector(cfg, seed)


def stage_modules(detector: MfsaDetector) -> dict[str, torch.nn.Module]:
    return {"frame": MfsaFrameStage(detector), "batch": MfsaBatchStage(detector), "perframe": PerFrameDetectorStage(detector)}


def dynamic_axes(stage: str) -> dict:
    return {"image": {2: "H", 3: "W"}} if stage in ("frame", "perframe") else {}


@torch.no_grad()
def stage_samples(detector: MfsaDetector, seed: int = 0, height=None, width=None) -> dict[str, tuple]:
    """A batch of K frames made of two distinct frames' outputs (K real frames would cost K forward passes)."""
    cfg = detector.cfg
    images = [sample_image(cfg, seed + i, height, width) for i in range(2)]
    outs = [detector.frame(image) for image in images]
    k = cfg.batch_frames
    pick = [outs[i % 2] for i in range(k)]
    proposals, valid, regions = (torch.stack([o[j] for o in pick]) for j in range(3))
    if k > 1:
        valid[-1] = False  # a padded slot, as at the end of a video
    size = torch.tensor([float(images[0].shape[2]), float(images[0].shape[3])])
    return {"frame": (images[0],), "batch": (proposals, valid, regions, size), "perframe": (images[1],)}


def state_specs(cfg: MfsaConfig) -> list:
    return []


def schedule(cfg: MfsaConfig) -> dict:
    return {"batch_frames": cfg.batch_frames, "mode": cfg.mode}


def config_from_dict(d: dict) -> MfsaConfig:
    return MfsaConfig.from_dict(d)


video_reference = detect_video_reference
