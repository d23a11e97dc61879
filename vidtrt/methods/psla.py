"""PSLA (Progressive Sparse Local Attention) as a registered method.

Stages: ``key`` (N_f, RFU, N_t) and ``nonkey`` (N_l, Transform Net, DenseFT,
N_t); ``perframe`` (N_f + N_t on every frame) is the baseline benchmarks
compare against and is not part of the schedule. State: F_t (``temporal``)
and its embedding f(F_t) (``temporal_key``), produced by ``key`` and read by
both stages. Schedule: a key frame every ``key_interval`` frames, placed
first or in the middle of its segment (``key_index``).
"""

from __future__ import annotations

import torch

from ..core.bundle import StateSpec
from ..models.init import calibrate_logits, seeded_weights
from ..models.postprocess import DetectionConfig
from ..models.preprocess_config import PreprocessConfig
from ..models.key_frames import KEY_PLACEMENTS, key_index
from ..models.losses import BoxCoding, HeadLayout, add_losses, roi_head_losses, rpn_losses
from ..models.psla import PerFrameStage, PslaConfig, PslaDetector, PslaKeyStage, PslaNonKeyStage
from ..models.rfcn import RFCNConfig
from ..models.rpn import RPNConfig
from .base import Method, ScheduleOption
from .common import key_frame_triplet, sample_image

CONFIGS = {
    # The paper's: ResNet-101 (dilated res5), R-FCN, d = 4, l = 10, key frame in the middle.
    "psla_r101_rfcn": PslaConfig(name="psla_r101_rfcn"),
    # Small and fast for tests and the demo: ResNet-18, narrow heads, small input.
    "psla_small": PslaConfig(
        name="psla_small",
        depth=18,
        backbone_width=16,
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


@torch.no_grad()
def detect_video_reference(detector: PslaDetector, images, interval: int, placement: str):
    """The paper's inference over a whole video, with no stage split (§3, §3.5).

    The video is cut into segments of ``interval`` frames (the last may be
    shorter); in each, the key frame goes through N_f and RFU updates F_t
    (the first key frame starts F_t), then every other frame of the segment
    goes through N_l and DenseFT from that F_t. Returns per-frame
    (boxes, scores, labels, valid) in frame order.
    """
    results = [None] * len(images)
    temporal = None
    for start in range(0, len(images), interval):
        segment = list(range(start, min(start + interval, len(images))))
        key = segment[key_index(len(segment), interval, placement)]
        high = detector.high_level(images[key])
        if temporal is None:
            temporal = high
        else:
            temporal = detector.rfu(high, temporal, detector.embed_temporal(temporal))
        results[key] = detector.detect(temporal, images[key])
        temporal_key = detector.embed_temporal(temporal)
        for index in segment:
            if index != key:
                feature = detector.dense_ft(detector.low_level(images[index]), temporal, temporal_key)
                results[index] = detector.detect(feature, images[index])
    return results


class Psla(Method):
    name = "psla"
    title = "PSLA: progressive sparse local attention (key frames N_f + RFU, others N_l + DenseFT)"
    config_class = PslaConfig
    detector_class = PslaDetector
    stages = {
        "key": "N_f + RFU + N_t",
        "nonkey": "N_l + Transform Net + DenseFT + N_t",
        "perframe": "N_f + N_t on every frame",
    }
    baseline_stage = "perframe"
    stage_titles = {"key": "key stage", "nonkey": "non-key stage", "perframe": "per-frame N_f"}
    pipeline = "psla:PslaPipeline"
    paper_params = {"psla_r101_rfcn": "63.7M (PSLA Tab. 1, +RFU+DenseFT)"}
    schedule_options = (
        ScheduleOption("key_interval", int, "key frame interval l (segment length)", minimum=1),
        ScheduleOption("key_placement", str, "key frame of a segment: first (lowest latency) or middle (the paper's)", choices=KEY_PLACEMENTS),
    )

    @property
    def configs(self):
        return CONFIGS

    @torch.no_grad()
    def seeded_detector(self, cfg: PslaConfig, seed: int = 0) -> PslaDetector:
        detector = PslaDetector(cfg).eval()
        seeded_weights(detector, seed)
        for block_stage in (getattr(detector.backbone, n) for n in detector.backbone.stage_names):
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

    def stage_modules(self, detector: PslaDetector) -> dict[str, torch.nn.Module]:
        return {"key": PslaKeyStage(detector), "nonkey": PslaNonKeyStage(detector), "perframe": PerFrameStage(detector)}

    def dynamic_axes(self, stage: str) -> dict:
        axes = {"image": {2: "H", 3: "W"}}
        for name in ("temporal_in", "temporal_key_in", "temporal_out", "temporal_key_out"):
            axes[name] = {2: "h", 3: "w"}
        module = {"key": PslaKeyStage, "nonkey": PslaNonKeyStage, "perframe": PerFrameStage}[stage]
        names = set(module.input_names) | set(module.output_names)
        return {k: v for k, v in axes.items() if k in names}

    @torch.no_grad()
    def stage_samples(self, detector: PslaDetector, seed: int = 0, height=None, width=None) -> dict[str, tuple]:
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

    def state_specs(self, cfg: PslaConfig) -> list[StateSpec]:
        return [
            StateSpec("temporal", "key.temporal_out", ["key.temporal_in", "nonkey.temporal_in"], [1, cfg.feat_channels, "h", "w"], "float32"),
            StateSpec(
                "temporal_key", "key.temporal_key_out", ["key.temporal_key_in", "nonkey.temporal_key_in"],
                [1, cfg.embed_channels, "h", "w"], "float32",
            ),
        ]  # fmt: skip

    def video_reference(self, detector, images, schedule):
        return detect_video_reference(detector, images, schedule["key_interval"], schedule["key_placement"])

    # ---------------------------------------------------------------- training

    def training_frames(self, cfg: PslaConfig, length: int, target: int, rng) -> list[int]:
        """(non-key frame, its key frame, the key frame before): the key frame
        within an interval of the target, the previous one an interval earlier,
        so RFU, DenseFT and both task paths train. A key frame in the first
        interval has none before it: it is given as its own previous frame, and
        trains the video's first key frame (F_t = N_f's feature, no RFU)."""
        return key_frame_triplet(target, length, cfg.key_interval, rng)

    def training_loss(self, detector: PslaDetector, frames, generator=None) -> dict:
        """RPN + R-FCN losses on the key frame's F_t (after RFU from the previous
        key frame) and on the non-key frame's DenseFT feature from that F_t."""
        target, key, previous = frames
        d = detector
        temporal = d.high_level(key.image)
        if previous is not key:
            prev_high = d.high_level(previous.image)
            temporal = d.rfu(temporal, prev_high, d.embed_temporal(prev_high))
        nonkey = d.dense_ft(d.low_level(target.image), temporal, d.embed_temporal(temporal))
        layout = HeadLayout(BoxCoding(d.cfg.detection.box_weights))
        total: dict = {}
        for prefix, feature, frame in (("key_", temporal, key), ("", nonkey, target)):
            losses, proposals, valid = rpn_losses(d.rpn, feature, frame.image, frame.targets, generator)
            add_losses(total, losses, prefix)
            head = lambda rois, feature=feature: d.rfcn(feature, rois, impl=d.op_impl)  # noqa: E731
            add_losses(total, roi_head_losses(head, proposals, valid, frame.targets, layout, generator), prefix)
        return total


METHOD = Psla()
