"""PSLA as stages + state + schedule.

Stages: ``key`` (N_f, RFU, N_t) and ``nonkey`` (N_l, Transform Net, DenseFT,
N_t); ``perframe`` (N_f + N_t on every frame) is the baseline benchmarks
compare against and is not part of the schedule. State: F_t (``temporal``)
and its embedding f(F_t) (``temporal_key``), produced by ``key`` and read by
both stages.
"""

from __future__ import annotations

import torch

from ..core.bundle import StateSpec
from .common import load_native, named_config
from ..models.init import calibrate_logits, seeded_weights
from ..models.psla import (
    PerFrameStage,
    PslaConfig,
    PslaDetector,
    PslaKeyStage,
    PslaNonKeyStage,
    detect_video_reference,
)

NAME = "psla"
SCHEDULED_STAGES = ("key", "nonkey")
DETECTION_OUTPUTS = ("boxes", "scores", "labels", "valid")


def sample_image(cfg: PslaConfig, seed: int = 0, height: int | None = None, width: int | None = None) -> torch.Tensor:
    """A normalised-looking input of the config's usual size (short side, 4:3, padded)."""
    p = cfg.preprocess
    height = height or p.short_side
    width = width or min(p.max_long_side, round(p.short_side * 4 / 3))
    height, width = (-(-x // p.pad_to_multiple) * p.pad_to_multiple for x in (height, width))
    g = torch.Generator().manual_seed(seed)
    # Smooth random structure (upsampled noise) rather than white noise, like an image.
    coarse = torch.randn(1, 3, max(1, height // 16), max(1, width // 16), generator=g)
    return torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)


@torch.no_grad()
def seeded_detector(cfg: PslaConfig, seed: int = 0) -> PslaDetector:
    """A detector with deterministic, decisive weights (see models/init.py)."""
    detector = PslaDetector(cfg).eval()
    seeded_weights(detector, seed)
    for name, block_stage in ((n, getattr(detector.backbone, n)) for n in detector.backbone.stage_names):
        for block in block_stage:
            last_bn = block.bn3 if hasattr(block, "bn3") else block.bn2
            last_bn.weight.fill_(0.25)  # keep the residual sum's variance from growing with depth
    image = sample_image(cfg, seed)
    high = detector.high_level(image)
    low = detector.low_level(image)
    for fusion, feature in ((detector.update_net, high), (detector.quality_net, low)):
        hidden = fusion.hidden(fusion.reduce(torch.cat([feature, feature], dim=1)))
        calibrate_logits(fusion.weights, hidden, 1.0)
    calibrate_logits(detector.rpn.cls, torch.relu(detector.rpn.conv(high)), 2.0)
    calibrate_logits(detector.rfcn.cls, torch.relu(detector.rfcn.conv_new(high)), 3.0)
    calibrate_logits(detector.rfcn.reg, torch.relu(detector.rfcn.conv_new(high)), 0.5)
    return detector


def load_detector(
    config_name: str | None = None, checkpoint=None, seed: int = 0, overrides: dict | None = None
) -> tuple[PslaConfig, PslaDetector]:
    """From a native checkpoint (its config travels with it), or a named config
    (with ``overrides`` of its fields) and seeded weights."""
    if checkpoint is not None:
        return load_native(NAME, PslaConfig, PslaDetector, checkpoint, config_name)
    cfg = named_config(PslaConfig, "PSLA", config_name, overrides)
    return cfg, seeded_detector(cfg, seed)


def stage_modules(detector: PslaDetector) -> dict[str, torch.nn.Module]:
    return {"key": PslaKeyStage(detector), "nonkey": PslaNonKeyStage(detector), "perframe": PerFrameStage(detector)}


def dynamic_axes(stage: str) -> dict:
    axes = {"image": {2: "H", 3: "W"}}
    for name in ("temporal_in", "temporal_key_in", "temporal_out", "temporal_key_out"):
        axes[name] = {2: "h", 3: "w"}
    module_names = {"key": PslaKeyStage, "nonkey": PslaNonKeyStage, "perframe": PerFrameStage}[stage]
    names = set(module_names.input_names) | set(module_names.output_names)
    return {k: v for k, v in axes.items() if k in names}


@torch.no_grad()
def stage_samples(detector: PslaDetector, seed: int = 0, height=None, width=None) -> dict[str, tuple]:
    """Inputs for every stage with a real carried state (the key stage's output on another frame)."""
    cfg = detector.cfg
    images = [sample_image(cfg, seed + i, height, width) for i in range(3)]
    temporal = detector.high_level(images[0])
    temporal_key = detector.embed_temporal(temporal)
    return {
        "key": (images[1], temporal, temporal_key, torch.ones(1)),
        "nonkey": (images[2], temporal, temporal_key),
        "perframe": (images[1],),
    }


def state_specs(cfg: PslaConfig) -> list[StateSpec]:
    return [
        StateSpec("temporal", "key.temporal_out", ["key.temporal_in", "nonkey.temporal_in"], [1, cfg.feat_channels, "h", "w"], "float32"),
        StateSpec(
            "temporal_key", "key.temporal_key_out", ["key.temporal_key_in", "nonkey.temporal_key_in"], [1, cfg.embed_channels, "h", "w"], "float32"
        ),
    ]


def schedule(cfg: PslaConfig) -> dict:
    return {"key_interval": cfg.key_interval, "key_placement": cfg.key_placement}


def config_from_dict(d: dict) -> PslaConfig:
    return PslaConfig.from_dict(d)


video_reference = detect_video_reference
