"""The ``onnxruntime`` backend: the bundle's ONNX graphs. CPU here; the CUDA
execution provider where present. Custom ops run with their fused host kernels
on the CPU provider when the build has them, as their local functions
otherwise (``custom_ops``, onnxruntime_fused_ops). Values stay OrtValues
between stages, on the provider's device."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import onnxruntime as ort

from ...core.bundle import Bundle
from . import onnxruntime_fused_ops
from .base import Backend


def default_providers() -> list[str]:
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(
        self,
        bundle: Bundle,
        providers: Sequence[str] | None = None,
        threads: int = 0,
        stages=None,
        precision: str = "fp32",
        custom_ops: str | None = None,
        spinning: bool | None = None,
    ):
        super().__init__(bundle)
        self.precision = precision
        self.providers = list(providers or default_providers())
        self.device = "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"
        # fused or decomposed, resolved once for every stage (onnxruntime_fused_ops.resolve_mode).
        self.custom_ops = onnxruntime_fused_ops.resolve_mode(custom_ops, self.providers)
        wanted = stages or list(bundle.stages)
        self.sessions = {
            name: onnxruntime_fused_ops.create_session(
                bundle.stage_file(name, precision), self.providers, self.custom_ops, threads, spinning
            )
            for name in wanted
        }
        self.output_names = {name: [o.name for o in s.get_outputs()] for name, s in self.sessions.items()}

    def _run(self, stage: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        session = self.sessions[stage]
        feeds = {i.name: self._as_ortvalue(inputs[i.name]) for i in session.get_inputs()}
        outputs = session.run_with_ort_values(self.output_names[stage], feeds)
        return dict(zip(self.output_names[stage], outputs))

    def _as_ortvalue(self, value) -> ort.OrtValue:
        return value if isinstance(value, ort.OrtValue) else self.from_numpy(value)

    def from_numpy(self, array: np.ndarray) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device, 0)

    def to_numpy(self, value: ort.OrtValue) -> np.ndarray:
        return value.numpy()
