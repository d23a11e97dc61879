"""The ``torch`` backend: the bundle's stage modules run eagerly in PyTorch,
rebuilt from the checkpoint stored in the bundle (the eager reference of the
same graphs)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from ...core.bundle import Bundle
from ...methods import get_method
from .base import Backend


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, bundle: Bundle, device: str = "cpu", op_impl: str = "reference"):
        super().__init__(bundle)
        method = get_method(bundle.manifest.method)
        _, detector = method.load_detector(checkpoint=bundle.path(bundle.manifest.checkpoint))
        detector.op_impl = op_impl
        self.device = torch.device(device)
        self.detector = detector.to(self.device).eval()
        self.modules = method.stage_modules(self.detector)

    @torch.no_grad()
    def _run(self, stage: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        module = self.modules[stage]
        outputs = module(*(inputs[name] for name in module.input_names))
        return dict(zip(module.output_names, outputs))

    def from_numpy(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def to_numpy(self, value: torch.Tensor) -> np.ndarray:
        return value.detach().cpu().numpy()
