"""Backends: one interface to run a bundle's stages on named arrays.

A backend owns its arrays (torch tensors, ONNX Runtime OrtValues, TensorRT
device buffers): a stage's outputs can be fed back as the next invocation's
inputs without a round trip through host numpy, which is how pipelines carry
temporal state.
"""

from __future__ import annotations

from ...core.bundle import Bundle
from .base import Backend

BACKENDS = ("torch", "onnxruntime", "tensorrt", "tensorrt-rtx")


def create_backend(name: str, bundle: Bundle, **options) -> Backend:
    if name == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend(bundle, **options)
    if name == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(bundle, **options)
    if name in ("tensorrt", "tensorrt-rtx"):
        from ...tensorrt.flavours import require

        # Before importing the backend: the error then names what is missing
        # (TensorRTUnavailable, a RuntimeError) instead of an ImportError deep inside.
        require(name, f"the {name} backend")
        from .tensorrt_backend import TensorRTBackend, TensorRTRTXBackend

        return (TensorRTBackend if name == "tensorrt" else TensorRTRTXBackend)(bundle, **options)
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "create_backend"]
