"""Custom ops: reference (PyTorch), portable (ONNX function) and fused (C++/CUDA) layers."""

from .ps_roi_align import ps_roi_align
from .psla import psla
from .registry import registered_ops

__all__ = ["ps_roi_align", "psla", "registered_ops"]
