"""MFSA (Multi-Focus / Single-Focus with Relation Propagation) as a registered method.

Stages: ``frame`` (N_feat, RPN, region features of one frame) runs once per
frame; ``batch`` (RPM over K frames' regions + classification/regression +
post-processing of all K frames) runs once per batch in Multi-Focus mode and
once per frame in Single-Focus mode; ``perframe`` (Faster R-CNN without RPM)
is the benchmark baseline. Nothing is carried between batches: the pipeline
assembles each batch from the frame stage's outputs. K is fixed at export.
"""

from __future__ import annotations

import torch

from ..models.losses import BoxCoding, HeadLayout, add_losses, head_loss, roi_head_losses, rpn_losses, sample_rois
from ..models.init import calibrate_logits, seeded_weights
from ..models.mfsa import MODES, MfsaBatchStage, MfsaConfig, MfsaDetector, MfsaFrameStage, PerFrameDetectorStage
from ..models.postprocess import DetectionConfig
from ..models.preprocess_config import PreprocessConfig
from ..models.rpn import RPNConfig
from .base import Method, ScheduleOption
from .common import nearby_frames, sample_image

CONFIGS = {
    # The paper's: Faster R-CNN R-101 (RPN after conv4, 300 proposals, NMS 0.7), D = 1024, K = 21.
    "mfsa_r101": MfsaConfig(name="mfsa_r101"),
    "mfsa_small": MfsaConfig(
        name="mfsa_small",
        depth=18,
        backbone_width=16,
        region_dim=64,
        relation_dim=32,
        roi_size=8,
        batch_frames=4,
        rpn=RPNConfig(anchor_sizes=(32.0, 64.0, 128.0), mid_channels=32, pre_nms=200, post_nms=16),
        detection=DetectionConfig(max_detections=10, pre_nms=300, score_threshold=0.02, nms_iou=0.5),
        preprocess=PreprocessConfig(short_side=128, max_long_side=224),
    ),
}


def single_focus_window(target: int, length: int, k: int) -> list[int]:
    """Frames of the relation matrix for ``target`` in Single-Focus mode: the K
    frames centred on it, shifted to stay inside the video (fewer when the
    video is shorter than K)."""
    start = min(max(target - k // 2, 0), max(length - k, 0))
    return list(range(start, min(start + k, length)))


@torch.no_grad()
def detect_video_reference(detector: MfsaDetector, images, k: int, mode: str):
    """The method over a whole video with no stage split (§2).

    Every frame goes through N_feat and the RPN once. Multi-Focus: frames in
    consecutive groups of K (the last group padded with invalid regions), one
    RPM + detection per group for all its frames. Single-Focus: per frame, RPM
    over the K frames centred on it, detections of that frame only.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    per_frame = [detector.frame(image) for image in images]
    size = torch.tensor([float(images[0].shape[2]), float(images[0].shape[3])])
    results = [None] * len(images)

    def run(frames: list[int]):
        proposals = torch.stack([per_frame[i][0] for i in frames])
        valid = torch.stack([per_frame[i][1] for i in frames])
        regions = torch.stack([per_frame[i][2] for i in frames])
        missing = k - len(frames)
        if missing:
            proposals = torch.cat([proposals, proposals.new_zeros(missing, *proposals.shape[1:])])
            valid = torch.cat([valid, valid.new_zeros(missing, *valid.shape[1:])])
            regions = torch.cat([regions, regions.new_zeros(missing, *regions.shape[1:])])
        return detector.batch(proposals, valid, regions, size)

    if mode == "multi":
        for start in range(0, len(images), k):
            group = list(range(start, min(start + k, len(images))))
            out = run(group)
            for j, index in enumerate(group):
                results[index] = tuple(o[j] for o in out)
    else:
        for target in range(len(images)):
            window = single_focus_window(target, len(images), k)
            out = run(window)
            j = window.index(target)
            results[target] = tuple(o[j] for o in out)
    return results


class Mfsa(Method):
    name = "mfsa"
    title = "MFSA: relation propagation over K frames' proposals, Multi-Focus (all K at once) or Single-Focus"
    config_class = MfsaConfig
    detector_class = MfsaDetector
    stages = {
        "frame": "N_feat + RPN + region features, once per frame",
        "batch": "RPM over K frames + classification/regression of all K",
        "perframe": "Faster R-CNN without RPM on every frame",
    }
    baseline_stage = "perframe"
    resnet_prefixes = {"backbone.": "", "res5.": "layer4."}  # res5 is ResNet's layer4
    pipeline = "mfsa:MfsaPipeline"
    paper_params = {"mfsa_r101": "65.3M (MFSA Tab. 3, multi-focus)"}
    schedule_options = (
        ScheduleOption("mode", str, "multi: consecutive batches of K detected at once; single: K frames centred on each", choices=MODES),
        ScheduleOption("batch_frames", int, "K, the frames one relation matrix spans", minimum=1, at_export=True, symbol="K"),
    )

    @property
    def configs(self):
        return CONFIGS

    @torch.no_grad()
    def seeded_detector(self, cfg: MfsaConfig, seed: int = 0) -> MfsaDetector:
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

    def stage_modules(self, detector: MfsaDetector) -> dict[str, torch.nn.Module]:
        return {"frame": MfsaFrameStage(detector), "batch": MfsaBatchStage(detector), "perframe": PerFrameDetectorStage(detector)}

    def dynamic_axes(self, stage: str) -> dict:
        return {"image": {2: "H", 3: "W"}} if stage in ("frame", "perframe") else {}

    @torch.no_grad()
    def stage_samples(self, detector: MfsaDetector, seed: int = 0, height=None, width=None) -> dict[str, tuple]:
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

    def video_reference(self, detector, images, schedule):
        return detect_video_reference(detector, images, schedule["batch_frames"], schedule["mode"])

    # ---------------------------------------------------------------- training

    def training_frames(self, cfg: MfsaConfig, length: int, target: int, rng) -> list[int]:
        """K frames around the target (the Single-Focus window's reach)."""
        return [target] + nearby_frames(target, length, cfg.batch_frames - 1, cfg.batch_frames, rng)

    def training_loss(self, detector: MfsaDetector, frames, generator=None) -> dict:
        """Each of the K frames: RPN loss and sampled RoIs; one relation matrix
        over all K frames' sampled regions (as at test time over their
        proposals); the head's losses on what it reads after RPM (R + R̂, or
        R̂ alone: ``relation_residual``), averaged over the frames.

        Plus the same head on each frame's own regions R (``frame_head_*``):
        the paper's basic detector is a trained Faster R-CNN, and R̂ is a
        weighted mean of R, so a head that reads R rightly is what RPM's
        weights can learn against (measured on the held-out set with R̂
        alone: 0.07 mAP without it, 0.33 with it and --init). It also makes
        the ``perframe`` baseline stage a trained detector (0.84)."""
        d = detector
        total: dict = {}
        layout = HeadLayout(BoxCoding(d.cfg.detection.box_weights), background="first", deltas="per_class")
        sampled_all, regions = [], []
        for frame in frames:
            feature = d.backbone(frame.image)
            losses, proposals, valid = rpn_losses(d.rpn, feature, frame.image, frame.targets, generator)
            add_losses(total, losses, weight=1.0 / len(frames))
            sampled = sample_rois(proposals, valid, frame.targets, generator=generator)
            sampled_all.append(sampled)
            r = d.regions(feature, sampled.rois)
            regions.append(r)
            own = head_loss(d.cls(r), d.reg(r), sampled, layout)
            add_losses(total, {f"frame_{k}": v for k, v in own.items()}, weight=1.0 / len(frames))
        counts = [len(r) for r in regions]
        stacked = torch.cat(regions)
        refined = d.head_input(stacked, torch.ones(len(stacked), dtype=torch.bool)).split(counts)
        for sampled, x in zip(sampled_all, refined):
            add_losses(total, head_loss(d.cls(x), d.reg(x), sampled, layout), weight=1.0 / len(frames))
        return total

METHOD = Mfsa()
