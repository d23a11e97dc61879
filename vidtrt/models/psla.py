"""PSLA detector (Guo et al., "Progressive Sparse Local Attention for Video
Object Detection"): N_f / N_l feature networks, embeddings f and g, PSLA,
Recursive Feature Updating (RFU, §3.3), Dense Feature Transforming (DenseFT,
§3.4), and an RPN + R-FCN task network.

Where the paper is silent, choices made here (docs/ARCHITECTURE.md lists them):
- F_h = ReLU(1x1 conv(res5)) with ``feat_channels`` (1024) channels; the RPN and
  R-FCN run on F_h (key frames, after RFU) or on the DenseFT output.
- One pair of embeddings f, g serves RFU and DenseFT.
- Quality Net fuses the propagated feature with the Transform Net output
  (same channel count as F_t), not with the raw N_l feature.
- The temporal state is F_t together with f(F_t): non-key frames reuse the
  embedding of F_t instead of recomputing it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..ops import psla
from .classes import IMAGENET_VID_CLASSES
from .config_io import config_from_dict
from .key_frames import KEY_PLACEMENTS
from .postprocess import DetectionConfig, detect
from .preprocess_config import PreprocessConfig
from .resnet import ResNet
from .rfcn import RFCNConfig, RFCNHead
from .rpn import RPN, RPNConfig



@dataclass
class PslaConfig:
    name: str
    depth: int = 101
    backbone_width: int = 64  # the ResNet stem's channels (64 as published; narrower in small configs)
    low_level_block: str = "layer3.3"  # res4b3: the end of N_l
    feat_channels: int = 1024
    embed_channels: int = 256
    max_disp: int = 4
    transform_reduce: int = 256  # Transform Net: 1x1 reduce → 3x3 transform_channels → 3x3 feat_channels
    transform_channels: int = 256
    fusion_channels: int = 256  # Update Net / Quality Net: 1x1 → 256, 3x3 → 16, 3x3 → 2
    fusion_hidden: int = 16
    rpn: RPNConfig = field(default_factory=RPNConfig)
    rfcn: RFCNConfig = field(default_factory=RFCNConfig)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    key_interval: int = 10
    key_placement: str = "middle"
    class_names: tuple[str, ...] = IMAGENET_VID_CLASSES

    def __post_init__(self):
        if self.rfcn.num_classes != len(self.class_names) + 1:
            raise ValueError(
                f"rfcn.num_classes ({self.rfcn.num_classes}) must be len(class_names) + 1 ({len(self.class_names) + 1})"
            )
        if self.key_placement not in KEY_PLACEMENTS:
            raise ValueError(f"key_placement must be one of {KEY_PLACEMENTS}, got {self.key_placement!r}")
        if self.key_interval < 1:
            raise ValueError(f"key_interval must be >= 1, got {self.key_interval}")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PslaConfig":
        return config_from_dict(cls, d)


def _conv_relu(in_ch, out_ch, kernel):
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2), nn.ReLU(inplace=True))


class FusionNet(nn.Module):
    """Update Net (Fig. 4) / Quality Net: per-position weights of two features,
    normalised over the two (Ŵ + W = 1), and the weighted sum (Eq. 6)."""

    def __init__(self, channels: int, mid: int, hidden: int):
        super().__init__()
        self.reduce = _conv_relu(2 * channels, mid, 1)
        self.hidden = _conv_relu(mid, hidden, 3)
        self.weights = nn.Conv2d(hidden, 2, 3, padding=1)

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.weights(self.hidden(self.reduce(torch.cat([first, second], dim=1)))), dim=1)
        return w[:, 0:1] * first + w[:, 1:2] * second


class TransformNet(nn.Module):
    """Bottleneck lifting N_l's low-level features towards F_h (§3.4, Fig. 5)."""

    def __init__(self, in_channels: int, reduce: int, mid: int, out_channels: int):
        super().__init__()
        self.body = nn.Sequential(_conv_relu(in_channels, reduce, 1), _conv_relu(reduce, mid, 3), _conv_relu(mid, out_channels, 3))

    def forward(self, x):
        return self.body(x)


class PslaDetector(nn.Module):
    def __init__(self, cfg: PslaConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = ResNet(cfg.depth, dilate_res5=True, width=cfg.backbone_width)
        self.feat_reduce = nn.Conv2d(self.backbone.out_channels, cfg.feat_channels, 1)
        low_channels = self.backbone.channels_at(cfg.low_level_block)
        self.transform = TransformNet(low_channels, cfg.transform_reduce, cfg.transform_channels, cfg.feat_channels)
        self.embed_f = nn.Conv2d(cfg.feat_channels, cfg.embed_channels, 1)
        self.embed_g = nn.Conv2d(cfg.feat_channels, cfg.embed_channels, 1)
        self.update_net = FusionNet(cfg.feat_channels, cfg.fusion_channels, cfg.fusion_hidden)
        self.quality_net = FusionNet(cfg.feat_channels, cfg.fusion_channels, cfg.fusion_hidden)
        self.rpn = RPN(cfg.feat_channels, cfg.rpn)
        self.rfcn = RFCNHead(cfg.feat_channels, cfg.rfcn)
        # "reference" or "native" for the custom ops when run eagerly (export always emits the op node).
        self.op_impl = "reference"
        self.feature_stride = self.backbone.out_stride

    # N_f: high-level features of a key frame.
    def high_level(self, image: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.feat_reduce(self.backbone(image)))

    # N_l followed by the Transform Net: features of a non-key frame.
    def low_level(self, image: torch.Tensor) -> torch.Tensor:
        return self.transform(self.backbone(image, until=self.cfg.low_level_block))

    def embed_temporal(self, temporal: torch.Tensor) -> torch.Tensor:
        return self.embed_f(temporal)

    def align(self, current: torch.Tensor, temporal: torch.Tensor, temporal_key: torch.Tensor) -> torch.Tensor:
        """PSLA(current, F_t): F_t aligned to the current frame (Eq. 1-5)."""
        return psla(self.embed_g(current), temporal_key, temporal, self.cfg.max_disp, impl=self.op_impl)

    def rfu(self, high: torch.Tensor, temporal: torch.Tensor, temporal_key: torch.Tensor) -> torch.Tensor:
        """Recursive Feature Updating (§3.3, Eq. 6): the new F_t."""
        return self.update_net(self.align(high, temporal, temporal_key), high)

    def dense_ft(self, low: torch.Tensor, temporal: torch.Tensor, temporal_key: torch.Tensor) -> torch.Tensor:
        """Dense Feature Transforming (§3.4): the non-key frame's feature."""
        return self.quality_net(self.align(low, temporal, temporal_key), low)

    def detect(self, feature: torch.Tensor, image: torch.Tensor):
        """N_t: RPN + R-FCN + post-processing → (boxes, scores, labels, valid), fixed size."""
        height, width = image.shape[2], image.shape[3]
        rois, _, roi_valid = self.rpn(feature, height, width)
        class_logits, deltas = self.rfcn(feature, rois, impl=self.op_impl)
        return detect(rois, roi_valid, class_logits, deltas, height, width, self.cfg.detection)

    def fold_bn(self) -> "PslaDetector":
        self.backbone.fold_bn()
        return self


# ---------------------------------------------------------------- stages

class PslaKeyStage(nn.Module):
    """Key frame: N_f, RFU with the carried F_t (unless there is none yet), detection.

    inputs:  image [1, 3, H, W], temporal_in [1, C, h, w], temporal_key_in [1, e, h, w],
             has_state [1] (1.0 once a key frame has been seen, else 0.0)
    outputs: boxes, scores, labels, valid, temporal_out, temporal_key_out
    """

    input_names = ("image", "temporal_in", "temporal_key_in", "has_state")
    output_names = ("boxes", "scores", "labels", "valid", "temporal_out", "temporal_key_out")

    def __init__(self, detector: PslaDetector):
        super().__init__()
        self.detector = detector

    def forward(self, image, temporal_in, temporal_key_in, has_state):
        d = self.detector
        high = d.high_level(image)
        updated = d.rfu(high, temporal_in, temporal_key_in)
        temporal = torch.where(has_state.view(1, 1, 1, 1) > 0.5, updated, high)
        boxes, scores, labels, valid = d.detect(temporal, image)
        return boxes, scores, labels, valid, temporal, d.embed_temporal(temporal)


class PslaNonKeyStage(nn.Module):
    """Non-key frame: N_l + Transform Net, DenseFT from F_t, detection.

    inputs:  image, temporal_in, temporal_key_in; outputs: boxes, scores, labels, valid
    """

    input_names = ("image", "temporal_in", "temporal_key_in")
    output_names = ("boxes", "scores", "labels", "valid")

    def __init__(self, detector: PslaDetector):
        super().__init__()
        self.detector = detector

    def forward(self, image, temporal_in, temporal_key_in):
        d = self.detector
        feature = d.dense_ft(d.low_level(image), temporal_in, temporal_key_in)
        return d.detect(feature, image)


class PerFrameStage(nn.Module):
    """Baseline: N_f + N_t on every frame (no temporal propagation); for benchmarks."""

    input_names = ("image",)
    output_names = ("boxes", "scores", "labels", "valid")

    def __init__(self, detector: PslaDetector):
        super().__init__()
        self.detector = detector

    def forward(self, image):
        return self.detector.detect(self.detector.high_level(image), image)
