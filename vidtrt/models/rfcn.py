"""R-FCN head (Dai et al. 2016): position-sensitive score maps pooled with
PS RoI Align over k×k groups, averaged into class scores and box deltas."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..ops import ps_roi_align


@dataclass
class RFCNConfig:
    num_classes: int = 31  # including background (index 0)
    group_size: int = 7  # k
    mid_channels: int = 1024  # 1x1 conv + ReLU before the score maps; 0: none (the score maps read the feature)
    sampling_ratio: int = 2
    stride: int = 16

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class RFCNHead(nn.Module):
    def __init__(self, in_channels: int, cfg: RFCNConfig):
        super().__init__()
        self.cfg = cfg
        k2 = cfg.group_size**2
        self.conv_new = nn.Conv2d(in_channels, cfg.mid_channels, 1) if cfg.mid_channels else None
        score_in = cfg.mid_channels or in_channels
        self.cls = nn.Conv2d(score_in, k2 * cfg.num_classes, 1)
        self.reg = nn.Conv2d(score_in, k2 * 4, 1)  # class-agnostic deltas

    def forward(self, feature: torch.Tensor, rois: torch.Tensor, impl: str = "reference"):
        """feature [1, C, h, w], rois [R, 4] (input pixels) → class logits [R, K], deltas [R, 4]."""
        x = torch.relu(self.conv_new(feature)) if self.conv_new is not None else feature
        rois5 = torch.cat([torch.zeros_like(rois[:, :1]), rois], dim=1)
        cfg = self.cfg
        pooled_cls = ps_roi_align(self.cls(x), rois5, cfg.group_size, 1.0 / cfg.stride, cfg.sampling_ratio, impl=impl)
        pooled_reg = ps_roi_align(self.reg(x), rois5, cfg.group_size, 1.0 / cfg.stride, cfg.sampling_ratio, impl=impl)
        # Vote: average over the k×k position-sensitive bins.
        return pooled_cls.mean(dim=(2, 3)), pooled_reg.mean(dim=(2, 3))
