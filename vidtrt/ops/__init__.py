"""Custom ops: reference (PyTorch), portable (ONNX function) and fused (C++/CUDA) layers."""

from .fixed_size_nms import fixed_size_nms
from .most_similar_roi_align import most_similar_roi_align
from .ps_roi_align import PSRoIAlign, ps_roi_align
from .psla import psla
from .registry import registered_ops
from .relation_propagation import relation_propagation

__all__ = [
    "PSRoIAlign",
    "fixed_size_nms",
    "most_similar_roi_align",
    "ps_roi_align",
    "psla",
    "registered_ops",
    "relation_propagation",
]
