"""MFSA (Multi-Focus guided Semantic Aggregation, with the Relation
Propagation Module): Faster R-CNN whose region features are refined by
relation propagation across a batch of K frames before classification and
regression.

No public code exists; this layout is the toolkit's (docs/ARCHITECTURE.md):
- N_feat: ResNet up to conv4 (``layer3``, stride 16); the RPN on conv4
  (paper §3.2: "RPN is appended after conv4"), 300 proposals, NMS 0.7.
- Region features R (D = 1024): RoIAlign 14×14 on conv4 → res5 (``layer4``,
  stride 2) → average pool → fc → ReLU (the R-101-C4 head, so ResNet-101's
  res5 weights are used as in the paper's backbone).
- RPM: σ(R) = ReLU(Linear(R)), φ(R) = ReLU(Linear(R)) (Eq. 1's "nonlinear"
  transform; the op normalises them, so a_ij = max(0, cos) ∈ [0, 1]);
  R̂ = Norm(A·A + A)·R (Eq. 2-3) over all K·M regions of the batch.
- Classification (K+1 classes) and class-specific box regression on R + R̂
  (``relation_residual``, the default) or on R̂ alone (the paper's text,
  ``relation_residual=False``). The paper updates R to R̂ = Â·R (Eq. 3) and
  puts its residual inside Eq. 2 (+A). Â is row-normalised over all K·M
  regions, so R̂ is a convex blend of them; trained on the synthetic set, a
  head on R̂ alone reached 0.331 mAP held out against 0.839 for the same
  detector without RPM (docs/ACCURACY.md). Adding R back, as the relation
  modules MFSA builds on do (Relation Networks, SELSA, MEGA: f + f_R),
  keeps each region's own appearance and location in what the head reads.
- Multi-Focus: one relation matrix per batch of K frames detects all K.
  Single-Focus: one relation matrix per target frame over the K frames
  centred on it, detecting only that frame (the paper's costly baseline).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .classes import IMAGENET_VID_CLASSES
from .config_io import config_from_dict
from .postprocess import DetectionConfig, detect
from .preprocess_config import PreprocessConfig
from .resnet import ResNet
from .roi_align import roi_align
from .rpn import RPN, RPNConfig

MODES = ("multi", "single")


@dataclass
class MfsaConfig:
    name: str
    depth: int = 101
    backbone_width: int = 64  # the ResNet stem's channels (64 as published; narrower in small configs)
    region_dim: int = 1024  # D
    relation_dim: int = 1024  # width of σ(R), φ(R)
    roi_size: int = 14  # RoIAlign output before res5 (which halves it)
    sampling_ratio: int = 2
    batch_frames: int = 21  # K at inference
    rpn: RPNConfig = field(
        default_factory=lambda: RPNConfig(anchor_sizes=(64.0, 128.0, 256.0, 512.0), mid_channels=1024, pre_nms=3840, post_nms=300)
    )
    detection: DetectionConfig = field(default_factory=lambda: DetectionConfig(nms_iou=0.5, box_weights=(10.0, 10.0, 5.0, 5.0)))
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    mode: str = "multi"
    relation_residual: bool = True  # the head reads R + R̂ (True) or R̂ alone (False); see the module docstring
    class_names: tuple[str, ...] = IMAGENET_VID_CLASSES

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.batch_frames < 1:
            raise ValueError(f"batch_frames must be >= 1, got {self.batch_frames}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names) + 1

    def as_dict(self) -> dict:
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "MfsaConfig":
        return config_from_dict(cls, d)


class MfsaDetector(nn.Module):
    def __init__(self, cfg: MfsaConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = ResNet(cfg.depth, last_block=f"layer3.{_last_index(cfg.depth, 3)}", width=cfg.backbone_width)
        head = ResNet(cfg.depth, width=cfg.backbone_width)
        self.res5 = head.layer4  # the region head (R-101-C4): stride 2 on the RoI features
        del head
        res5_channels = self.backbone.out_channels * 2
        self.rpn = RPN(self.backbone.out_channels, cfg.rpn)
        self.region_fc = nn.Linear(res5_channels, cfg.region_dim)
        self.sigma = nn.Linear(cfg.region_dim, cfg.relation_dim)
        self.phi = nn.Linear(cfg.region_dim, cfg.relation_dim)
        self.cls = nn.Linear(cfg.region_dim, cfg.num_classes)
        self.reg = nn.Linear(cfg.region_dim, 4 * (cfg.num_classes - 1))
        self.op_impl = "reference"
        self.feature_stride = self.backbone.out_stride

    # N_feat + RPN + region features of one frame.
    def frame(self, image: torch.Tensor):
        """image [1, 3, H, W] → proposals [P, 4], valid [P], regions [P, D]."""
        feature = self.backbone(image)
        proposals, _, valid = self.rpn(feature, image.shape[2], image.shape[3])
        return proposals, valid, self.regions(feature, proposals)

    def regions(self, feature: torch.Tensor, proposals: torch.Tensor) -> torch.Tensor:
        """Region features [P, D] of ``proposals`` [P, 4]: RoIAlign, res5, mean, FC + ReLU."""
        rois = torch.cat([torch.zeros_like(proposals[:, :1]), proposals], dim=1)
        pooled = roi_align(
            feature, rois, self.cfg.roi_size, 1.0 / self.feature_stride, self.cfg.sampling_ratio, aligned=True
        )
        return torch.relu(self.region_fc(self.res5(pooled).mean(dim=(2, 3))))

    def relate(self, regions: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """RPM over a batch: regions [N, D] (all K·M regions), valid [N] → R̂ [N, D]."""
        from ..ops import relation_propagation

        sigma = torch.relu(self.sigma(regions))
        phi = torch.relu(self.phi(regions))
        return relation_propagation(sigma, phi, regions, valid, impl=self.op_impl)

    def head_input(self, regions: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """What classification and regression read: R + R̂, or R̂ alone (``relation_residual``)."""
        refined = self.relate(regions, valid)
        return regions + refined if self.cfg.relation_residual else refined

    def batch(self, proposals, valid, regions, image_size):
        """K frames: proposals [K, P, 4], valid [K, P], regions [K, P, D],
        image_size [2] (H, W) → per-frame detections stacked: boxes [K, Dm, 4],
        scores [K, Dm], labels [K, Dm], valid [K, Dm]. One relation matrix for
        all K frames (Multi-Focus)."""
        k, p, d = regions.shape
        refined = self.head_input(regions.reshape(k * p, d), valid.reshape(k * p)).reshape(k, p, d)
        logits, deltas = self.cls(refined), self.reg(refined)
        outputs = [
            detect(proposals[i], valid[i], logits[i], deltas[i], image_size[0], image_size[1], self.cfg.detection)
            for i in range(k)
        ]
        return tuple(torch.stack(parts) for parts in zip(*outputs))

    def fold_bn(self) -> "MfsaDetector":
        self.backbone.fold_bn()
        for block in self.res5:
            block.fold_bn()
        return self


def _last_index(depth: int, stage: int) -> int:
    from .resnet import STAGE_BLOCKS

    return STAGE_BLOCKS[depth][stage - 1] - 1


class MfsaFrameStage(nn.Module):
    """inputs: image [1, 3, H, W]; outputs: proposals [P, 4], proposal_valid [P], regions [P, D]."""

    input_names = ("image",)
    output_names = ("proposals", "proposal_valid", "regions")

    def __init__(self, detector: MfsaDetector):
        super().__init__()
        self.detector = detector

    def forward(self, image):
        return self.detector.frame(image)


class MfsaBatchStage(nn.Module):
    """inputs: proposals [K, P, 4], proposal_valid [K, P], regions [K, P, D], image_size [2];
    outputs: boxes [K, Dm, 4], scores [K, Dm], labels [K, Dm], valid [K, Dm]."""

    input_names = ("proposals", "proposal_valid", "regions", "image_size")
    output_names = ("boxes", "scores", "labels", "valid")

    def __init__(self, detector: MfsaDetector):
        super().__init__()
        self.detector = detector

    def forward(self, proposals, proposal_valid, regions, image_size):
        return self.detector.batch(proposals, proposal_valid, regions, image_size)


class PerFrameDetectorStage(nn.Module):
    """Baseline Faster R-CNN (no RPM): one frame → detections. For benchmarks."""

    input_names = ("image",)
    output_names = ("boxes", "scores", "labels", "valid")

    def __init__(self, detector: MfsaDetector):
        super().__init__()
        self.detector = detector

    def forward(self, image):
        d = self.detector
        proposals, valid, regions = d.frame(image)
        return detect(proposals, valid, d.cls(regions), d.reg(regions), image.shape[2], image.shape[3], d.cfg.detection)
