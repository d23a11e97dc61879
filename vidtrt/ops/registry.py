"""Registry of vidtrt's custom ONNX ops.

Every custom op appears in an exported graph as one node in the ``vidtrt``
domain (op_type = TensorRT plugin name) and the model carries a model-local
ONNX function of the same domain and name holding the op's portable
decomposition. ONNX Runtime inlines the function; TensorRT's ONNX parser uses
the plugin when the plugin library is loaded and the function otherwise.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import onnx
import torch

DOMAIN = "vidtrt"
DOMAIN_VERSION = 1


@dataclass(frozen=True)
class CustomOp:
    op_type: str  # ONNX op_type == TensorRT plugin name
    plugin_version: str  # TensorRT plugin version, also the node's plugin_version attribute
    attributes: tuple[str, ...]  # node attributes the local function reads (besides plugin_version)
    build_function: Callable[[int], onnx.FunctionProto]  # opset -> portable decomposition
    # The public op, called as function(*tensors, **attrs, impl=...).
    function: Callable
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    # A representative problem for the self-check: dtype -> (tensors, attrs).
    example: Callable
    # Whether FP16 graphs feed this op FP16 tensors (its plugin and function take
    # them); False keeps the op in FP32, e.g. when an input holds coordinates.
    fp16: bool = True
    # The dtypes its public function and fused kernel accept; the self-check
    # runs the op's example in these only.
    storage_types: tuple[torch.dtype, ...] = (torch.float32, torch.float16)


_OPS: dict[str, CustomOp] = {}


def register(op: CustomOp) -> CustomOp:
    if op.op_type in _OPS:
        raise ValueError(f"custom op {op.op_type!r} is registered twice")
    _OPS[op.op_type] = op
    return op


def registered_ops() -> dict[str, CustomOp]:
    return dict(_OPS)


def _default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise ValueError("model has no default-domain opset import")


def attach_local_functions(model: onnx.ModelProto) -> list[str]:
    """Adds the local function of every vidtrt op used in ``model``'s graph.

    Returns the op types whose functions were attached. Raises ValueError for a
    node in the vidtrt domain that no registered op describes.
    """
    used = sorted({n.op_type for n in model.graph.node if n.domain == DOMAIN})
    if not used:
        return []
    opset = _default_opset(model)
    have = {(f.domain, f.name) for f in model.functions}
    for op_type in used:
        if op_type not in _OPS:
            raise ValueError(f"graph has a node {DOMAIN}.{op_type} but no such custom op is registered")
        if (DOMAIN, op_type) not in have:
            model.functions.append(_OPS[op_type].build_function(opset))
    if not any(imp.domain == DOMAIN for imp in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(DOMAIN, DOMAIN_VERSION))
    return used


@contextlib.contextmanager
def untraced():
    """Switches the TorchScript tracer off inside an export Function's forward.

    The exporter must record only the op's symbolic node; tracing the
    reference's ops into the Function's sub-block breaks the exporter's passes.
    """
    state = torch._C._get_tracing_state()
    torch._C._set_tracing_state(None)
    try:
        yield
    finally:
        torch._C._set_tracing_state(state)
