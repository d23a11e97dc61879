"""Impression Network (Hetang et al., 2017) and Deep Feature Flow (Zhu et al., 2017).

Both run the feature network N_feat on key frames only and carry the key
feature to the other frames of a segment with optical flow (FlowNet-S,
models/flow.py). The Impression Network also carries an *impression
feature* across segments and fuses it into every key feature (Algorithm 1,
Eq. 2-4); with that switched off (``aggregation = "none"``) the same model is
DFF, the paper's method (b).

The detector is laid out as mmtracking's DFF (``mmtrack/models/vid/dff.py``):
``detector`` is the still-image detector (feature network + task network)
and ``motion`` the flow net, so an mmtracking DFF checkpoint loads key for
key. Two still-image detectors:

- ``head = "rfcn"`` (the Impression Network paper, Sec. 4): ResNet with a
  dilated last block, a 1024-channel 3x3 conv + ReLU (``feat_conv``), an RPN
  on its first 512 channels and R-FCN on the second 512 (7x7 groups). The RPN
  and R-FCN score layers are 1x1 convs straight on the halves, as in the
  original DFF/R-FCN code (``mid_channels = 0``).
- ``head = "faster_rcnn"`` (mmtracking's ``faster_rcnn_r50_dc5``): ResNet-DC5,
  ChannelMapper 3x3 -> 512 + ReLU, mmdet RPN, RoIAlign 7x7 and
  Shared2FCBBoxHead (two FCs, class-specific deltas, background last). Its
  pieces are models/troi.py's, which follow mmdet.

Choices where the sources are silent or disagree (docs/ARCHITECTURE.md):
- The scale map S (Sec. 3.3) multiplies every warp, also the impression's
  warp to the next key frame. mmtracking's DFF has no scale map
  (``scale_map = False`` in the dff_* configs).
- Flow is computed on the padded frames the detector sees; upstream zeroes
  the padding before its flow net (models/flow.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .classes import IMAGENET_VID_CLASSES
from .config_io import config_from_dict
from .flow import FlowNetConfig, FlowNetSimple, ImpressionFusion, ScaleMap, resize_flow, warp
from .key_frames import KEY_PLACEMENTS
from .postprocess import DetectionConfig, detect
from .preprocess_config import PreprocessConfig
from .resnet import ResNet
from .rfcn import RFCNConfig, RFCNHead
from .roi_align import roi_align
from .rpn import RPN, RPNConfig
from .troi import ChannelMapper, MmdetRPNHead, mmdet_detect

HEADS = ("rfcn", "faster_rcnn")
AGGREGATIONS = ("impression", "none")


@dataclass
class ImpressionConfig:
    name: str
    depth: int = 101
    backbone_width: int = 64  # the ResNet stem's channels (64 as published; narrower in small configs)
    head: str = "rfcn"
    # rfcn: channels of feat_conv (RPN on the first half, R-FCN on the second);
    # faster_rcnn: the ChannelMapper's output channels.
    feat_channels: int = 1024
    rpn: RPNConfig = field(default_factory=lambda: RPNConfig(mid_channels=0, pre_nms=3840, post_nms=300))
    rfcn: RFCNConfig = field(default_factory=lambda: RFCNConfig(group_size=7, mid_channels=0))
    # faster_rcnn: Shared2FCBBoxHead
    roi_size: int = 7
    sampling_ratio: int = 2
    fc_channels: int = 1024
    flow: FlowNetConfig = field(default_factory=FlowNetConfig)
    scale_map: bool = True
    aggregation: str = "impression"
    quality_hidden: tuple[int, int] = (256, 16)  # N_q: 3x3 -> 256, 1x1 -> 16, 1x1 -> 1
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    key_interval: int = 10  # l, the segment length
    key_placement: str = "middle"
    memory_gate: float = 1.0  # g of Eq. 4 (1.0 is the paper's best)
    class_names: tuple[str, ...] = IMAGENET_VID_CLASSES

    def __post_init__(self):
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        if self.key_placement not in KEY_PLACEMENTS:
            raise ValueError(f"key_placement must be one of {KEY_PLACEMENTS}, got {self.key_placement!r}")
        if self.key_interval < 1:
            raise ValueError(f"key_interval must be >= 1, got {self.key_interval}")
        if not 0.0 <= self.memory_gate <= 1.0:
            raise ValueError(f"memory_gate must be in [0, 1], got {self.memory_gate}")
        if self.head == "rfcn":
            if self.feat_channels % 2:
                raise ValueError(f"feat_channels ({self.feat_channels}) must be even: RPN and R-FCN take one half each")
            if self.rfcn.num_classes != len(self.class_names) + 1:
                raise ValueError(
                    f"rfcn.num_classes ({self.rfcn.num_classes}) must be len(class_names) + 1 ({len(self.class_names) + 1})"
                )
        # Flow is resized to the feature map by the constant 1 / 16: frames must
        # pad to a multiple of the stride for the two sizes to agree.
        if self.preprocess.pad_to_multiple % 16:
            raise ValueError(f"preprocess.pad_to_multiple must be a multiple of 16 (the feature stride), got {self.preprocess.pad_to_multiple}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names) + 1

    @property
    def has_impression(self) -> bool:
        return self.aggregation == "impression"

    def as_dict(self) -> dict:
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ImpressionConfig":
        return config_from_dict(cls, d)


# ------------------------------------------------------------ still-image detectors (N_feat + N_task)


class RfcnStillDetector(nn.Module):
    """N_feat: ResNet (dilated res5) + 3x3 conv to ``feat_channels`` + ReLU;
    N_task: RPN on the first half of the channels, R-FCN on the second."""

    def __init__(self, cfg: ImpressionConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = ResNet(cfg.depth, dilate_res5=True, width=cfg.backbone_width)
        self.feat_conv = nn.Conv2d(self.backbone.out_channels, cfg.feat_channels, 3, padding=1)
        half = cfg.feat_channels // 2
        self.rpn = RPN(half, cfg.rpn)
        self.rfcn = RFCNHead(half, cfg.rfcn)
        self.op_impl = "reference"

    def extract_feat(self, image):
        return torch.relu(self.feat_conv(self.backbone(image)))

    def detect(self, feature, image):
        height, width = image.shape[2], image.shape[3]
        half = self.cfg.feat_channels // 2
        rois, _, roi_valid = self.rpn(feature[:, :half], height, width)
        class_logits, deltas = self.rfcn(feature[:, half:], rois, impl=self.op_impl)
        return detect(rois, roi_valid, class_logits, deltas, height, width, self.cfg.detection)


class Shared2FCBBoxHead(nn.Module):
    """mmdet's Shared2FCBBoxHead: flatten, two FC + ReLU, class scores
    (background last) and class-specific deltas."""

    def __init__(self, in_features: int, fc_channels: int, num_classes: int):
        super().__init__()
        self.shared_fcs = nn.ModuleList([nn.Linear(in_features, fc_channels), nn.Linear(fc_channels, fc_channels)])
        self.fc_cls = nn.Linear(fc_channels, num_classes)
        self.fc_reg = nn.Linear(fc_channels, 4 * (num_classes - 1))

    def features(self, x):
        x = x.flatten(1)
        for fc in self.shared_fcs:
            x = torch.relu(fc(x))
        return x

    def forward(self, x):
        x = self.features(x)
        return self.fc_cls(x), self.fc_reg(x)


class _RoIHead(nn.Module):
    def __init__(self, cfg: ImpressionConfig):
        super().__init__()
        self.bbox_head = Shared2FCBBoxHead(cfg.feat_channels * cfg.roi_size**2, cfg.fc_channels, cfg.num_classes)


class FasterRcnnStillDetector(nn.Module):
    """mmtracking's faster_rcnn_r50_dc5 (keys ``backbone``, ``neck``,
    ``rpn_head``, ``roi_head.bbox_head``, as under ``detector.`` upstream)."""

    def __init__(self, cfg: ImpressionConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = ResNet(cfg.depth, dilate_res5=True, width=cfg.backbone_width)
        self.neck = ChannelMapper(self.backbone.out_channels, cfg.feat_channels)
        self.rpn_head = MmdetRPNHead(cfg.feat_channels, cfg.rpn)
        self.roi_head = _RoIHead(cfg)
        self.op_impl = "reference"

    def extract_feat(self, image):
        return self.neck(self.backbone(image))

    def roi_features(self, feature, proposals):
        rois = torch.cat([torch.zeros_like(proposals[:, :1]), proposals], dim=1)
        return roi_align(feature, rois, self.cfg.roi_size, 1.0 / 16, self.cfg.sampling_ratio, aligned=True)

    def detect(self, feature, image):
        height, width = image.shape[2], image.shape[3]
        proposals, valid = self.rpn_head(feature, height, width)
        class_logits, deltas = self.roi_head.bbox_head(self.roi_features(feature, proposals))
        return mmdet_detect(proposals, valid, class_logits, deltas, height, width, self.cfg.detection)


# ------------------------------------------------------------ the video detector


class ImpressionDetector(nn.Module):
    def __init__(self, cfg: ImpressionConfig):
        super().__init__()
        self.cfg = cfg
        still = RfcnStillDetector if cfg.head == "rfcn" else FasterRcnnStillDetector
        self.detector = still(cfg)
        # The flow net undoes the detector's normalisation: it must be this config's.
        # Means and stds are in the order of the channels the detector sees (BGR unless to_rgb).
        p = cfg.preprocess
        flow_cfg = dataclasses.replace(cfg.flow, img_norm_mean=tuple(p.mean), img_norm_std=tuple(p.std))
        self.motion = FlowNetSimple(flow_cfg)
        if cfg.scale_map:
            self.scale_map = ScaleMap(flow_cfg.top_channels, cfg.feat_channels)
        if cfg.has_impression:
            self.fusion = ImpressionFusion(cfg.feat_channels, tuple(cfg.quality_hidden), cfg.memory_gate)
        self.feature_stride = self.detector.backbone.out_stride

    @property
    def op_impl(self) -> str:
        return self.detector.op_impl

    @op_impl.setter
    def op_impl(self, value: str) -> None:
        self.detector.op_impl = value

    # N_feat and N_task
    def features(self, image: torch.Tensor) -> torch.Tensor:
        return self.detector.extract_feat(image)

    def detect(self, feature: torch.Tensor, image: torch.Tensor):
        """N_task + post-processing → (boxes, scores, labels, valid), fixed size."""
        return self.detector.detect(feature, image)

    # flow-guided propagation
    def flow(self, current: torch.Tensor, reference: torch.Tensor):
        """(flow at the feature size in feature pixels, scale map or None) that
        carry features of ``reference`` to ``current``."""
        flow, top = self.motion.forward_with_top(torch.cat([current, reference], dim=1))
        flow = resize_flow(flow, 1.0 / self.feature_stride)
        return flow, (self.scale_map(top) if self.cfg.scale_map else None)

    def propagate(self, features: torch.Tensor, current: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """W(f_ref, F(I_cur, I_ref), S): ``features`` of ``reference`` warped to ``current``."""
        flow, scale = self.flow(current, reference)
        warped = warp(features, flow)
        return warped * scale if scale is not None else warped

    def fuse(self, feature: torch.Tensor, warped_impression: torch.Tensor, gate: torch.Tensor):
        """Eq. 2-4: (f_task, f_imp) of a key frame from its feature and the
        previous impression warped to it; ``gate`` [1] is g."""
        return self.fusion(feature, warped_impression, gate)

    def fold_bn(self) -> "ImpressionDetector":
        self.detector.backbone.fold_bn()
        return self


# ------------------------------------------------------------ stages

DETECTIONS = ("boxes", "scores", "labels", "valid")


class ImpressionKeyStage(nn.Module):
    """Key frame: N_feat; with the impression, flow from the previous key
    frame, the impression warped to this frame, fusion (Eq. 2-4) and the
    impression update; N_task on f_task.

    inputs:  image [1, 3, H, W]; with the impression also prev_key_image
             [1, 3, H, W], impression_in [1, C, h, w], has_state [1] (0.0 on
             the first key frame: then f_task = f_imp = f), memory_gate [1]
    outputs: boxes, scores, labels, valid, task_feature_out [1, C, h, w],
             key_image_out (= image, the next flow's reference), and with the
             impression impression_out [1, C, h, w]
    """

    def __init__(self, detector: ImpressionDetector):
        super().__init__()
        self.detector = detector
        if detector.cfg.has_impression:
            self.input_names = ("image", "prev_key_image", "impression_in", "has_state", "memory_gate")
            self.output_names = DETECTIONS + ("task_feature_out", "impression_out", "key_image_out")
        else:
            self.input_names = ("image",)
            self.output_names = DETECTIONS + ("task_feature_out", "key_image_out")

    def forward(self, image, prev_key_image=None, impression_in=None, has_state=None, memory_gate=None):
        d = self.detector
        feature = d.features(image)
        if not d.cfg.has_impression:
            return (*d.detect(feature, image), feature, image.clone())
        task, impression = d.fuse(feature, d.propagate(impression_in, image, prev_key_image), memory_gate)
        first = has_state.view(1, 1, 1, 1) < 0.5
        task = torch.where(first, feature, task)
        impression = torch.where(first, feature, impression)
        return (*d.detect(task, image), task, impression, image.clone())


class ImpressionNonKeyStage(nn.Module):
    """Non-key frame: flow from the key frame, f_task warped to this frame, N_task.

    inputs:  image, key_image [1, 3, H, W], task_feature_in [1, C, h, w]
    outputs: boxes, scores, labels, valid
    """

    input_names = ("image", "key_image", "task_feature_in")
    output_names = DETECTIONS

    def __init__(self, detector: ImpressionDetector):
        super().__init__()
        self.detector = detector

    def forward(self, image, key_image, task_feature_in):
        d = self.detector
        return d.detect(d.propagate(task_feature_in, image, key_image), image)


class ImpressionPerFrameStage(nn.Module):
    """Baseline, the paper's method (a): N_feat + N_task on every frame."""

    input_names = ("image",)
    output_names = DETECTIONS

    def __init__(self, detector: ImpressionDetector):
        super().__init__()
        self.detector = detector

    def forward(self, image):
        return self.detector.detect(self.detector.features(image), image)
