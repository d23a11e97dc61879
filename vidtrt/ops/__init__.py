"""Custom ops: reference (PyTorch), portable (ONNX function) and fused (C++/CUDA) layers."""

from .psla import psla
from .registry import registered_ops

__all__ = ["psla", "registered_ops"]
