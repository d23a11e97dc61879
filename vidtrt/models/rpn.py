"""Region Proposal Network with proposal generation inside the graph and a
fixed number of outputs (padded, with a validity mask)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import boxes as box_ops


@dataclass
class RPNConfig:
    anchor_sizes: tuple[float, ...] = (128.0, 256.0, 512.0)  # sqrt(area) in input pixels
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # h / w
    stride: int = 16
    mid_channels: int = 512  # 0: no 3x3 conv, the 1x1 score layers read the feature (R-FCN / DFF)
    pre_nms: int = 3840  # upstream uses 6000; TensorRT's TopK allows ≤ 3840
    post_nms: int = 300
    nms_iou: float = 0.7
    min_size: float = 0.0  # proposals narrower or lower than this (input pixels) are dropped

    @property
    def num_anchors(self) -> int:
        return len(self.anchor_sizes) * len(self.anchor_ratios)

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


class RPN(nn.Module):
    """3x3 conv + ReLU (unless ``mid_channels`` is 0), then per-anchor
    objectness (sigmoid) and box deltas."""

    delta_pixel_offset = 0  # box widths x2 - x1 in its decoder (what training encodes with)

    def __init__(self, in_channels: int, cfg: RPNConfig):
        super().__init__()
        self.cfg = cfg
        a = cfg.num_anchors
        self.conv = nn.Conv2d(in_channels, cfg.mid_channels, 3, padding=1) if cfg.mid_channels else None
        score_in = cfg.mid_channels or in_channels
        self.cls = nn.Conv2d(score_in, a, 1)
        self.reg = nn.Conv2d(score_in, 4 * a, 1)
        self.register_buffer("base_anchors", box_ops.base_anchors(cfg.anchor_sizes, cfg.anchor_ratios), persistent=False)

    def head_outputs(self, feature: torch.Tensor):
        """feature [1, C, h, w] → anchors [N, 4], objectness logits [N], deltas
        [N, 4], position-major like grid_anchors (what training's losses read)."""
        x = torch.relu(self.conv(feature)) if self.conv is not None else feature
        # [1, A, h, w] → [h·w·A], position-major like grid_anchors.
        logits = self.cls(x).permute(0, 2, 3, 1).reshape(-1)
        deltas = self.reg(x).permute(0, 2, 3, 1).reshape(-1, 4)
        anchors = box_ops.grid_anchors(self.base_anchors, feature.shape[2], feature.shape[3], self.cfg.stride)
        return anchors, logits, deltas

    def forward(self, feature: torch.Tensor, image_height, image_width):
        """feature [1, C, h, w] → proposals [P, 4] (input pixels), scores [P], valid [P]."""
        return self.propose(*self.head_outputs(feature), image_height, image_width)

    def propose(self, anchors, logits, deltas, image_height, image_width, post_nms: int | None = None):
        """Decoded, clipped, NMS'd proposals; ``post_nms`` overrides the config's count (training samples from more)."""
        proposals = box_ops.clip(box_ops.decode(anchors, deltas), image_height, image_width)
        scores = torch.sigmoid(logits)
        if self.cfg.min_size > 0:
            w = proposals[:, 2] - proposals[:, 0]
            h = proposals[:, 3] - proposals[:, 1]
            small = (w < self.cfg.min_size) | (h < self.cfg.min_size)
            scores = torch.where(small, torch.full_like(scores, float("-inf")), scores)
        index, valid = box_ops.fixed_size_nms(
            proposals, scores, self.cfg.nms_iou, self.cfg.pre_nms, post_nms or self.cfg.post_nms
        )
        return proposals[index], torch.where(valid, scores[index], torch.zeros_like(scores[index])), valid
