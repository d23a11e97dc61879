"""MEGA (Memory Enhanced Global-Local Aggregation) as a registered method.

Stages: ``frame`` (backbone C4, RPN, res5 on the map, box features of the
proposals) runs once per frame; ``head`` (global aggregation, the local
relation stages over the local pool and the Long Range Memory, the global
residual stages, the predictor and post-processing) runs once per key
frame. Nothing is carried inside a graph: the pipeline holds the local pool,
the global pool and the memory as fixed-size ring buffers with validity
masks and assembles each ``head`` call from them (pools in window order,
memory oldest first, empty slots last and masked); ``head`` returns what
each memory level gains, which the pipeline writes into its ring.

Schedule: ``mode`` offline (T_l frames centred on the key frame, tau frames
of look-ahead; the global pool is a seeded shuffle of the whole video) or
online (the T_l frames ending at the key frame; the global pool a seeded
uniform sample of the frames seen so far); T_l, T_g and T_m are fixed at
export (they are graph shapes); the ``shuffle_seed``.

``load_detector`` also reads mega.pytorch checkpoints (``{"model": ...}``,
maskrcnn-benchmark names, optionally ``module.``-prefixed).
"""

from __future__ import annotations

from collections import deque

import torch

from ..models.checkpoint import FORMAT, CheckpointError
from ..models.losses import BoxCoding, HeadLayout, add_losses, head_loss, roi_head_losses, rpn_losses, sample_rois
from ..models.init import calibrate_logits, seeded_weights
from ..models.mega import (
    MODES,
    MegaConfig,
    MegaDetector,
    MegaFrameStage,
    MegaHeadStage,
    OnlineGlobalPool,
    local_window,
    offline_global_pool,
)
from ..models.mega_checkpoint import is_mega_checkpoint, load_mega_checkpoint, resnet_depth_of
from ..models.resnet import stem_width
from ..models.postprocess import DetectionConfig
from ..models.preprocess_config import PreprocessConfig
from ..models.rpn import RPNConfig
from .base import Method, ScheduleOption
from .common import nearby_frames, peek_checkpoint, sample_image, with_stem_width

CONFIGS = {
    # mega.pytorch's vid_R_101_C4_MEGA_1x: R-101-C4, 300 proposals (75 / 15 for references),
    # T_l = 25 (tau = 12), T_g = 10, T_m = 25, 3 local + 1 + 1 global relation stages.
    "mega_r101": MegaConfig(name="mega_r101"),
    # The paper's base model: local and global aggregation, no Long Range Memory.
    "mega_base_r101": MegaConfig(name="mega_base_r101", memory=False),
    "mega_small": MegaConfig(
        name="mega_small",
        depth=18,
        backbone_width=16,
        rpn=RPNConfig(anchor_sizes=(32.0, 64.0, 128.0), mid_channels=32, pre_nms=200, post_nms=16),
        ref_proposals=8,
        dis_ratio=0.25,
        feat_dim=32,
        embed_dim=16,
        groups=4,
        local_frames=5,
        global_frames=3,
        memory_frames=4,
        detection=DetectionConfig(score_threshold=0.02, nms_iou=0.5, max_detections=10, box_weights=(10.0, 10.0, 5.0, 5.0)),
        preprocess=PreprocessConfig(short_side=128, max_long_side=192, mean=(102.9801, 115.9465, 122.7717), std=(1.0, 1.0, 1.0)),
    ),
}


def _stack_slots(parts, count: int, rows: int, like):
    """``count`` slots of the first ``rows`` rows of each frame output in
    ``parts`` (None = an empty slot), as (proposals, valid, features)."""
    proposals, valid, features = like
    out = ([], [], [])
    for part in parts:
        if part is None:
            part = (torch.zeros_like(proposals), torch.zeros_like(valid), torch.zeros_like(features))
        for dest, tensor in zip(out, part):
            dest.append(tensor[:rows])
    for dest, tensor in zip(out, like):
        while len(dest) < count:
            dest.append(torch.zeros_like(tensor[:rows]))
    return tuple(torch.stack(d) for d in out)


def memory_inputs(memory, cfg: MegaConfig, like) -> list[tuple]:
    """Per level (proposals [T_m, R_i, 4], valid [T_m, R_i], features [T_m, R_i, D]):
    the level's entries oldest first, then empty slots."""
    levels = []
    for level, entries in enumerate(memory):
        rows = cfg.level_proposals(level)
        features = like[2][:rows]
        template = (like[0][:rows], like[1][:rows], features)
        levels.append(_stack_slots([(p, v, f) for p, v, f in entries], cfg.memory_frames, rows, template))
    return levels


@torch.no_grad()
def detect_video_reference(detector: MegaDetector, images, mode: str, seed: int):
    """MEGA over a whole video with no stage split: the released code's test
    procedure (Algorithm 1) with T_l, T_g, T_m from the detector's config.

    Every frame's frame part runs once. For each key frame k in order: its
    local pool (``local_window``: the video's first / last frame repeated at
    the ends), its global pool (offline: ``offline_global_pool``; online: a
    seeded reservoir updated with frame k first), the memory (per level the
    last T_m entries); then aggregation and detection, and every memory level
    gains the oldest local frame's references of its stage. Returns per-frame
    (boxes, scores, labels, valid) in frame order.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    cfg = detector.cfg
    per_frame = [detector.frame(image) for image in images]
    size = torch.tensor([float(images[0].shape[2]), float(images[0].shape[3])])
    memory = [deque(maxlen=cfg.memory_frames) for _ in range(cfg.memory_levels)]
    online_pool = OnlineGlobalPool(cfg.global_frames, seed)
    results = []
    for k in range(len(images)):
        if mode == "online":
            online_pool.add(k)
            global_frames = online_pool.slots
        else:
            global_frames = offline_global_pool(k, len(images), cfg.global_frames, seed)
        window = local_window(k, len(images), cfg.local_frames, mode)
        like = per_frame[k]
        local = _stack_slots([per_frame[f] for f in window], cfg.local_frames, cfg.ref_proposals, like)
        _, global_valid, global_features = _stack_slots(
            [None if f is None else per_frame[f] for f in global_frames], cfg.global_frames, cfg.ref_proposals, like
        )
        features, updates = detector.aggregate(*like, *local, global_valid, global_features, memory_inputs(memory, cfg, like))
        results.append(detector.detect(size, like[0], like[1], features))
        for level, update in enumerate(updates):
            rows = cfg.level_proposals(level)
            memory[level].append((local[0][0, :rows], local[1][0, :rows], update))
    return results


class Mega(Method):
    name = "mega"
    title = "MEGA: global and local aggregation with a Long Range Memory (mega.pytorch checkpoints)"
    config_class = MegaConfig
    detector_class = MegaDetector
    stages = {
        "frame": "backbone C4 + RPN + res5 + box features, once per frame",
        "head": "global + local relation stages over the pools and the memory + detection of one key frame",
    }
    pipeline = "mega:MegaPipeline"
    resnet_prefixes = {"backbone.body.": "", "roi_heads.box.feature_extractor.head.": ""}  # C4 body; res5 head
    paper_params = {"mega_r101": "≈172.7M, 578 keys (mega.pytorch MEGA R-101 checkpoint)"}
    schedule_options = (
        ScheduleOption("mode", str, "offline: looks tau frames ahead, global pool from the whole video; online: past frames only", choices=MODES),
        ScheduleOption("local_frames", int, "T_l, frames of the local pool", minimum=1, at_export=True, symbol="T_l"),
        ScheduleOption("global_frames", int, "T_g, frames of the global pool", minimum=1, at_export=True, symbol="T_g"),
        ScheduleOption("memory_frames", int, "T_m, frames of the Long Range Memory", minimum=1, at_export=True, symbol="T_m"),
        ScheduleOption("shuffle_seed", int, "seed of the global pool's shuffle (offline) or sample (online)", minimum=0),
    )

    @property
    def configs(self):
        return CONFIGS

    @torch.no_grad()
    def seeded_detector(self, cfg: MegaConfig, seed: int = 0) -> MegaDetector:
        detector = MegaDetector(cfg).eval()
        seeded_weights(detector, seed)
        g = torch.Generator().manual_seed(seed + 1)
        ext = detector.extractor
        blocks = [b for n in detector.backbone.body.stage_names for b in getattr(detector.backbone.body, n)] + list(ext.head.layer4)
        for block in blocks:
            (block.bn3 if hasattr(block, "bn3") else block.bn2).weight.fill_(0.25)
        for u in list(ext.l_us) + list(ext.g_us):
            u.copy_(torch.randn(u.shape, generator=g) * 0.01)
        # Geometric weights well above 0, so that log(w + 1e-6) stays far from its steep end.
        for wg in ext.l_Wgs:
            wg.weight.mul_(0.05)
            wg.bias.fill_(1.0)
        image = sample_image(cfg, seed)
        c4 = detector.backbone.body(image)
        rpn_hidden = torch.relu(detector.rpn.head.conv(c4))
        calibrate_logits(detector.rpn.head.cls_logits, rpn_hidden, 2.0)
        calibrate_logits(detector.rpn.head.bbox_pred, rpn_hidden, 0.2)  # proposals near their anchors
        proposals, _ = detector.rpn(c4, image.shape[2], image.shape[3])
        calibrate_logits(ext.l_fcs[0], ext.pooled(c4, proposals), 1.0)  # box features of unit scale
        outputs = detector.frame(image)
        local = _stack_slots([outputs] * cfg.local_frames, cfg.local_frames, cfg.ref_proposals, outputs)
        global_in = _stack_slots([outputs] * cfg.global_frames, cfg.global_frames, cfg.ref_proposals, outputs)[1:]
        memory = memory_inputs([[] for _ in range(cfg.memory_levels)], cfg, outputs)
        features, _ = detector.aggregate(*outputs, *local, *global_in, memory)
        predictor = detector.roi_heads.box.predictor
        calibrate_logits(predictor.cls_score, features, 3.0)
        calibrate_logits(predictor.bbox_pred, features, 0.5)
        return detector

    def load_detector(self, config_name=None, checkpoint=None, seed: int = 0, overrides=None):
        """Also reads mega.pytorch checkpoints; their config is ``config_name``
        or mega_r101 (MEGA and its base model share every key)."""
        if checkpoint is not None:
            raw = peek_checkpoint(checkpoint)
            if is_mega_checkpoint(raw):
                depth = resnet_depth_of(raw["model"])
                name = config_name or ("mega_r101" if depth == 101 else None)
                if name is None:
                    raise CheckpointError(f"checkpoint {checkpoint}: a ResNet-{depth or '?'} mega.pytorch checkpoint; give --config")
                stem = {k.removeprefix("module."): v for k, v in raw["model"].items() if k.endswith("stem.conv1.weight")}
                width = stem_width(stem, "backbone.body.stem.conv1.weight")
                cfg = self.config(name, with_stem_width(overrides, width))
                detector = MegaDetector(cfg).eval()
                load_mega_checkpoint(detector, raw, source=f"mega.pytorch checkpoint {checkpoint}")
                return cfg, detector
            if isinstance(raw, dict) and raw.get("format") != FORMAT and "model" in raw:
                raise CheckpointError(f"checkpoint {checkpoint} is neither a vidtrt checkpoint nor a mega.pytorch one (no backbone.body.* keys)")
        return super().load_detector(config_name, checkpoint, seed, overrides)

    def stage_modules(self, detector: MegaDetector) -> dict[str, torch.nn.Module]:
        return {"frame": MegaFrameStage(detector), "head": MegaHeadStage(detector)}

    def dynamic_axes(self, stage: str) -> dict:
        return {"image": {2: "H", 3: "W"}} if stage == "frame" else {}

    @torch.no_grad()
    def stage_samples(self, detector: MegaDetector, seed: int = 0, height=None, width=None) -> dict[str, tuple]:
        """Pools from three frames' real outputs with empty slots, and a memory
        half filled with real updates."""
        cfg = detector.cfg
        images = [sample_image(cfg, seed + i, height, width) for i in range(3)]
        outs = [detector.frame(image) for image in images]
        key = outs[2]
        local = _stack_slots([outs[i % 3] for i in range(cfg.local_frames)], cfg.local_frames, cfg.ref_proposals, key)
        global_frames = [outs[i % 2] for i in range(max(cfg.global_frames - 1, 1))]
        global_in = _stack_slots(global_frames, cfg.global_frames, cfg.ref_proposals, key)[1:]
        memory = [[] for _ in range(cfg.memory_levels)]
        _, updates = detector.aggregate(*key, *local, *global_in, memory_inputs(memory, cfg, key))
        for level, update in enumerate(updates):
            rows = cfg.level_proposals(level)
            for _ in range(max(cfg.memory_frames // 2, 1)):
                memory[level].append((local[0][0, :rows], local[1][0, :rows], update))
        size = torch.tensor([float(images[0].shape[2]), float(images[0].shape[3])])
        head = (size, *key, *local, *global_in, *[t for level in memory_inputs(memory, cfg, key) for t in level])
        return {"frame": (images[0],), "head": head}

    def video_reference(self, detector, images, schedule):
        cfg = detector.cfg
        for option in ("local_frames", "global_frames", "memory_frames"):
            if schedule[option] != getattr(cfg, option):
                raise ValueError(f"mega: {option} is fixed by the detector's config ({getattr(cfg, option)}), got {schedule[option]}")
        return detect_video_reference(detector, images, schedule["mode"], schedule["shuffle_seed"])

    # ---------------------------------------------------------------- training

    # mega.pytorch trains with 2 local and 2 global reference frames (MEGA.REF_NUM_LOCAL / REF_NUM_GLOBAL).
    TRAIN_LOCAL, TRAIN_GLOBAL = 2, 2

    def training_frames(self, cfg: MegaConfig, length: int, target: int, rng) -> list[int]:
        """(target, local references within the local window's reach, global references from anywhere)."""
        local = nearby_frames(target, length, self.TRAIN_LOCAL, max(1, cfg.local_frames // 2), rng)
        return [target] + local + [int(rng.integers(length)) for _ in range(self.TRAIN_GLOBAL)]

    def training_loss(self, detector: MegaDetector, frames, generator=None) -> dict:
        """RPN and head losses on the target; its sampled RoIs aggregated with
        the local and global references' first ``ref_proposals`` proposals
        (references computed without gradient) through the local relation
        stages and the global update, with no long-range memory, as
        mega.pytorch trains."""
        d, cfg = detector, detector.cfg
        target = frames[0]
        c4 = d.backbone.body(target.image)
        losses, proposals, valid = rpn_losses(d.rpn, c4, target.image, target.targets, generator)
        sampled = sample_rois(proposals, valid, target.targets, generator=generator)
        features = d.extractor.box_features(c4, sampled.rois)
        with torch.no_grad():
            refs = [d.frame(f.image) for f in frames[1:]]
        like = refs[0]
        # The target's own first proposals lead the local pool, as at test time (its local window
        # holds it) and as mega.pytorch trains (the current frame is the first local reference).
        own_rows = proposals[: cfg.ref_proposals]
        own = (own_rows, valid[: cfg.ref_proposals], d.extractor.box_features(c4, own_rows))
        local = _stack_slots([own] + refs[: self.TRAIN_LOCAL], self.TRAIN_LOCAL + 1, cfg.ref_proposals, like)
        _, global_valid, global_features = _stack_slots(refs[self.TRAIN_LOCAL :], self.TRAIN_GLOBAL, cfg.ref_proposals, like)
        x, _ = d.aggregate(sampled.rois, torch.ones(len(sampled.rois), dtype=torch.bool), features, *local, global_valid, global_features)
        predictor = d.roi_heads.box.predictor
        layout = HeadLayout(BoxCoding(cfg.detection.box_weights, pixel_offset=1), background="first", deltas="per_class_with_background")
        return add_losses(losses, head_loss(predictor.cls_score(x), predictor.bbox_pred(x), sampled, layout))

METHOD = Mega()
