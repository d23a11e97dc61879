"""MEGA: Memory Enhanced Global-Local Aggregation (Chen et al., CVPR 2020),
laid out as the released code (Scalsol/mega.pytorch, maskrcnn-benchmark).

Module names are mega.pytorch's state_dict keys, so a checkpoint loads key
for key (models/mega_checkpoint.py strips ``module.`` and maps the stem):

- ``backbone.body``: ResNet C4 (layer1-layer3), MSRA style (stride on the
  first 1x1 conv), frozen BN without eps (maskrcnn-benchmark's).
- ``rpn.head.{conv, cls_logits, bbox_pred}`` and
  ``rpn.anchor_generator.cell_anchors.0``: maskrcnn-benchmark's RPN (Detectron
  anchors, +1 box arithmetic, sigmoid objectness, NMS 0.7).
- ``roi_heads.box.feature_extractor``: ``head.layer4`` (res5, stride 1,
  dilation 2) run on the *whole* C4 map, RoIAlign 7x7 (aligned False) of the
  proposals on its output, then ``l_fcs.0`` + ReLU: a frame's box features.
  N_l = ``stages`` location-based relation modules (``l_Wgs``, ``l_Wqs``,
  ``l_Wks``, ``l_Wvs``, ``l_us``; ``l_fcs.i`` between them) and
  ``global_res_stages + 1`` location-free ones (``g_*``).
- ``roi_heads.box.predictor.{cls_score, bbox_pred}``: background first,
  class-specific deltas (weights 10, 10, 5, 5).

A frame's part (``frame``: backbone, RPN, res5, box features) runs once per
frame. The key frame's part (``aggregate`` and ``detect``) follows the
released ``MEGAFeatureExtractor._forward_test``: the global pool's features
aggregate into the key frame's and the local pool's (``update_lm``); then
``stages`` relation stages run over the local pool and the Long Range
Memory. The queries of stage 0 and 1 are the key frame's proposals and the
first ``dis_proposals`` of every local frame; the last stage's are the key
frame's alone. Memory level i caches the references of stage i of the
oldest local frame (slot 0) and is read, from the next frame on, as
further references of stage i. Then ``global_res_stages`` more global
aggregations and the predictor.

Departures, all forced by static shapes: pre-NMS TopK capped at 3840
(upstream 6000) in the RPN and in the R-CNN's (box, class) pairs; NMS IoU
without maskrcnn-benchmark's +1 in the areas; RoIAlign with a fixed
sampling ratio (upstream 0 = adaptive, a data-dependent loop count);
missing proposals and frames are masked out of every softmax instead of
being absent.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from . import boxes as box_ops
from .classes import IMAGENET_VID_CLASSES
from .config_io import config_from_dict
from .postprocess import DetectionConfig, select_detections
from .preprocess_config import PreprocessConfig
from .resnet import STAGE_BLOCKS, ResNet, resnet_stage, stage_channels
from .roi_align import roi_align
from .rpn import RPNConfig
from .troi import mmdet_grid_anchors

MODES = ("offline", "online")
DETECTIONS = ("boxes", "scores", "labels", "valid")
# maskrcnn-benchmark's BoxCoder clamp of dw, dh.
MASKRCNN_BBOX_CLAMP = math.log(1000.0 / 16)


@dataclass
class MegaConfig:
    name: str
    depth: int = 101
    backbone_width: int = 64  # the ResNet stem's channels (64 as published; narrower in small configs)
    # RPN: maskrcnn-benchmark's R-101-C4 (anchors 64..512 x 0.5, 1, 2 at stride 16, NMS 0.7),
    # 6000 pre-NMS capped at TensorRT's 3840, 300 proposals on every frame.
    rpn: RPNConfig = field(
        default_factory=lambda: RPNConfig(anchor_sizes=(64.0, 128.0, 256.0, 512.0), mid_channels=1024, pre_nms=3840, post_nms=300, nms_iou=0.7)
    )
    ref_proposals: int = 75  # a reference frame's proposals (REF_POST_NMS_TOP_N; the paper's 80)
    dis_ratio: float = 0.2  # the later stages keep ref_proposals * dis_ratio (15; the paper's 20)
    roi_size: int = 7
    sampling_ratio: int = 2
    feat_dim: int = 1024  # MLP_HEAD_DIM
    embed_dim: int = 64  # position embedding
    groups: int = 16
    stages: int = 3  # N_l, location-based relation stages
    global_res_stages: int = 1  # global aggregations after the local stages
    memory: bool = True  # the Long Range Memory (False: the paper's base model)
    local_frames: int = 25  # T_l (offline: tau = 12 frames of look-ahead)
    global_frames: int = 10  # T_g
    memory_frames: int = 25  # T_m (mega.pytorch's ALL_FRAME_INTERVAL)
    mode: str = "offline"
    shuffle_seed: int = 0  # the global pool's shuffle (offline) or sample (online)
    detection: DetectionConfig = field(
        default_factory=lambda: DetectionConfig(score_threshold=0.001, nms_iou=0.5, max_detections=300, box_weights=(10.0, 10.0, 5.0, 5.0))
    )
    # maskrcnn-benchmark: BGR 0-255 minus its means, no std.
    preprocess: PreprocessConfig = field(
        default_factory=lambda: PreprocessConfig(mean=(102.9801, 115.9465, 122.7717), std=(1.0, 1.0, 1.0), to_rgb=False)
    )
    class_names: tuple[str, ...] = IMAGENET_VID_CLASSES

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        for name in ("local_frames", "global_frames", "memory_frames", "ref_proposals", "stages"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.stages < 2:
            raise ValueError(f"stages must be >= 2 (the last stage reads the others' reduced proposals), got {self.stages}")
        if not 1 <= self.dis_proposals <= self.ref_proposals:
            raise ValueError(f"ref_proposals * dis_ratio must keep 1..{self.ref_proposals} proposals, got {self.dis_proposals}")
        if self.ref_proposals > self.rpn.post_nms:
            raise ValueError(f"ref_proposals ({self.ref_proposals}) must be <= rpn.post_nms ({self.rpn.post_nms})")
        if self.feat_dim % self.groups:
            raise ValueError(f"feat_dim ({self.feat_dim}) must divide by groups ({self.groups})")
        if self.embed_dim % 8:
            raise ValueError(f"embed_dim must be a multiple of 8, got {self.embed_dim}")
        if self.shuffle_seed < 0:
            raise ValueError(f"shuffle_seed must be >= 0, got {self.shuffle_seed}")

    @property
    def dis_proposals(self) -> int:
        return int(self.ref_proposals * self.dis_ratio)

    @property
    def num_classes(self) -> int:
        return len(self.class_names) + 1

    @property
    def memory_levels(self) -> int:
        return self.stages if self.memory else 0

    def level_proposals(self, level: int) -> int:
        """Proposals per frame in memory level ``level`` (the references of stage ``level``)."""
        return self.ref_proposals if level == 0 else self.dis_proposals

    def as_dict(self) -> dict:
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "MegaConfig":
        return config_from_dict(cls, d)


# ------------------------------------------------------------ maskrcnn-benchmark boxes


def detectron_cell_anchors(stride: int, sizes, ratios) -> torch.Tensor:
    """[A, 4] anchors of one cell as Detectron's generate_anchors (and
    maskrcnn-benchmark): a (stride x stride) base box [0, 0, stride - 1,
    stride - 1], for each ratio its rounded width/height, for each size its
    scale, in +1 box arithmetic. Ordered ratio-major, as the RPN's outputs."""
    anchors = []
    ctr = 0.5 * (stride - 1)
    for ratio in ratios:
        size_ratio = stride * stride / ratio
        ws = round(math.sqrt(size_ratio))
        hs = round(ws * ratio)
        for size in sizes:
            scale = size / stride
            w, h = ws * scale, hs * scale
            anchors.append([ctr - 0.5 * (w - 1), ctr - 0.5 * (h - 1), ctr + 0.5 * (w - 1), ctr + 0.5 * (h - 1)])
    return torch.tensor(anchors, dtype=torch.float32)


def maskrcnn_decode(boxes: torch.Tensor, deltas: torch.Tensor, weights) -> torch.Tensor:
    """maskrcnn-benchmark's BoxCoder.decode (TO_REMOVE = 1): [K, 4] boxes, [K, 4] deltas."""
    widths = boxes[:, 2] - boxes[:, 0] + 1
    heights = boxes[:, 3] - boxes[:, 1] + 1
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    dx, dy = deltas[:, 0] / weights[0], deltas[:, 1] / weights[1]
    dw = (deltas[:, 2] / weights[2]).clamp(max=MASKRCNN_BBOX_CLAMP)
    dh = (deltas[:, 3] / weights[3]).clamp(max=MASKRCNN_BBOX_CLAMP)
    pcx, pcy = dx * widths + ctr_x, dy * heights + ctr_y
    pw, ph = torch.exp(dw) * widths, torch.exp(dh) * heights
    return torch.stack([pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw - 1, pcy + 0.5 * ph - 1], dim=1)


def maskrcnn_clip(boxes: torch.Tensor, height, width) -> torch.Tensor:
    """BoxList.clip_to_image: x in [0, W - 1], y in [0, H - 1]."""
    return box_ops.clip(boxes, torch.as_tensor(height, dtype=boxes.dtype) - 1, torch.as_tensor(width, dtype=boxes.dtype) - 1)


def maskrcnn_detect(rois, roi_valid, class_logits, box_deltas, image_height, image_width, cfg: DetectionConfig):
    """maskrcnn-benchmark's PostProcessor: softmax with background first,
    class-specific +1 deltas, clip, score > threshold, class-wise NMS, the
    best ``max_detections``. → boxes [D, 4], scores [D], labels [D] (0-based,
    background excluded), valid [D]."""
    num_classes = class_logits.shape[1] - 1
    probs = torch.softmax(class_logits, dim=1)[:, 1:]
    per_class_rois = rois[:, None, :].expand(-1, num_classes, 4).reshape(-1, 4)
    decoded = maskrcnn_decode(per_class_rois, box_deltas[:, 4:].reshape(-1, 4), cfg.box_weights)
    candidate_boxes = maskrcnn_clip(decoded, image_height, image_width)
    return select_detections(candidate_boxes, probs, roi_valid, cfg)


# ------------------------------------------------------------ modules


POSITION_WEIGHT_EPS = 1e-6  # mega.pytorch: log(relu(W_G·embedding) + 1e-6)
# Training only: the gradient of log(w + eps) is taken as if w were at least this.
POSITION_GRADIENT_FLOOR = 1e-2


class _BoundedGradientLog(torch.autograd.Function):
    """log(w + eps) with its gradient 1 / max(w + eps, floor): the same values,
    a bounded gradient. A position weight just above the ReLU's kink gives
    1 / (w + 1e-6), up to 1e6, and one such spike, clipped with the rest of
    the step's gradient, shrinks every other update; measured on mega_small,
    W_G's gradient norm jumped 40-fold every few hundred steps and the head's
    losses rose until training diverged."""

    @staticmethod
    def forward(ctx, weight):
        ctx.save_for_backward(weight)
        return torch.log(weight + POSITION_WEIGHT_EPS)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        return grad / (weight + POSITION_WEIGHT_EPS).clamp(min=POSITION_GRADIENT_FLOOR)


def log_position_weight(weight: torch.Tensor) -> torch.Tensor:
    """log(weight + 1e-6) as mega.pytorch; under autograd its gradient is bounded (training)."""
    if torch.is_grad_enabled() and weight.requires_grad:
        return _BoundedGradientLog.apply(weight)
    return torch.log(weight + POSITION_WEIGHT_EPS)


class _Namespace(nn.Module):
    """A module that only groups children, to reproduce upstream key prefixes."""


class _CellAnchors(nn.Module):
    """maskrcnn-benchmark's BufferList: the anchors are buffer ``0``."""

    def __init__(self, anchors: torch.Tensor):
        super().__init__()
        self.register_buffer("0", anchors)

    @property
    def anchors(self) -> torch.Tensor:
        return getattr(self, "0")


class MaskrcnnRPN(nn.Module):
    """``rpn.head.{conv, cls_logits, bbox_pred}``, ``rpn.anchor_generator.cell_anchors.0``."""

    delta_pixel_offset = 1  # box widths x2 - x1 + 1 in its decoder (what training encodes with)

    def __init__(self, in_channels: int, cfg: RPNConfig):
        super().__init__()
        self.cfg = cfg
        a = cfg.num_anchors
        self.head = _Namespace()
        self.head.conv = nn.Conv2d(in_channels, cfg.mid_channels, 3, padding=1)
        self.head.cls_logits = nn.Conv2d(cfg.mid_channels, a, 1)
        self.head.bbox_pred = nn.Conv2d(cfg.mid_channels, 4 * a, 1)
        self.anchor_generator = _Namespace()
        self.anchor_generator.cell_anchors = _CellAnchors(detectron_cell_anchors(cfg.stride, cfg.anchor_sizes, cfg.anchor_ratios))

    def head_outputs(self, feature):
        """feature [1, C, h, w] → anchors [N, 4], objectness logits [N], deltas [N, 4] (position-major)."""
        x = torch.relu(self.head.conv(feature))
        logits = self.head.cls_logits(x).permute(0, 2, 3, 1).reshape(-1)
        deltas = self.head.bbox_pred(x).permute(0, 2, 3, 1).reshape(-1, 4)
        anchors = mmdet_grid_anchors(self.anchor_generator.cell_anchors.anchors, feature.shape[2], feature.shape[3], self.cfg.stride)
        return anchors, logits, deltas

    def forward(self, feature, image_height, image_width):
        """feature [1, C, h, w] → proposals [P, 4] (by descending objectness), valid [P]."""
        return self.propose(*self.head_outputs(feature), image_height, image_width)

    def propose(self, anchors, logits, deltas, image_height, image_width, post_nms: int | None = None):
        """Decoded, clipped, NMS'd proposals; ``post_nms`` overrides the config's count (training samples from more)."""
        proposals = maskrcnn_clip(maskrcnn_decode(anchors, deltas, (1.0, 1.0, 1.0, 1.0)), image_height, image_width)
        index, valid = box_ops.fixed_size_nms(proposals, torch.sigmoid(logits), self.cfg.nms_iou, self.cfg.pre_nms, post_nms or self.cfg.post_nms)
        return proposals[index], valid


def position_matrix(rois: torch.Tensor, ref_rois: torch.Tensor) -> torch.Tensor:
    """[Nq, Nr, 4] relative geometry of Relation Networks as mega.pytorch's
    extract_position_matrix: log(|dx| / w + 1e-3), log(|dy| / h + 1e-3),
    log(w / w_ref), log(h / h_ref), with +1 widths."""
    def parts(b):
        w = b[:, 2:3] - b[:, 0:1] + 1
        h = b[:, 3:4] - b[:, 1:2] + 1
        return w, h, 0.5 * (b[:, 0:1] + b[:, 2:3]), 0.5 * (b[:, 1:2] + b[:, 3:4])

    w, h, cx, cy = parts(rois)
    w_ref, h_ref, cx_ref, cy_ref = parts(ref_rois)
    dx = torch.log((cx - cx_ref.t()).abs() / w + 1e-3)
    dy = torch.log((cy - cy_ref.t()).abs() / h + 1e-3)
    dw = torch.log(w / w_ref.t())
    dh = torch.log(h / h_ref.t())
    return torch.stack([dx, dy, dw, dh], dim=2)


def position_embedding(position: torch.Tensor, embed_dim: int, wave_length: float = 1000.0) -> torch.Tensor:
    """[Nq, Nr, 4] → [1, embed_dim, Nq, Nr]: per coordinate embed_dim / 8
    frequencies, sines then cosines (extract_position_embedding's layout)."""
    freqs = torch.tensor([wave_length ** (8.0 / embed_dim * i) for i in range(embed_dim // 8)], dtype=position.dtype)
    div = position.unsqueeze(3) * 100.0 / freqs  # [Nq, Nr, 4, E/8]
    embedding = torch.cat([div.sin(), div.cos()], dim=3)
    nq, nr = embedding.shape[:2]
    return embedding.reshape(nq, nr, embed_dim).permute(2, 0, 1).unsqueeze(0)


class MegaFeatureExtractor(nn.Module):
    """``roi_heads.box.feature_extractor`` with mega.pytorch's parameter names."""

    def __init__(self, cfg: MegaConfig, in_channels: int):
        super().__init__()
        self.cfg = cfg
        self.head = _Namespace()
        self.head.layer4 = resnet_stage(cfg.depth, 4, in_channels, 3, 1, 2, stride_in_1x1=True, eps=0.0, width=cfg.backbone_width)
        input_size = stage_channels(cfg.depth, 4, cfg.backbone_width) * cfg.roi_size**2
        d, g, dg = cfg.feat_dim, cfg.groups, cfg.feat_dim // cfg.groups
        self.l_fcs = nn.ModuleList([nn.Linear(input_size if i == 0 else d, d) for i in range(cfg.stages)])
        self.l_Wgs = nn.ModuleList([nn.Conv2d(cfg.embed_dim, g, 1) for _ in range(cfg.stages)])
        self.l_Wqs = nn.ModuleList([nn.Linear(d, d) for _ in range(cfg.stages)])
        self.l_Wks = nn.ModuleList([nn.Linear(d, d) for _ in range(cfg.stages)])
        self.l_Wvs = nn.ModuleList([nn.Conv2d(d * g, d, 1, groups=g) for _ in range(cfg.stages)])
        self.l_us = nn.ParameterList([nn.Parameter(torch.zeros(g, 1, dg)) for _ in range(cfg.stages)])
        n_global = cfg.global_res_stages + 1
        self.g_Wqs = nn.ModuleList([nn.Linear(d, d) for _ in range(n_global)])
        self.g_Wks = nn.ModuleList([nn.Linear(d, d) for _ in range(n_global)])
        self.g_Wvs = nn.ModuleList([nn.Conv2d(d * g, d, 1, groups=g) for _ in range(n_global)])
        self.g_us = nn.ParameterList([nn.Parameter(torch.zeros(g, 1, dg)) for _ in range(n_global)])
        self.reset_relation_parameters()

    @torch.no_grad()
    def reset_relation_parameters(self) -> None:
        """mega.pytorch's initialisation of the relation modules: W_G and W_V
        N(0, 0.01) with zero bias, u N(0, 0.01); W_Q, W_K keep their default.
        Each relation then starts as a near-zero residual, so the head begins
        as a plain two-FC detector and learns how much to aggregate. With
        PyTorch's default W_V, the untrained relations add a nearly uniform
        mix of every reference (mostly background) of the input's own scale
        to each query, five times over, and the classifier underfits."""
        for module in list(self.l_Wgs) + list(self.l_Wvs) + list(self.g_Wvs):
            nn.init.normal_(module.weight, std=0.01)
            nn.init.zeros_(module.bias)
        for u in list(self.l_us) + list(self.g_us):
            nn.init.normal_(u, std=0.01)

    def pooled(self, c4: torch.Tensor, proposals: torch.Tensor) -> torch.Tensor:
        """res5 on the whole map, then RoIAlign of ``proposals``, flattened: [P, C·7·7]."""
        x = self.head.layer4(c4)
        rois = torch.cat([torch.zeros_like(proposals[:, :1]), proposals], dim=1)
        return roi_align(x, rois, self.cfg.roi_size, 1.0 / 16, self.cfg.sampling_ratio, aligned=False).flatten(1)

    def box_features(self, c4: torch.Tensor, proposals: torch.Tensor) -> torch.Tensor:
        """A frame's box features: l_fcs.0 + ReLU of the pooled res5 (``_forward_ref``)."""
        return torch.relu(self.l_fcs[0](self.pooled(c4, proposals)))

    def relation(self, local: bool, index: int, query, ref, ref_valid, position=None):
        """One relation module (attention_module_multi_head): query [Nq, D],
        ref [Nr, D], ref_valid [Nr] bool, position [1, E, Nq, Nr] (location-
        based) or None (global) → [Nq, D]. Invalid references get weight 0;
        with none valid the module returns Wv's bias (an empty sum)."""
        Wq, Wk, Wv, u = (self.l_Wqs, self.l_Wks, self.l_Wvs, self.l_us) if local else (self.g_Wqs, self.g_Wks, self.g_Wvs, self.g_us)
        g, d = self.cfg.groups, self.cfg.feat_dim
        dg = d // g
        q = Wq[index](query).reshape(-1, g, dg).permute(1, 0, 2)  # [G, Nq, dg]
        k = Wk[index](ref).reshape(-1, g, dg).permute(1, 0, 2)  # [G, Nr, dg]
        kt = k.transpose(1, 2)
        aff = (torch.bmm(q, kt) + torch.bmm(u[index], kt)) * (1.0 / math.sqrt(dg))
        aff = aff.permute(1, 0, 2)  # [Nq, G, Nr]
        if position is not None:
            weight = torch.relu(self.l_Wgs[index](position)).permute(2, 1, 3, 0).squeeze(3)
            aff = log_position_weight(weight) + aff
        valid = ref_valid.view(1, 1, -1)
        aff = torch.where(valid, aff, torch.full_like(aff, float("-inf")))
        aff = torch.where(ref_valid.any(), aff, torch.zeros_like(aff))
        weights = torch.softmax(aff, dim=2) * valid.to(aff.dtype)
        out = torch.matmul(weights.reshape(-1, weights.shape[2]), ref)  # [Nq * G, D]
        return Wv[index](out.reshape(-1, g * d, 1, 1)).flatten(1)

    def update_lm(self, feats, global_feats, global_valid, index: int):
        """feats + global relation(feats, global pool) (update_lm)."""
        return feats + self.relation(False, index, feats, global_feats, global_valid)


class MegaDetector(nn.Module):
    def __init__(self, cfg: MegaConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = _Namespace()
        c4_last = f"layer3.{STAGE_BLOCKS[cfg.depth][2] - 1}"  # C4: layer1-layer3
        self.backbone.body = ResNet(cfg.depth, last_block=c4_last, stride_in_1x1=True, bn_eps=0.0, width=cfg.backbone_width)
        c4 = self.backbone.body.out_channels
        self.rpn = MaskrcnnRPN(c4, cfg.rpn)
        self.roi_heads = _Namespace()
        self.roi_heads.box = _Namespace()
        self.roi_heads.box.feature_extractor = MegaFeatureExtractor(cfg, c4)
        self.roi_heads.box.predictor = _Namespace()
        self.roi_heads.box.predictor.cls_score = nn.Linear(cfg.feat_dim, cfg.num_classes)
        self.roi_heads.box.predictor.bbox_pred = nn.Linear(cfg.feat_dim, 4 * cfg.num_classes)
        self.feature_stride = 16

    @property
    def extractor(self) -> MegaFeatureExtractor:
        return self.roi_heads.box.feature_extractor

    def frame(self, image: torch.Tensor):
        """A frame's part, once per frame: proposals [P, 4] (by descending
        objectness; the first ``ref_proposals`` are what the frame brings to
        the local and global pools), proposal_valid [P], box_features [P, D]."""
        c4 = self.backbone.body(image)
        proposals, valid = self.rpn(c4, image.shape[2], image.shape[3])
        return proposals, valid, self.extractor.box_features(c4, proposals)

    def aggregate(self, key_proposals, key_valid, key_features, local_proposals, local_valid, local_features,
                  global_valid, global_features, memory=()):
        """The key frame's enhanced features and the memory updates.

        key_* [P, ...]: the key frame's frame outputs. local_* [T_l, R, ...]:
        the local pool in window order, slot 0 the oldest frame (the one whose
        features enter the memory). global_* [T_g, R, ...]. memory: per level
        (proposals [T_m, R_i, 4], valid [T_m, R_i], features [T_m, R_i, D]),
        R_0 = R, R_i = dis_proposals. → (features [P, D], memory updates: per
        level the slot-0 frame's R_i features as stage i read them).
        """
        ext, cfg = self.extractor, self.cfg
        t, r, d = local_features.shape
        dis = cfg.dis_proposals
        global_f = global_features.reshape(-1, d)
        global_v = global_valid.reshape(-1)
        x = ext.update_lm(key_features, global_f, global_v, 0)
        x_ref = ext.update_lm(local_features.reshape(-1, d), global_f, global_v, 0).reshape(t, r, d)
        x_dis = x_ref[:, :dis].reshape(-1, d)
        rois_ref, valid_ref = local_proposals.reshape(-1, 4), local_valid.reshape(-1)
        rois_dis, valid_dis = local_proposals[:, :dis].reshape(-1, 4), local_valid[:, :dis].reshape(-1)
        p = key_features.shape[0]
        queries, query_rois = torch.cat([x, x_dis]), torch.cat([key_proposals, rois_dis])
        refs = x_ref.reshape(-1, d)
        updates = []
        for i in range(cfg.stages):
            if i > 0:
                refs, rois_ref, valid_ref = queries[p:], rois_dis, valid_dis
            if i == cfg.stages - 1:
                queries, query_rois = queries[:p], key_proposals
            updates.append(refs[: cfg.level_proposals(i)])  # the slot-0 frame's references of stage i
            mem_rois, mem_valid, mem_feats = rois_ref, valid_ref, refs
            if i < len(memory):
                level_rois, level_valid, level_feats = memory[i]
                mem_rois = torch.cat([rois_ref, level_rois.reshape(-1, 4)])
                mem_valid = torch.cat([valid_ref, level_valid.reshape(-1)])
                mem_feats = torch.cat([refs, level_feats.reshape(-1, d)])
            position = position_embedding(position_matrix(query_rois, mem_rois), cfg.embed_dim)
            queries = queries + ext.relation(True, i, queries, mem_feats, mem_valid, position)
            if i < cfg.stages - 1:
                queries = torch.relu(ext.l_fcs[i + 1](queries))
        x = queries
        for i in range(cfg.global_res_stages):
            x = ext.update_lm(x, global_f, global_v, i + 1)
        return x, updates[: cfg.memory_levels]

    def detect(self, image_size, proposals, valid, features):
        predictor = self.roi_heads.box.predictor
        return maskrcnn_detect(
            proposals, valid, predictor.cls_score(features), predictor.bbox_pred(features), image_size[0], image_size[1], self.cfg.detection
        )

    def fold_bn(self) -> "MegaDetector":
        self.backbone.body.fold_bn()
        for block in self.extractor.head.layer4:
            block.fold_bn()
        return self


# ------------------------------------------------------------ stages


class MegaFrameStage(nn.Module):
    """inputs: image [1, 3, H, W]; outputs: proposals [P, 4], proposal_valid [P], box_features [P, D]."""

    input_names = ("image",)
    output_names = ("proposals", "proposal_valid", "box_features")

    def __init__(self, detector: MegaDetector):
        super().__init__()
        self.detector = detector

    def forward(self, image):
        return self.detector.frame(image)


def memory_names(level: int) -> tuple[str, str, str]:
    return (f"memory{level}_proposals", f"memory{level}_valid", f"memory{level}_features")


class MegaHeadStage(nn.Module):
    """Aggregation + head of one key frame over fixed-size pools.

    inputs: image_size [2]; key_proposals [P, 4], key_valid [P], key_features
    [P, D]; local_proposals [T_l, R, 4], local_valid [T_l, R], local_features
    [T_l, R, D]; global_valid [T_g, R], global_features [T_g, R, D]; with the
    memory, per level i: memory{i}_proposals [T_m, R_i, 4], memory{i}_valid
    [T_m, R_i], memory{i}_features [T_m, R_i, D].
    outputs: boxes, scores, labels, valid; with the memory memory{i}_update
    [R_i, D], what level i gains from this frame (its local slot 0).
    """

    def __init__(self, detector: MegaDetector):
        super().__init__()
        self.detector = detector
        levels = detector.cfg.memory_levels
        self.input_names = (
            "image_size", "key_proposals", "key_valid", "key_features", "local_proposals", "local_valid", "local_features",
            "global_valid", "global_features",
        ) + tuple(n for i in range(levels) for n in memory_names(i))  # fmt: skip
        self.output_names = DETECTIONS + tuple(f"memory{i}_update" for i in range(levels))

    def forward(self, image_size, key_proposals, key_valid, key_features, local_proposals, local_valid, local_features,
                global_valid, global_features, *memory):
        d = self.detector
        levels = [tuple(memory[3 * i : 3 * i + 3]) for i in range(d.cfg.memory_levels)]
        features, updates = d.aggregate(
            key_proposals, key_valid, key_features, local_proposals, local_valid, local_features, global_valid, global_features, levels
        )
        return (*d.detect(image_size, key_proposals, key_valid, features), *updates)


# ------------------------------------------------------------ schedule rules (no torch)


def local_window(key: int, length: int | None, local_frames: int, mode: str) -> list[int]:
    """Frame indices of the local pool of ``key``, slot 0 the oldest, as
    mega.pytorch's test procedure fills its deque: offline, frames key - tau
    .. key + (T_l - 1 - tau) with tau = (T_l - 1) // 2, clamped to the video
    (the first frame repeated before it, the last after it; ``length`` may
    be None while the video's end is not reached); online, key - T_l + 1 ..
    key, clamped at 0."""
    if mode == "offline":
        tau = (local_frames - 1) // 2
        last = length - 1 if length is not None else None
        frames = [key - tau + s for s in range(local_frames)]
        return [max(0, f if last is None else min(f, last)) for f in frames]
    return [max(0, key - local_frames + 1 + s) for s in range(local_frames)]


def look_ahead(local_frames: int, mode: str) -> int:
    """Frames after the key frame its local pool reads (offline tau, online 0)."""
    return local_frames - 1 - (local_frames - 1) // 2 if mode == "offline" else 0


def offline_global_pool(key: int, length: int, global_frames: int, seed: int) -> list[int]:
    """The global pool of ``key`` offline: T_g frames of a seeded shuffle of
    the whole video, a window of it advancing by one frame per key frame, as
    mega.pytorch's test loader draws them (shuffled[(key + j) % L]; a video
    shorter than T_g repeats frames)."""
    shuffled = np.random.default_rng(seed).permutation(length)
    return [int(shuffled[(key + j) % length]) for j in range(global_frames)]


class OnlineGlobalPool:
    """The online global pool: a uniform sample of T_g of the frames seen so
    far (reservoir sampling, seeded), updated with each frame before it is
    detected; slots not filled yet are empty (masked)."""

    def __init__(self, global_frames: int, seed: int):
        self.slots: list[int | None] = [None] * global_frames
        self.rng = np.random.default_rng(seed)
        self.seen = 0

    def add(self, index: int) -> int | None:
        """Offers frame ``index``; returns the slot it took, or None."""
        t, self.seen = self.seen, self.seen + 1
        if t < len(self.slots):
            slot = t
        else:
            slot = int(self.rng.integers(0, t + 1))
            if slot >= len(self.slots):
                return None
        self.slots[slot] = index
        return slot
