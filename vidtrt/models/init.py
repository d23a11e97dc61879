"""Deterministic weights for demos and tests.

PyTorch's default initialisation makes a deep network's outputs nearly
constant, so every score ties with every other and top-k/NMS choices hinge on
rounding. ``seeded_weights`` draws variance-preserving weights from a seed and
then rescales the score layers on a sample image so that logits have a set
spread: outputs are then decisive and identical across backends up to
rounding, which is what tests comparing backends need.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def seeded_weights(module: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            if m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.01)
    return module


@torch.no_grad()
def calibrate_logits(layer: nn.Conv2d | nn.Linear, inputs: torch.Tensor, target_std: float) -> None:
    """Rescales ``layer`` so that its outputs on ``inputs`` have standard deviation ``target_std``."""
    std = float(layer(inputs).std())
    if std > 0:
        layer.weight.mul_(target_std / std)
        if layer.bias is not None:
            layer.bias.mul_(target_std / std)
