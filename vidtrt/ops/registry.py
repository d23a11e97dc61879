"""Registry of vidtrt's custom ONNX ops.

Every custom op appears in an exported graph as one node in the ``vidtrt``
domain (op_type = TensorRT plugin name) and the model carries a model-local
ONNX function of the same domain and name holding the op's portable
decomposition. ONNX Runtime inlines the function; TensorRT's ONNX parser uses
the plugin when the plugin library is loaded and the function otherwise.

The ops themselves are listed once, in plugins/vidtrt_ops.def, from which the
native build derives its sources and the plugin library its creators;
``op_table_problems`` says where that list, this registry and the plugin
sources disagree (tests/test_plugin_library_info.py runs it).
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
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
    # The fused kernel's work on a problem: (tensors, attrs) -> {"flops": ...,
    # "bytes": ...}, flops counting 2 per multiply-add and bytes the least
    # memory traffic (inputs read once, output written once) in the tensors'
    # storage type. Used by `vidtrt selfcheck --bench` and the GPU roofline.
    work: Callable | None = None
    # The op at its paper's scale for `vidtrt selfcheck --bench`: () -> (FP32
    # tensors, attrs, work(tensors, attrs)).
    paper_problem: Callable | None = None
    # (tensors) -> the same values in the layout the host kernel reads without
    # copying (channels-last for MostSimilarRoIAlign, and for PSLA where its
    # NCHW-rows schedule does not run: their native entry points copy other
    # layouts first). None: the kernel reads the inputs
    # as they are. The bench times the kernel on these too, so its GFLOP/s
    # against the ceiling are the kernel's, not the layout copies'.
    kernel_layout: Callable | None = None


def channels_last(tensors) -> tuple:
    """4-D tensors as channels-last copies, others unchanged (a ``kernel_layout``)."""
    return tuple(t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t for t in tensors)


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


def refuse_autograd(op_name: str, **inputs: torch.Tensor | None) -> None:
    """Called first by every fused (impl="native") path whose reference is
    differentiable, with the inputs the reference differentiates.

    The fused kernels have no backward, and detaching their inputs would hand
    back an output without a gradient, so a training loop would silently
    stop learning; this raises ValueError instead, while grad mode is on and
    any of ``inputs`` requires grad. Under torch.no_grad() (inference,
    export) nothing is checked.
    """
    if not torch.is_grad_enabled():
        return
    needing = [name for name, t in inputs.items() if isinstance(t, torch.Tensor) and t.requires_grad]
    if needing:
        names = ", ".join(needing)
        raise ValueError(
            f"{op_name}: impl='native' has no backward pass, but {names} "
            f"{'requires' if len(needing) == 1 else 'require'} grad; use impl='reference' for gradients "
            "(or call it under torch.no_grad() when no gradient is wanted)"
        )


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


# ---------------------------------------------------------------- the op table (plugins/vidtrt_ops.def)

OP_TABLE_NAME = "vidtrt_ops.def"

# The form plugins/vidtrt_ops.cmake accepts too: VIDTRT_OP(directory, PluginName, "version", CreatorClass).
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_OP_LINE = re.compile(
    rf'\s*VIDTRT_OP\(\s*({_IDENTIFIER})\s*,\s*({_IDENTIFIER})\s*,\s*"([A-Za-z0-9._-]+)"\s*,\s*({_IDENTIFIER})\s*\)\s*'
)

# What plugins/<directory>/ holds for every op (docs/ARCHITECTURE.md, "The custom-op pattern").
PLUGIN_FILES = (
    "{op}_kernel.h",
    "{op}_launch.h",
    "{op}_host.cpp",
    "{op}_cuda.cu",
    "{op}_plugin.h",
    "{op}_plugin.cpp",
    "README.md",
)


@dataclass(frozen=True)
class OpTableEntry:
    directory: str  # plugins/<directory>/ and vidtrt/ops/<directory>.py
    op_type: str  # TensorRT plugin name == ONNX op_type
    plugin_version: str
    creator: str  # the C++ creator class


def read_op_table(path: str | os.PathLike) -> tuple[OpTableEntry, ...]:
    """The VIDTRT_OP lines of ``path``, in order. Raises ValueError for a
    malformed line or an op listed twice, as the CMake configuration does."""
    entries: list[OpTableEntry] = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.lstrip().startswith("VIDTRT_OP"):
            continue  # comments and blank lines
        match = _OP_LINE.fullmatch(line)
        if match is None:
            raise ValueError(
                f"{path}:{number}: malformed line {line.strip()!r}; "
                'expected VIDTRT_OP(directory, PluginName, "version", CreatorClass)'
            )
        entry = OpTableEntry(*match.groups())
        for field in ("directory", "op_type", "creator"):
            if any(getattr(e, field) == getattr(entry, field) for e in entries):
                raise ValueError(f"{path}:{number}: {field} {getattr(entry, field)!r} is listed twice")
        entries.append(entry)
    return tuple(entries)


def source_plugins_dir() -> Path | None:
    """plugins/ of the source tree vidtrt runs from (a checkout or an editable
    install), or None for an installed package, which has no plugin sources."""
    plugins = Path(__file__).resolve().parents[2] / "plugins"
    return plugins if (plugins / OP_TABLE_NAME).is_file() else None


def op_table_problems(plugins_dir: str | os.PathLike, ops: dict[str, CustomOp] | None = None) -> list[str]:
    """Where plugins/vidtrt_ops.def, the registry (``ops``, default: the
    registered ops) and the plugin sources disagree; [] when they agree. For
    each line: a registered op of that op_type and plugin_version whose public
    function lives in vidtrt/ops/<directory>.py, and every file of
    PLUGIN_FILES in plugins/<directory>/; for each registered op: a line."""
    plugins_dir = Path(plugins_dir)
    ops = registered_ops() if ops is None else ops
    problems: list[str] = []
    table = read_op_table(plugins_dir / OP_TABLE_NAME)
    for entry in table:
        op = ops.get(entry.op_type)
        if op is None:
            problems.append(f"{OP_TABLE_NAME} lists {entry.op_type} but no such op is registered")
        else:
            if op.plugin_version != entry.plugin_version:
                problems.append(
                    f"{entry.op_type}: plugin version {entry.plugin_version!r} in {OP_TABLE_NAME}, "
                    f"{op.plugin_version!r} in the registry"
                )
            module = getattr(op.function, "__module__", None)
            if module != f"vidtrt.ops.{entry.directory}":
                problems.append(
                    f"{entry.op_type}: its function lives in {module}, not in vidtrt.ops.{entry.directory} "
                    f"(the directory {OP_TABLE_NAME} gives it)"
                )
        directory = plugins_dir / entry.directory
        for pattern in PLUGIN_FILES:
            name = pattern.format(op=entry.directory)
            if not (directory / name).is_file():
                problems.append(f"{entry.op_type}: plugins/{entry.directory}/{name} is missing")
    listed = {entry.op_type for entry in table}
    unlisted = [op_type for op_type in ops if op_type not in listed]
    problems += [f"{op_type} is registered but {OP_TABLE_NAME} has no line for it" for op_type in unlisted]
    return problems
