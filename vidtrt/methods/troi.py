"""Temporal RoI Align (SELSA + TRoI, mmtracking's layout) as stages + schedule.

Stages: ``frame`` (backbone, neck, RPN, plain RoIAlign of the proposals) runs
once per frame per pass; ``head`` (TRoI over T support feature maps plus the
target's, SELSA over their proposals, post-processing) runs once per target
frame. T is fixed at export (``num_support``); missing support frames are
masked. No state: the pipeline caches the frame stage's outputs of the
support frames and assembles each ``head`` call from them, as MFSA's
pipeline assembles its batches.

``load_detector`` reads a native checkpoint or an mmtracking one (mmcv
format, ``detector.*`` keys); for the latter the config is ``config_name`` or,
when not given, the one whose ResNet depth the checkpoint has.
"""

from __future__ import annotations

import torch

from ..models.checkpoint import FORMAT, CheckpointError
from ..models.init import calibrate_logits, seeded_weights
from ..models.troi import TroiConfig, TroiDetector, TroiFrameStage, TroiHeadStage, detect_video_reference
from ..models.troi_checkpoint import is_mmtracking_checkpoint, load_mmtracking_checkpoint, resnet_depth_of
from .common import load_native, named_config
from .psla import sample_image

NAME = "troi"
MMTRACKING_CONFIGS = {50: "selsa_troi_r50_dc5", 101: "selsa_troi_r101_dc5"}


def _support_inputs(outs: list, t: int, valid_count: int):
    pick = [outs[i % len(outs)] for i in range(t)]
    support_features = torch.cat([o[0] for o in pick])
    support_roi = torch.stack([o[3] for o in pick])
    support_pvalid = torch.stack([o[2] for o in pick])
    support_valid = torch.arange(t) < valid_count
    return support_features, support_roi, support_pvalid, support_valid


@torch.no_grad()
def seeded_detector(cfg: TroiConfig, seed: int = 0) -> TroiDetector:
    detector = TroiDetector(cfg).eval()
    seeded_weights(detector, seed)
    for blocks in (getattr(detector.backbone, n) for n in detector.backbone.stage_names):
        for block in blocks:
            (block.bn3 if hasattr(block, "bn3") else block.bn2).weight.fill_(0.25)
    image = sample_image(cfg, seed)
    feature = detector.neck(detector.backbone(image))
    calibrate_logits(detector.rpn_head.rpn_cls, torch.relu(detector.rpn_head.rpn_conv(feature)), 2.0)
    out = detector.frame(image)
    x = detector.head_features(out[0], out[2], out[3], *_support_inputs([out], cfg.num_support, cfg.num_support))
    calibrate_logits(detector.roi_head.bbox_head.fc_cls, x, 3.0)
    calibrate_logits(detector.roi_head.bbox_head.fc_reg, x, 0.5)
    return detector


def load_detector(config_name=None, checkpoint=None, seed: int = 0, overrides: dict | None = None):
    if checkpoint is not None:
        try:
            raw = torch.load(checkpoint, map_location="cpu", weights_only=True)
        except Exception:
            raw = None  # read_checkpoint / the mmtracking reader give the precise error
        if is_mmtracking_checkpoint(raw):
            depth = resnet_depth_of(raw["state_dict"])
            name = config_name or MMTRACKING_CONFIGS.get(depth)
            if name is None:
                raise CheckpointError(f"checkpoint {checkpoint}: cannot tell its ResNet depth; give --config")
            cfg = named_config(TroiConfig, "Temporal RoI Align", name, overrides)
            detector = TroiDetector(cfg).eval()
            load_mmtracking_checkpoint(detector, raw, source=f"mmtracking checkpoint {checkpoint}")
            return cfg, detector
        if isinstance(raw, dict) and raw.get("format") != FORMAT and "state_dict" in raw:
            raise CheckpointError(f"checkpoint {checkpoint} is neither a vidtrt checkpoint nor an mmtracking one (no detector.* keys)")
        return load_native(NAME, TroiConfig, TroiDetector, checkpoint, config_name)
    cfg = named_config(TroiConfig, "Temporal RoI Align", config_name, overrides)
    return cfg, seeded_detector(cfg, seed)


def stage_modules(detector: TroiDetector) -> dict[str, torch.nn.Module]:
    return {"frame": TroiFrameStage(detector), "head": TroiHeadStage(detector)}


def dynamic_axes(stage: str) -> dict:
    if stage == "frame":
        return {"image": {2: "H", 3: "W"}, "feature": {2: "h", 3: "w"}}
    return {"feature": {2: "h", 3: "w"}, "support_features": {2: "h", 3: "w"}}


@torch.no_grad()
def stage_samples(detector: TroiDetector, seed: int = 0, height=None, width=None) -> dict[str, tuple]:
    """T support frames made of two distinct frames' outputs, the last one
    masked (a missing frame, as at the start of an online video)."""
    cfg = detector.cfg
    images = [sample_image(cfg, seed + i, height, width) for i in range(3)]
    outs = [detector.frame(image) for image in images]
    target = outs[2]
    t = cfg.num_support
    size = torch.tensor([float(images[0].shape[2]), float(images[0].shape[3])])
    head = (size, target[0], target[1], target[2], target[3], *_support_inputs(outs[:2], t, max(t - 1, 1)))
    return {"frame": (images[0],), "head": head}


def state_specs(cfg: TroiConfig) -> list:
    return []


def schedule(cfg: TroiConfig) -> dict:
    return {"num_support": cfg.num_support, "mode": cfg.mode, "online_stride": cfg.online_stride}


def config_from_dict(d: dict) -> TroiConfig:
    return TroiConfig.from_dict(d)


video_reference = detect_video_reference
