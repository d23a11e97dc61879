"""Temporal RoI Align (SELSA + TRoI, mmtracking's layout) as a registered method.

Stages: ``frame`` (backbone, neck, RPN, plain RoIAlign of the proposals, and
the SELSA references' projections of those RoIs) runs once per frame per
pass; ``head`` (TRoI over T support feature maps plus the target's, SELSA
over their proposals, post-processing) runs once per target frame. T is fixed
at export (``num_support``); missing support frames are masked. The pipeline
caches the frame stage's outputs of the support frames and assembles each
``head`` call from them, as MFSA's pipeline assembles its batches; so the
support side of SELSA (three shared FCs and two projections per aggregator
on every support RoI) is computed once per frame, not once per target.

``load_detector`` reads a native checkpoint or an mmtracking one (mmcv
format, ``detector.*`` keys); for the latter the config is ``config_name`` or,
when not given, the one whose ResNet depth the checkpoint has.
"""

from __future__ import annotations

import torch

from ..models.checkpoint import FORMAT, CheckpointError
from ..models.losses import BoxCoding, HeadLayout, add_losses, head_loss, roi_head_losses, rpn_losses, sample_rois
from ..models.init import calibrate_logits, seeded_weights
from ..models.postprocess import DetectionConfig
from ..models.preprocess_config import PreprocessConfig
from ..models.rpn import RPNConfig
from ..models.troi import MODES, TroiConfig, TroiDetector, TroiFrameStage, TroiHeadStage
from ..models.resnet import stem_width
from ..models.troi_checkpoint import PREFIX, is_mmtracking_checkpoint, load_mmtracking_checkpoint, resnet_depth_of
from .base import Method, ScheduleOption
from .common import nearby_frames, peek_checkpoint, sample_image, with_stem_width

MMTRACKING_CONFIGS = {50: "selsa_troi_r50_dc5", 101: "selsa_troi_r101_dc5"}
CONFIGS = {
    # mmtracking's selsa_troialign_faster_rcnn_{r50,r101}_dc5_7e_imagenetvid: DC5 backbone, 512-channel
    # neck, 300 proposals, K = 2 most similar points, 4 TAFA blocks, 14 support frames, 3 SELSA FCs.
    "selsa_troi_r50_dc5": TroiConfig(name="selsa_troi_r50_dc5"),
    "selsa_troi_r101_dc5": TroiConfig(name="selsa_troi_r101_dc5", depth=101),
    "troi_small": TroiConfig(
        name="troi_small",
        depth=18,
        backbone_width=16,
        neck_channels=32,
        fc_channels=64,
        num_support=3,
        online_stride=2,
        rpn=RPNConfig(anchor_sizes=(32.0, 64.0, 128.0), mid_channels=32, pre_nms=200, post_nms=12),
        detection=DetectionConfig(max_detections=10, pre_nms=300, score_threshold=0.02, nms_iou=0.5, box_weights=(5.0, 5.0, 5.0, 5.0)),
        preprocess=PreprocessConfig(short_side=128, max_long_side=192),
    ),
}


def adaptive_stride_support(length: int, num_support: int) -> list[int]:
    """mmtracking's ``test_with_adaptive_stride``: num_support frames spread
    evenly over the whole video, round(i · (length − 1) / (num_support − 1))
    with Python's round (half to even). A video shorter than num_support
    repeats frames, as upstream does — the support set keeps its size."""
    if length < 1:
        raise ValueError("a video needs at least one frame")
    stride = (length - 1) / (num_support - 1) if num_support > 1 else 0.0
    return [round(i * stride) for i in range(num_support)]


def online_support(target: int, num_support: int, stride: int) -> list[int]:
    """Online support of ``target``: the latest num_support frames before it
    whose index is a multiple of ``stride`` (fewer at the start of a video;
    the rest is masked). mmtracking's demo instead fills its memory with
    copies of frame 0 and overwrites the last slot in place."""
    return [i for i in range(0, target, stride)][-num_support:]


@torch.no_grad()
def detect_video_reference(detector: TroiDetector, images, num_support: int, mode: str, stride: int | None = None):
    """The method over a whole video with no stage split and nothing cached
    between targets. Every frame's features, proposals and RoI features are
    computed once; each target is then detected with TRoI over its support
    frames plus itself and SELSA over their proposals, the SELSA references'
    projections recomputed from the support frames' RoI features for every
    target (what the pipelines carry instead, computed once per frame by the
    frame stage; tests compare the two bit for bit). ``offline``: the same
    adaptive-stride support set for every target. ``online``:
    ``online_support`` (past frames only)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    stride = stride or detector.cfg.online_stride
    per_frame = [detector.frame(image) for image in images]
    bbox_head = detector.roi_head.bbox_head
    size = torch.tensor([float(images[0].shape[2]), float(images[0].shape[3])])
    offline = adaptive_stride_support(len(images), num_support) if mode == "offline" else None
    results = []
    for t in range(len(images)):
        frames = offline if offline is not None else online_support(t, num_support, stride)
        feature, proposals, valid, roi_feats = per_frame[t][:4]
        own_keys, own_values = bbox_head.reference_projections(roi_feats)
        parts = [per_frame[i] for i in frames]
        projections = [bbox_head.reference_projections(p[3]) for p in parts]
        missing = num_support - len(parts)
        support_features = torch.cat([p[0] for p in parts] + [feature.new_zeros(missing, *feature.shape[1:])])
        support_keys = torch.stack([k for k, _ in projections] + [own_keys.new_zeros(own_keys.shape)] * missing)
        support_values = torch.stack([v for _, v in projections] + [own_values.new_zeros(own_values.shape)] * missing)
        support_pvalid = torch.stack([p[2] for p in parts] + [valid.new_zeros(valid.shape)] * missing)
        support_valid = torch.arange(num_support) < len(parts)
        results.append(detector.head(
            size, feature, proposals, valid, roi_feats, own_keys, own_values,
            support_features, support_keys, support_values, support_pvalid, support_valid,
        ))  # fmt: skip
    return results


def _support_inputs(outs: list, t: int, valid_count: int):
    """The head's support inputs from frame outputs (cycled over T slots; slots from ``valid_count`` on masked)."""
    pick = [outs[i % len(outs)] for i in range(t)]
    support_features = torch.cat([o[0] for o in pick])
    support_keys = torch.stack([o[4] for o in pick])
    support_values = torch.stack([o[5] for o in pick])
    support_pvalid = torch.stack([o[2] for o in pick])
    support_valid = torch.arange(t) < valid_count
    return support_features, support_keys, support_values, support_pvalid, support_valid


class Troi(Method):
    name = "troi"
    title = "Temporal RoI Align + SELSA (mmtracking checkpoints): TRoI over T support frames, SELSA over their proposals"
    config_class = TroiConfig
    detector_class = TroiDetector
    stages = {
        "frame": "backbone + neck + RPN + RoI features, once per frame",
        "head": "TRoI over T support frames + SELSA + detection of one target frame",
    }
    pipeline = "troi:TroiPipeline"
    schedule_options = (
        ScheduleOption("mode", str, "offline: support spread over the whole video (mmtracking); online: past frames only", choices=MODES),
        ScheduleOption("num_support", int, "T, the support frames of every target", minimum=1, at_export=True, symbol="T"),
        ScheduleOption("stride", int, "online: support frames are the last T whose index is a multiple of this", minimum=1, config_field="online_stride"),
    )

    @property
    def configs(self):
        return CONFIGS

    @torch.no_grad()
    def seeded_detector(self, cfg: TroiConfig, seed: int = 0) -> TroiDetector:
        detector = TroiDetector(cfg).eval()
        seeded_weights(detector, seed)
        for blocks in (getattr(detector.backbone, n) for n in detector.backbone.stage_names):
            for block in blocks:
                (block.bn3 if hasattr(block, "bn3") else block.bn2).weight.fill_(0.25)
        image = sample_image(cfg, seed)
        feature = detector.neck(detector.backbone(image))
        calibrate_logits(detector.rpn_head.rpn_cls, torch.relu(detector.rpn_head.rpn_conv(feature)), 2.0)
        out = detector.frame(image)
        x = detector.head_features(out[0], out[2], out[3], out[4], out[5], *_support_inputs([out], cfg.num_support, cfg.num_support))
        calibrate_logits(detector.roi_head.bbox_head.fc_cls, x, 3.0)
        calibrate_logits(detector.roi_head.bbox_head.fc_reg, x, 0.5)
        return detector

    def load_detector(self, config_name=None, checkpoint=None, seed: int = 0, overrides=None):
        """Also reads mmtracking checkpoints (see the module docstring)."""
        if checkpoint is not None:
            raw = peek_checkpoint(checkpoint)
            if is_mmtracking_checkpoint(raw):
                depth = resnet_depth_of(raw["state_dict"])
                name = config_name or MMTRACKING_CONFIGS.get(depth)
                if name is None:
                    raise CheckpointError(f"checkpoint {checkpoint}: cannot tell its ResNet depth; give --config")
                width = stem_width(raw["state_dict"], PREFIX + "backbone.conv1.weight")
                cfg = self.config(name, with_stem_width(overrides, width))
                detector = TroiDetector(cfg).eval()
                load_mmtracking_checkpoint(detector, raw, source=f"mmtracking checkpoint {checkpoint}")
                return cfg, detector
            if isinstance(raw, dict) and raw.get("format") != FORMAT and "state_dict" in raw:
                raise CheckpointError(f"checkpoint {checkpoint} is neither a vidtrt checkpoint nor an mmtracking one (no detector.* keys)")
        return super().load_detector(config_name, checkpoint, seed, overrides)

    def stage_modules(self, detector: TroiDetector) -> dict[str, torch.nn.Module]:
        return {"frame": TroiFrameStage(detector), "head": TroiHeadStage(detector)}

    def dynamic_axes(self, stage: str) -> dict:
        if stage == "frame":
            return {"image": {2: "H", 3: "W"}, "feature": {2: "h", 3: "w"}}
        return {"feature": {2: "h", 3: "w"}, "support_features": {2: "h", 3: "w"}}

    @torch.no_grad()
    def stage_samples(self, detector: TroiDetector, seed: int = 0, height=None, width=None) -> dict[str, tuple]:
        """T support frames made of two distinct frames' outputs, the last one
        masked (a missing frame, as at the start of an online video)."""
        cfg = detector.cfg
        images = [sample_image(cfg, seed + i, height, width) for i in range(3)]
        outs = [detector.frame(image) for image in images]
        target = outs[2]
        t = cfg.num_support
        size = torch.tensor([float(images[0].shape[2]), float(images[0].shape[3])])
        head = (size, *target, *_support_inputs(outs[:2], t, max(t - 1, 1)))
        return {"frame": (images[0],), "head": head}

    def video_reference(self, detector, images, schedule):
        return detect_video_reference(detector, images, schedule["num_support"], schedule["mode"], schedule["stride"])

    # ---------------------------------------------------------------- training

    # mmtracking's SELSA/TRoI sampler: reference frames within 9 of the key frame.
    TRAIN_SUPPORT_RADIUS = 9

    def training_frames(self, cfg: TroiConfig, length: int, target: int, rng) -> list[int]:
        return [target] + nearby_frames(target, length, cfg.num_support, self.TRAIN_SUPPORT_RADIUS, rng)

    def training_loss(self, detector: TroiDetector, frames, generator=None) -> dict:
        """RPN and head losses on the target frame; the support frames give
        their feature maps and their proposals' SELSA projections (computed
        without gradient: they only feed TRoI and SELSA's attention, whose
        weights train through the target's RoIs, its own references
        included)."""
        target, supports = frames[0], frames[1:]
        d = detector
        feature = d.neck(d.backbone(target.image))
        losses, proposals, valid = rpn_losses(d.rpn_head, feature, target.image, target.targets, generator)
        with torch.no_grad():
            support = [d.frame(s.image) for s in supports]
        sampled = sample_rois(proposals, valid, target.targets, generator=generator)
        roi_feats = d.roi_align(feature, sampled.rois)
        own_keys, own_values = d.roi_head.bbox_head.reference_projections(roi_feats)
        x = d.head_features(
            feature, torch.ones(len(sampled.rois), dtype=torch.bool), roi_feats, own_keys, own_values,
            torch.cat([s[0] for s in support]), torch.stack([s[4] for s in support]), torch.stack([s[5] for s in support]),
            torch.stack([s[2] for s in support]), torch.ones(len(support), dtype=torch.bool),
        )  # fmt: skip
        bbox_head = d.roi_head.bbox_head
        layout = HeadLayout(BoxCoding(d.cfg.detection.box_weights), background="last", deltas="per_class")
        return add_losses(losses, head_loss(bbox_head.fc_cls(x), bbox_head.fc_reg(x), sampled, layout))

METHOD = Troi()
