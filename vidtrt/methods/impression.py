"""Impression Network, and Deep Feature Flow (its method (b)), as a registered method.

Stages: ``key`` (N_feat; with the impression also flow from the previous key
frame, the impression warped to this frame, Eq. 2-4 fusion and the
impression update; N_task on f_task), ``nonkey`` (flow from the key frame,
f_task warped, N_task) and ``perframe`` (N_feat + N_task on every frame, the
paper's method (a); a baseline, not scheduled). State: the key frame's
f_task and image (``task_feature``, ``key_image``, read by ``nonkey`` and by
the next ``key``) and the impression (``impression``).

Schedule: segments of ``key_interval`` (l) frames, the key frame first or in
the middle (``models/key_frames.key_index``), and the memory gate g, which
is a graph input (it changes without re-export). Causal apart from middle
placement, so online only.

Configs ``dff_r50_dc5`` / ``dff_r101_dc5`` are mmtracking's DFF; their
checkpoints (mmcv format, ``detector.*`` + ``motion.*`` keys) load as they are.
"""

from __future__ import annotations

import torch

from ..core.bundle import StateSpec
from ..models.checkpoint import FORMAT, CheckpointError, load_state_dict_strict
from ..models.flow import tiny_flownet_config
from ..models.impression import (
    ImpressionConfig,
    ImpressionDetector,
    ImpressionKeyStage,
    ImpressionNonKeyStage,
    ImpressionPerFrameStage,
    RfcnStillDetector,
)
from ..models.losses import BoxCoding, HeadLayout, add_losses, roi_head_losses, rpn_losses
from ..models.init import calibrate_logits, seeded_weights
from ..models.key_frames import KEY_PLACEMENTS, key_index
from ..models.postprocess import DetectionConfig
from ..models.preprocess_config import PreprocessConfig
from ..models.rfcn import RFCNConfig
from ..models.rpn import RPNConfig
from ..models.resnet import stem_width
from ..models.troi_checkpoint import PREFIX, is_mmtracking_checkpoint, resnet_depth_of
from .base import Method, ScheduleOption
from .common import key_frame_triplet, peek_checkpoint, sample_image, with_stem_width

MMDET_MEAN, MMDET_STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


def _dff(name: str, depth: int, **overrides) -> ImpressionConfig:
    """mmtracking's dff_faster_rcnn_r{50,101}_dc5_1x_imagenetvid: FlowNetSimple
    at half resolution, no scale map, no impression, key frame every 10th,
    first; Faster R-CNN R-DC5 with RPN 6000 (capped at 3840 for TensorRT's
    TopK) / 300 at NMS 0.7, R-CNN score > 1e-4, NMS 0.5, 100 per image,
    target stds 0.2; RGB input with mmdet's ImageNet mean and std."""
    fields = dict(
        depth=depth,
        head="faster_rcnn",
        feat_channels=512,
        rpn=RPNConfig(anchor_sizes=(64.0, 128.0, 256.0, 512.0), mid_channels=512, pre_nms=3840, post_nms=300, nms_iou=0.7),
        fc_channels=1024,
        scale_map=False,
        aggregation="none",
        detection=DetectionConfig(score_threshold=1e-4, nms_iou=0.5, max_detections=100, box_weights=(5.0, 5.0, 5.0, 5.0)),
        preprocess=PreprocessConfig(mean=MMDET_MEAN, std=MMDET_STD, to_rgb=True),
        key_placement="first",
    )
    return ImpressionConfig(name=name, **{**fields, **overrides})


MMTRACKING_CONFIGS = {50: "dff_r50_dc5", 101: "dff_r101_dc5"}
CONFIGS = {
    # The paper's (Sec. 4): ResNet-101 (dilated res5) + 1024-ch 3x3 conv, RPN (9 anchors,
    # 300 proposals) and R-FCN 7x7 on the halves, FlowNet-S at half resolution, scale map,
    # N_q 256/16/1, l = 10, key frame in the middle, g = 1.
    "impression_r101": ImpressionConfig(name="impression_r101"),
    "impression_small": ImpressionConfig(
        name="impression_small",
        depth=18,
        backbone_width=16,
        feat_channels=64,
        rpn=RPNConfig(anchor_sizes=(32.0, 64.0, 128.0), mid_channels=0, pre_nms=200, post_nms=24),
        rfcn=RFCNConfig(group_size=3, mid_channels=0),
        flow=tiny_flownet_config(),
        quality_hidden=(16, 8),
        detection=DetectionConfig(max_detections=20, pre_nms=300, score_threshold=0.02),
        preprocess=PreprocessConfig(short_side=128, max_long_side=192),
        memory_gate=0.8,
    ),
    "dff_r50_dc5": _dff("dff_r50_dc5", 50),
    "dff_r101_dc5": _dff("dff_r101_dc5", 101),
    # mmtracking's DFF graph, narrow: for tests of the DFF path and of checkpoint import.
    "dff_small": _dff(
        "dff_small",
        18,
        feat_channels=32,
        fc_channels=64,
        flow=tiny_flownet_config(),
        rpn=RPNConfig(anchor_sizes=(32.0, 64.0, 128.0), mid_channels=32, pre_nms=200, post_nms=16, nms_iou=0.7),
        detection=DetectionConfig(score_threshold=0.02, nms_iou=0.5, max_detections=10, box_weights=(5.0, 5.0, 5.0, 5.0)),
        preprocess=PreprocessConfig(short_side=128, max_long_side=192, mean=MMDET_MEAN, std=MMDET_STD, to_rgb=True),
    ),
}


@torch.no_grad()
def detect_video_reference(detector: ImpressionDetector, images, interval: int, placement: str, memory_gate: float):
    """Algorithm 1 over a whole video, with no stage split.

    Segments of ``interval`` frames (the last may be shorter). The key frame
    of a segment runs N_feat; from the second segment on, the impression of
    the previous key frame is warped to it, fused with its feature (Eq. 2-3)
    into f_task, and the impression updated (Eq. 4); the first key frame has
    f_task = f_imp = f. Every other frame of the segment warps f_task from
    the key frame. DFF (no impression): f_task = f on every key frame.
    Returns per-frame (boxes, scores, labels, valid) in frame order.
    """
    gate = torch.tensor([float(memory_gate)])
    results = [None] * len(images)
    impression = previous_key = None
    for start in range(0, len(images), interval):
        segment = list(range(start, min(start + interval, len(images))))
        key = segment[key_index(len(segment), interval, placement)]
        feature = detector.features(images[key])
        if not detector.cfg.has_impression or impression is None:
            task = impression = feature
        else:
            warped = detector.propagate(impression, images[key], images[previous_key])
            task, impression = detector.fuse(feature, warped, gate)
        previous_key = key
        results[key] = detector.detect(task, images[key])
        for index in segment:
            if index != key:
                results[index] = detector.detect(detector.propagate(task, images[index], images[key]), images[index])
    return results


class Impression(Method):
    name = "impression"
    title = "Impression Network / Deep Feature Flow: key frames N_feat (+ impression fusion), others flow-warped"
    config_class = ImpressionConfig
    detector_class = ImpressionDetector
    stages = {
        "key": "N_feat (+ flow, warp and fusion of the impression) + N_task",
        "nonkey": "FlowNet-S + warp of the key frame's f_task + N_task",
        "perframe": "N_feat + N_task on every frame",
    }
    baseline_stage = "perframe"
    stage_titles = {"key": "key stage", "nonkey": "non-key stage", "perframe": "per-frame N_feat"}
    pipeline = "impression:ImpressionPipeline"
    resnet_prefixes = {"detector.backbone.": ""}
    paper_params = {
        "impression_r101": "not reported (ResNet-101 R-FCN + FlowNet-S; Impression Network Sec. 4)",
        "dff_r101_dc5": "≈120M, 673 keys (mmtracking DFF R-101 checkpoint)",
    }
    schedule_options = (
        ScheduleOption("key_interval", int, "segment length l: a key frame every l frames", minimum=1),
        ScheduleOption("key_placement", str, "key frame of a segment: first (lowest latency) or middle (the paper's)", choices=KEY_PLACEMENTS),
        ScheduleOption("memory_gate", float, "g of Eq. 4, how much of the fused feature the impression keeps (impression configs)", minimum=0.0, maximum=1.0),
    )

    @property
    def configs(self):
        return CONFIGS

    def schedule_variants(self) -> list[dict]:
        """Both key placements, and at l = 1 (every frame a key frame, the
        impression carried frame to frame) with g = 0.5."""
        return super().schedule_variants() + [{"key_interval": 1, "memory_gate": 0.5}, {"key_interval": 3, "key_placement": "middle", "memory_gate": 1.0}]

    @torch.no_grad()
    def seeded_detector(self, cfg: ImpressionConfig, seed: int = 0) -> ImpressionDetector:
        detector = ImpressionDetector(cfg).eval()
        seeded_weights(detector, seed)
        still = detector.detector
        for blocks in (getattr(still.backbone, n) for n in still.backbone.stage_names):
            for block in blocks:
                (block.bn3 if hasattr(block, "bn3") else block.bn2).weight.fill_(0.25)
        images = [sample_image(cfg, seed + i) for i in range(2)]
        feature = detector.features(images[0])
        # Flow of a few pixels (not the hundreds random weights give), a scale map near 1.
        _, top = detector.motion.forward_with_top(torch.cat(images, dim=1))
        calibrate_logits(detector.motion.predict_flow.conv, top, 6.0 / (4.0 / cfg.flow.img_scale_factor * cfg.flow.flow_scale_factor))
        if cfg.scale_map:
            calibrate_logits(detector.scale_map.conv, top, 0.1)
            detector.scale_map.conv.bias.fill_(1.0)
        if cfg.has_impression:
            q = detector.fusion.quality
            calibrate_logits(q.conv3, torch.relu(q.conv2(torch.relu(q.conv1(feature)))), 1.0)
        if cfg.head == "rfcn":
            half = cfg.feat_channels // 2
            calibrate_logits(still.rpn.cls, feature[:, :half], 2.0)
            calibrate_logits(still.rfcn.cls, feature[:, half:], 3.0)
            calibrate_logits(still.rfcn.reg, feature[:, half:], 0.5)
        else:
            calibrate_logits(still.rpn_head.rpn_cls, torch.relu(still.rpn_head.rpn_conv(feature)), 2.0)
            proposals, _ = still.rpn_head(feature, images[0].shape[2], images[0].shape[3])
            x = still.roi_head.bbox_head.features(still.roi_features(feature, proposals))
            calibrate_logits(still.roi_head.bbox_head.fc_cls, x, 3.0)
            calibrate_logits(still.roi_head.bbox_head.fc_reg, x, 0.5)
        return detector

    def load_detector(self, config_name=None, checkpoint=None, seed: int = 0, overrides=None):
        """Also reads mmtracking DFF checkpoints (``detector.*`` and ``motion.*``
        keys, loaded as they are); the config is ``config_name`` or the dff_*
        config of the checkpoint's ResNet depth."""
        if checkpoint is not None:
            raw = peek_checkpoint(checkpoint)
            if is_mmtracking_checkpoint(raw):
                name = config_name or MMTRACKING_CONFIGS.get(resnet_depth_of(raw["state_dict"]))
                if name is None:
                    raise CheckpointError(f"checkpoint {checkpoint}: cannot tell its ResNet depth; give --config")
                width = stem_width(raw["state_dict"], PREFIX + "backbone.conv1.weight")
                cfg = self.config(name, with_stem_width(overrides, width))
                detector = ImpressionDetector(cfg).eval()
                load_state_dict_strict(detector, raw["state_dict"], source=f"mmtracking checkpoint {checkpoint}")
                return cfg, detector
            if isinstance(raw, dict) and raw.get("format") != FORMAT and "state_dict" in raw:
                raise CheckpointError(f"checkpoint {checkpoint} is neither a vidtrt checkpoint nor an mmtracking one (no detector.* keys)")
        return super().load_detector(config_name, checkpoint, seed, overrides)

    def stage_modules(self, detector: ImpressionDetector) -> dict[str, torch.nn.Module]:
        return {"key": ImpressionKeyStage(detector), "nonkey": ImpressionNonKeyStage(detector), "perframe": ImpressionPerFrameStage(detector)}

    def dynamic_axes(self, stage: str) -> dict:
        images = ("image", "prev_key_image", "key_image", "key_image_out")
        features = ("impression_in", "impression_out", "task_feature_in", "task_feature_out")
        return {**{n: {2: "H", 3: "W"} for n in images}, **{n: {2: "h", 3: "w"} for n in features}}

    @torch.no_grad()
    def stage_samples(self, detector: ImpressionDetector, seed: int = 0, height=None, width=None) -> dict[str, tuple]:
        """Real carried state: the previous key frame's image and feature, and
        the key stage's f_task for the non-key frame."""
        cfg = detector.cfg
        images = [sample_image(cfg, seed + i, height, width) for i in range(3)]
        if cfg.has_impression:
            key = (images[1], images[0], detector.features(images[0]), torch.ones(1), torch.tensor([cfg.memory_gate]))
        else:
            key = (images[1],)
        key_out = dict(zip(ImpressionKeyStage(detector).output_names, ImpressionKeyStage(detector)(*key)))
        return {"key": key, "nonkey": (images[2], images[1], key_out["task_feature_out"]), "perframe": (images[1],)}

    def state_specs(self, cfg: ImpressionConfig) -> list[StateSpec]:
        image, feature = [1, 3, "H", "W"], [1, cfg.feat_channels, "h", "w"]
        readers = ["nonkey.key_image"] + (["key.prev_key_image"] if cfg.has_impression else [])
        specs = [
            StateSpec("key_image", "key.key_image_out", readers, image, "float32"),
            StateSpec("task_feature", "key.task_feature_out", ["nonkey.task_feature_in"], feature, "float32"),
        ]
        if cfg.has_impression:
            specs.append(StateSpec("impression", "key.impression_out", ["key.impression_in"], feature, "float32"))
        return specs

    def video_reference(self, detector, images, schedule):
        return detect_video_reference(detector, images, schedule["key_interval"], schedule["key_placement"], schedule["memory_gate"])

    # ---------------------------------------------------------------- training

    def training_frames(self, cfg: ImpressionConfig, length: int, target: int, rng) -> list[int]:
        """(non-key frame, its key frame within an interval, the key frame an
        interval before; the key frame itself when there is none, which trains
        a video's first key frame: no impression yet)."""
        return key_frame_triplet(target, length, cfg.key_interval, rng)

    def training_loss(self, detector: ImpressionDetector, frames, generator=None) -> dict:
        """Task losses on the key frame's f_task (fused with the previous key
        frame's features warped to it, where the config has an impression) and
        on the non-key frame's f_task warped from the key frame, so N_feat, the
        flow net, the scale map and the quality net all train end to end (the
        paper's and DFF's training)."""
        target, key, previous = frames
        d, cfg = detector, detector.cfg
        task = d.features(key.image)
        if cfg.has_impression and previous is not key:
            impression = d.features(previous.image)  # the previous key frame's impression starts as its feature
            gate = torch.full((1,), float(cfg.memory_gate))
            task, _ = d.fuse(task, d.propagate(impression, key.image, previous.image), gate)
        nonkey = d.propagate(task, target.image, key.image)
        total: dict = {}
        for prefix, feature, frame in (("key_", task, key), ("", nonkey, target)):
            add_losses(total, _task_losses(d, feature, frame, generator), prefix)
        return total

METHOD = Impression()


def _task_losses(detector: ImpressionDetector, feature, frame, generator) -> dict:
    """N_task's RPN and head losses on one frame's feature, in the still
    detector's layout (R-FCN on channel halves, or mmdetection's Faster R-CNN)."""
    still, cfg = detector.detector, detector.cfg
    if isinstance(still, RfcnStillDetector):
        half = cfg.feat_channels // 2
        losses, proposals, valid = rpn_losses(still.rpn, feature[:, :half], frame.image, frame.targets, generator)
        head = lambda rois: still.rfcn(feature[:, half:], rois, impl=still.op_impl)  # noqa: E731
        layout = HeadLayout(BoxCoding(cfg.detection.box_weights))
    else:
        losses, proposals, valid = rpn_losses(still.rpn_head, feature, frame.image, frame.targets, generator)
        head = lambda rois: still.roi_head.bbox_head(still.roi_features(feature, rois))  # noqa: E731
        layout = HeadLayout(BoxCoding(cfg.detection.box_weights), background="last", deltas="per_class")
    return add_losses(losses, roi_head_losses(head, proposals, valid, frame.targets, layout, generator))
