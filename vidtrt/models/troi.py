"""Temporal RoI Align (Gong et al., AAAI 2021) on SELSA Faster R-CNN, laid out
as open-mmlab/mmtracking's ``selsa_troialign_faster_rcnn_r50_dc5_7e_imagenetvid``.

Module names follow mmtracking's ``detector.*`` keys, so importing an
mmtracking checkpoint is a prefix strip (models/troi_checkpoint.py):
- ``backbone``: ResNet-50/101 DC5 (layer4 stride 1, dilation 2; torchvision
  naming = mmdet's).
- ``neck.convs.0.conv``: ChannelMapper, 3×3 conv 2048 → 512 + ReLU (mmdet's
  default ``act_cfg``).
- ``rpn_head.{rpn_conv, rpn_cls, rpn_reg}``: 3×3 conv + ReLU, sigmoid
  objectness, mmdet anchors (see ``mmdet_grid_anchors``) and mmdet deltas
  (``mmdet_delta2bbox``), zero-size proposals dropped, NMS 0.7, 300 kept.
- ``roi_head.bbox_roi_extractor``: RoIAlign 7×7, sampling 2, aligned; for
  target RoIs MS RoI Align (ops.most_similar_roi_align, top_k) over every
  support frame *and the target itself* (mmtracking appends the target to its
  reference features), then TAFA through ``embed_network.conv`` — or, with
  ``tafa_blocks = 0`` (mmtracking's num_temporal_attention_blocks ≤ 0), the
  plain mean of the target's RoI features and the MS RoI Align features, and
  no ``embed_network``.
- ``roi_head.bbox_head``: SelsaBBoxHead, 3 shared FCs, after each
  ``x = x + aggregator_i(x, ref_x)`` then ReLU (with no valid reference the
  aggregator returns ``fc(0)``, upstream's result for an empty set); ``ref_x`` are the plain
  RoIAlign features of every support frame's proposals *and the target's
  own* (mmtracking runs the RPN on all its reference frames, the target
  included). ``fc_cls`` puts background last (mmdet ≥ 2.0), ``fc_reg`` is
  class-specific.
Departures, all forced by static shapes: pre-NMS TopK is capped at 3840
(upstream 6000 in the RPN, all R·30 pairs in the R-CNN), and padded proposals
/ missing support frames are masked out of every softmax instead of being
absent.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from . import boxes as box_ops
from .classes import IMAGENET_VID_CLASSES
from .config_io import config_from_dict
from .postprocess import DetectionConfig, select_detections
from .preprocess_config import PreprocessConfig
from .resnet import ResNet
from .roi_align import roi_align
from .rpn import RPNConfig

MODES = ("offline", "online")
# mmdet's DeltaXYWHBBoxCoder: dw, dh clamped to ±|log(16 / 1000)| on both sides.
MMDET_MAX_RATIO = abs(math.log(16 / 1000))


@dataclass
class TroiConfig:
    name: str
    depth: int = 50
    backbone_width: int = 64  # the ResNet stem's channels (64 as published; narrower in small configs)
    neck_channels: int = 512
    roi_size: int = 7
    sampling_ratio: int = 2
    top_k: int = 2  # MS RoI Align points (mmtracking's configs; the paper's ablation picked 4)
    tafa_blocks: int = 4  # TAFA attention blocks; 0: average instead (mmtracking's num_temporal_attention_blocks <= 0)
    fc_channels: int = 1024
    num_shared_fcs: int = 3
    selsa_blocks: int = 16
    num_support: int = 14  # support frames besides the target, fixed at export
    online_stride: int = 10  # online: a frame joins the support memory every this many frames (mmtracking's demo)
    rpn: RPNConfig = field(
        default_factory=lambda: RPNConfig(
            anchor_sizes=(64.0, 128.0, 256.0, 512.0), mid_channels=512, pre_nms=3840, post_nms=300, nms_iou=0.7
        )
    )
    # R-CNN target_stds 0.2 on all four deltas (mmtracking's faster_rcnn_r50_dc5) ≙ weights 5.
    detection: DetectionConfig = field(
        default_factory=lambda: DetectionConfig(score_threshold=1e-4, nms_iou=0.5, max_detections=100, box_weights=(5.0, 5.0, 5.0, 5.0))
    )
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    mode: str = "offline"
    class_names: tuple[str, ...] = IMAGENET_VID_CLASSES

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.num_support < 1:
            raise ValueError(f"num_support must be >= 1, got {self.num_support}")
        if self.online_stride < 1:
            raise ValueError(f"online_stride must be >= 1, got {self.online_stride}")
        if self.tafa_blocks < 0:
            raise ValueError(
                f"tafa_blocks must be >= 0, got {self.tafa_blocks}; 0 averages the target's and the most similar "
                "RoI features instead of attending (mmtracking's num_temporal_attention_blocks <= 0)"
            )
        if self.tafa_blocks and self.neck_channels % self.tafa_blocks:
            raise ValueError(f"neck_channels ({self.neck_channels}) must divide by tafa_blocks ({self.tafa_blocks})")
        if self.selsa_blocks < 1:
            raise ValueError(f"selsa_blocks must be >= 1, got {self.selsa_blocks}")
        if self.fc_channels % self.selsa_blocks:
            raise ValueError(f"fc_channels ({self.fc_channels}) must divide by selsa_blocks ({self.selsa_blocks})")

    @property
    def num_classes(self) -> int:
        return len(self.class_names) + 1

    def as_dict(self) -> dict:
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TroiConfig":
        return config_from_dict(cls, d)


# ------------------------------------------------------------ mmdet boxes


def mmdet_grid_anchors(base: torch.Tensor, height, width, stride: int) -> torch.Tensor:
    """[h·w·A, 4], position-major. mmdet v2's AnchorGenerator: base anchors
    centred on (0, 0) (center_offset 0) shifted by x·stride — no half-stride
    offset, unlike boxes.grid_anchors."""
    shift_x = torch.arange(width, dtype=torch.float32) * stride
    shift_y = torch.arange(height, dtype=torch.float32) * stride
    sy, sx = torch.meshgrid(shift_y, shift_x, indexing="ij")
    shifts = torch.stack([sx, sy, sx, sy], dim=-1).reshape(-1, 1, 4)
    return (shifts + base.view(1, -1, 4)).reshape(-1, 4)


def mmdet_delta2bbox(rois: torch.Tensor, deltas: torch.Tensor, stds, height, width) -> torch.Tensor:
    """mmdet's delta2bbox (means 0): rois [N, 4], deltas [N, 4] → clipped boxes.
    Widths without +1, dw/dh clamped on both sides (boxes.decode clamps only above)."""
    std = deltas.new_tensor(stds)
    d = deltas * std
    pw = rois[:, 2] - rois[:, 0]
    ph = rois[:, 3] - rois[:, 1]
    px = (rois[:, 0] + rois[:, 2]) * 0.5
    py = (rois[:, 1] + rois[:, 3]) * 0.5
    dw = d[:, 2].clamp(min=-MMDET_MAX_RATIO, max=MMDET_MAX_RATIO)
    dh = d[:, 3].clamp(min=-MMDET_MAX_RATIO, max=MMDET_MAX_RATIO)
    gw, gh = pw * torch.exp(dw), ph * torch.exp(dh)
    gx, gy = px + pw * d[:, 0], py + ph * d[:, 1]
    boxes = torch.stack([gx - gw * 0.5, gy - gh * 0.5, gx + gw * 0.5, gy + gh * 0.5], dim=1)
    return box_ops.clip(boxes, height, width)


def mmdet_detect(rois, roi_valid, class_logits, box_deltas, image_height, image_width, cfg: DetectionConfig):
    """mmdet's R-CNN post-processing: softmax with background *last*,
    class-specific mmdet deltas, score > threshold, class-wise NMS, the best
    ``max_detections``. → boxes [D, 4], scores [D], labels [D], valid [D]."""
    num_classes = class_logits.shape[1] - 1
    probs = torch.softmax(class_logits, dim=1)[:, :num_classes]
    per_class_rois = rois[:, None, :].expand(-1, num_classes, 4).reshape(-1, 4)
    stds = tuple(1.0 / w for w in cfg.box_weights)
    candidate_boxes = mmdet_delta2bbox(per_class_rois, box_deltas.reshape(-1, 4), stds, image_height, image_width)
    return select_detections(candidate_boxes, probs, roi_valid, cfg)


# ------------------------------------------------------------ modules


class _ConvModule(nn.Module):
    """mmcv ConvModule without norm: the weights sit under ``.conv``."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, relu: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2)
        self.relu = relu

    def forward(self, x):
        x = self.conv(x)
        return torch.relu(x) if self.relu else x


class ChannelMapper(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.convs = nn.ModuleList([_ConvModule(in_ch, out_ch, 3, relu=True)])

    def forward(self, x):
        return self.convs[0](x)


class MmdetRPNHead(nn.Module):
    """mmdet RPNHead (sigmoid) with fixed-size proposal output."""

    delta_pixel_offset = 0  # box widths x2 - x1 in its decoder (what training encodes with)

    def __init__(self, in_channels: int, cfg: RPNConfig):
        super().__init__()
        self.cfg = cfg
        a = cfg.num_anchors
        self.rpn_conv = nn.Conv2d(in_channels, cfg.mid_channels, 3, padding=1)
        self.rpn_cls = nn.Conv2d(cfg.mid_channels, a, 1)
        self.rpn_reg = nn.Conv2d(cfg.mid_channels, 4 * a, 1)
        # mmdet: for each ratio (h/w), each scale — the order boxes.base_anchors uses.
        self.register_buffer("base_anchors", box_ops.base_anchors(cfg.anchor_sizes, cfg.anchor_ratios), persistent=False)

    def head_outputs(self, feature):
        """feature [1, C, h, w] → anchors [N, 4], objectness logits [N], deltas [N, 4] (position-major)."""
        x = torch.relu(self.rpn_conv(feature))
        logits = self.rpn_cls(x).permute(0, 2, 3, 1).reshape(-1)
        deltas = self.rpn_reg(x).permute(0, 2, 3, 1).reshape(-1, 4)
        anchors = mmdet_grid_anchors(self.base_anchors, feature.shape[2], feature.shape[3], self.cfg.stride)
        return anchors, logits, deltas

    def forward(self, feature, image_height, image_width):
        """feature [1, C, h, w] → proposals [P, 4], valid [P]."""
        return self.propose(*self.head_outputs(feature), image_height, image_width)

    def propose(self, anchors, logits, deltas, image_height, image_width, post_nms: int | None = None):
        """Decoded, clipped, NMS'd proposals; ``post_nms`` overrides the config's count (training samples from more)."""
        proposals = mmdet_delta2bbox(anchors, deltas, (1.0, 1.0, 1.0, 1.0), image_height, image_width)
        scores = torch.sigmoid(logits)
        # mmdet drops proposals with w or h <= min_bbox_size (0: zero-size boxes).
        w = proposals[:, 2] - proposals[:, 0]
        h = proposals[:, 3] - proposals[:, 1]
        small = (w <= self.cfg.min_size) | (h <= self.cfg.min_size)
        scores = torch.where(small, torch.full_like(scores, float("-inf")), scores)
        index, valid = box_ops.fixed_size_nms(proposals, scores, self.cfg.nms_iou, self.cfg.pre_nms, post_nms or self.cfg.post_nms)
        return proposals[index], valid


class TemporalRoIAlign(nn.Module):
    """MS RoI Align + TAFA (mmtracking's TemporalRoIAlign). ``blocks`` > 0:
    attention over frames in that many channel blocks, through
    ``embed_network``; ``blocks`` = 0: the mean over frames, and no
    ``embed_network`` (so an mmtracking checkpoint of that kind has no such
    keys, as here)."""

    def __init__(self, channels: int, top_k: int, blocks: int):
        super().__init__()
        self.top_k = top_k
        self.blocks = blocks
        if blocks > 0:
            self.embed_network = _ConvModule(channels, channels, 3, relu=False)

    def forward(self, roi_feats, support_maps, support_valid, impl: str = "reference"):
        """roi_feats [R, C, h, w] (the target's RoIAlign features), support_maps
        [S, C, H, W], support_valid [S] bool → [R, C, h, w]."""
        from ..ops import most_similar_roi_align

        ms = most_similar_roi_align(roi_feats, support_maps, self.top_k, impl=impl)  # [S, R, C, h, w]
        x = torch.cat([roi_feats.unsqueeze(0), ms], dim=0)  # the target's own RoI feature first
        n, r, c, h, w = x.shape
        frame_valid = torch.cat([torch.ones_like(support_valid[:1]), support_valid])
        if self.blocks == 0:
            # mmtracking: the mean of the target's and the support frames' features; a
            # missing frame (absent upstream) is left out of the mean. The target
            # always counts, so the divisor is at least 1.
            weight = frame_valid.to(x.dtype).view(n, 1, 1, 1, 1)
            return (x * weight).sum(dim=0) / weight.sum()
        embed = self.embed_network(x.reshape(n * r, c, h, w)).reshape(n, r, self.blocks, c // self.blocks, h, w)
        logits = (embed * embed[:1]).sum(dim=3, keepdim=True) / math.sqrt(c / self.blocks)
        logits = torch.where(frame_valid.view(n, 1, 1, 1, 1, 1), logits, torch.full_like(logits, float("-inf")))
        weights = torch.softmax(logits, dim=0)  # over frames, per block and cell
        return (x.reshape(n, r, self.blocks, c // self.blocks, h, w) * weights).sum(dim=0).reshape(r, c, h, w)


class SelsaAggregator(nn.Module):
    def __init__(self, channels: int, blocks: int):
        super().__init__()
        self.blocks = blocks
        self.fc_embed = nn.Linear(channels, channels)
        self.ref_fc_embed = nn.Linear(channels, channels)
        self.fc = nn.Linear(channels, channels)
        self.ref_fc = nn.Linear(channels, channels)

    def forward(self, x, ref_x, ref_valid):
        """x [N, C], ref_x [M, C], ref_valid [M] bool → [N, C]."""
        return self.attend(x, *self.reference_projections(ref_x), ref_valid)

    def reference_projections(self, ref_x):
        """ref_x [M, C] → (keys [M, C], values [M, C]): the references' side,
        row by row, independent of the queries (so computed once per frame)."""
        return self.ref_fc_embed(ref_x), self.ref_fc(ref_x)

    def attend(self, x, ref_keys, ref_values, ref_valid):
        """x [N, C], the references' projections [M, C] each, ref_valid [M]
        bool → [N, C]; invalid references get zero weight (they are absent
        upstream). With no valid reference the weighted sum is 0 and the
        result fc(0) = fc.bias, as upstream's softmax over an empty set of
        references gives (an empty weight matrix, a zero product), not the
        NaN of a softmax over logits that are all −inf."""
        n, c = x.shape
        m = ref_keys.shape[0]
        d = c // self.blocks
        q = self.fc_embed(x).reshape(n, self.blocks, d).permute(1, 0, 2)
        k = ref_keys.reshape(m, self.blocks, d).permute(1, 2, 0)
        logits = torch.bmm(q, k) / math.sqrt(d)  # [B, N, M]
        valid = ref_valid.view(1, 1, m)
        logits = torch.where(valid, logits, torch.full_like(logits, float("-inf")))
        # With nothing valid, finite logits keep the softmax defined and the mask
        # below zeroes it; otherwise the mask changes nothing (exp(−inf) is 0).
        logits = torch.where(ref_valid.any(), logits, torch.zeros_like(logits))
        weights = torch.softmax(logits, dim=2) * valid.to(logits.dtype)
        v = ref_values.reshape(m, self.blocks, d).permute(1, 0, 2)
        out = torch.bmm(weights, v).permute(1, 0, 2).reshape(n, c)
        return self.fc(out)


class SelsaBBoxHead(nn.Module):
    def __init__(self, in_features: int, cfg: TroiConfig):
        super().__init__()
        dims = [in_features] + [cfg.fc_channels] * cfg.num_shared_fcs
        self.shared_fcs = nn.ModuleList([nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:])])
        self.aggregator = nn.ModuleList([SelsaAggregator(cfg.fc_channels, cfg.selsa_blocks) for _ in range(cfg.num_shared_fcs)])
        self.fc_cls = nn.Linear(cfg.fc_channels, cfg.num_classes)
        self.fc_reg = nn.Linear(cfg.fc_channels, 4 * (cfg.num_classes - 1))

    def features(self, x, ref_x, ref_valid):
        """x [N, ...] (TRoI's features of the target's RoIs), ref_x [M, ...]
        (plain RoI features of the references), ref_valid [M] → [N, C]."""
        return self.features_from_projections(x, *self.reference_projections(ref_x), ref_valid)

    def reference_projections(self, ref_x):
        """The references' side of every aggregator: ref_x [M, ...] →
        (keys [L, M, C], values [L, M, C]) for the L shared FCs. It depends
        on nothing but the references' own RoI features, row by row, so each
        frame's is computed once, by the frame stage, and carried: the
        target's detection then never recomputes its support frames' (TRoI
        offline: the same support set for the whole video)."""
        ref_x = ref_x.flatten(1)
        keys, values = [], []
        for fc, aggregator in zip(self.shared_fcs, self.aggregator):
            ref_x = fc(ref_x)
            # The aggregator reads ref_x before its ReLU, as SelsaBBoxHead does.
            k, v = aggregator.reference_projections(ref_x)
            keys.append(k)
            values.append(v)
            ref_x = torch.relu(ref_x)
        return torch.stack(keys), torch.stack(values)

    def features_from_projections(self, x, ref_keys, ref_values, ref_valid):
        """x [N, ...], the references' projections [L, M, C] each, ref_valid [M] → [N, C]."""
        x = x.flatten(1)
        for level, (fc, aggregator) in enumerate(zip(self.shared_fcs, self.aggregator)):
            x = fc(x)
            x = x + aggregator.attend(x, ref_keys[level], ref_values[level], ref_valid)
            x = torch.relu(x)
        return x

    def forward(self, x, ref_x, ref_valid):
        x = self.features(x, ref_x, ref_valid)
        return self.fc_cls(x), self.fc_reg(x)


class RoIHead(nn.Module):
    def __init__(self, cfg: TroiConfig):
        super().__init__()
        self.bbox_roi_extractor = TemporalRoIAlign(cfg.neck_channels, cfg.top_k, cfg.tafa_blocks)
        self.bbox_head = SelsaBBoxHead(cfg.neck_channels * cfg.roi_size**2, cfg)


class TroiDetector(nn.Module):
    def __init__(self, cfg: TroiConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = ResNet(cfg.depth, dilate_res5=True, width=cfg.backbone_width)
        self.neck = ChannelMapper(self.backbone.out_channels, cfg.neck_channels)
        self.rpn_head = MmdetRPNHead(cfg.neck_channels, cfg.rpn)
        self.roi_head = RoIHead(cfg)
        self.op_impl = "reference"
        self.feature_stride = self.backbone.out_stride

    def roi_align(self, feature, proposals):
        rois = torch.cat([torch.zeros_like(proposals[:, :1]), proposals], dim=1)
        return roi_align(
            feature, rois, self.cfg.roi_size, 1.0 / self.feature_stride, self.cfg.sampling_ratio, aligned=True
        )

    def frame(self, image: torch.Tensor):
        """image [1, 3, H, W] → feature [1, C, h, w], proposals [P, 4],
        proposal_valid [P], roi_feats [P, C, 7, 7] (plain RoIAlign: the
        target's input to TRoI), ref_keys and ref_values [L, P, C] (what the
        frame brings to SELSA as a reference, its own detection's included)."""
        feature = self.neck(self.backbone(image))
        proposals, valid = self.rpn_head(feature, image.shape[2], image.shape[3])
        roi_feats = self.roi_align(feature, proposals)
        return feature, proposals, valid, roi_feats, *self.roi_head.bbox_head.reference_projections(roi_feats)

    def head_features(self, feature, proposal_valid, roi_feats, ref_keys, ref_values,
                      support_features, support_ref_keys, support_ref_values, support_proposal_valid, support_valid):
        """TRoI + SELSA features [P, C] of the target's RoIs (see ``head``)."""
        t, levels, p, c = support_ref_keys.shape
        # mmtracking's reference set is the support frames plus the target itself.
        maps = torch.cat([support_features, feature], dim=0)
        map_valid = torch.cat([support_valid, torch.ones_like(support_valid[:1])])
        temporal = self.roi_head.bbox_roi_extractor(roi_feats, maps, map_valid, impl=self.op_impl)

        def references(support, own):  # [T, L, P, C] and [L, P', C] → [L, T·P + P', C]
            return torch.cat([support.permute(1, 0, 2, 3).reshape(levels, t * p, c), own], dim=1)

        ref_valid = torch.cat([(support_valid.view(t, 1) & support_proposal_valid).reshape(-1), proposal_valid])
        return self.roi_head.bbox_head.features_from_projections(
            temporal, references(support_ref_keys, ref_keys), references(support_ref_values, ref_values), ref_valid
        )

    def head(
        self, image_size, feature, proposals, proposal_valid, roi_feats, ref_keys, ref_values,
        support_features, support_ref_keys, support_ref_values, support_proposal_valid, support_valid,
    ):
        """One target frame's detections: boxes [D, 4], scores [D], labels [D], valid [D].

        The target's frame outputs (``frame``), then its T support frames':
        support_features [T, C, h, w], support_ref_keys and support_ref_values
        [T, L, P, C], support_proposal_valid [T, P], and support_valid [T]
        (False = no frame).
        """
        x = self.head_features(
            feature, proposal_valid, roi_feats, ref_keys, ref_values,
            support_features, support_ref_keys, support_ref_values, support_proposal_valid, support_valid,
        )  # fmt: skip
        bbox_head = self.roi_head.bbox_head
        return mmdet_detect(
            proposals, proposal_valid, bbox_head.fc_cls(x), bbox_head.fc_reg(x), image_size[0], image_size[1], self.cfg.detection
        )

    def fold_bn(self) -> "TroiDetector":
        self.backbone.fold_bn()
        return self


class TroiFrameStage(nn.Module):
    """inputs: image [1, 3, H, W]; outputs: feature [1, C, h, w], proposals [P, 4],
    proposal_valid [P], roi_feats [P, C, 7, 7], ref_keys and ref_values [L, P, C]."""

    input_names = ("image",)
    output_names = ("feature", "proposals", "proposal_valid", "roi_feats", "ref_keys", "ref_values")

    def __init__(self, detector: TroiDetector):
        super().__init__()
        self.detector = detector

    def forward(self, image):
        return self.detector.frame(image)


class TroiHeadStage(nn.Module):
    """inputs: the target's image_size [2] and frame-stage outputs, T support
    frames' feature maps, RoI features and masks; outputs: detections."""

    input_names = (
        "image_size", "feature", "proposals", "proposal_valid", "roi_feats", "ref_keys", "ref_values",
        "support_features", "support_ref_keys", "support_ref_values", "support_proposal_valid", "support_valid",
    )
    output_names = ("boxes", "scores", "labels", "valid")

    def __init__(self, detector: TroiDetector):
        super().__init__()
        self.detector = detector

    def forward(self, *inputs):
        return self.detector.head(*inputs)
