"""Progressive Sparse Local Attention (PSLA, Guo et al., §3.2, Eq. 1-5).

For each position (y, x) of the query map, the neighbourhood Φ(y, x) is the
centre plus, for every stride s = 1..max_disp, the 8 cells at offsets
(a, b) ∈ {-s, 0, s}² other than (0, 0). Logits are plain inner products of
query(y, x) with key at those cells; cells outside the map take no part in the
softmax; the output is the softmax-weighted sum of value at the same cells.

Three implementations that agree (tests/test_psla.py holds the naive oracle):
  reference  vectorised PyTorch below (differentiable; the semantic definition)
  portable   the ONNX function ``vidtrt.PSLA`` (``onnx_function``)
  fused      plugins/psla/psla_kernel.h, host build via vidtrt._kernels and
             CUDA build inside the TensorRT plugin
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from .. import _native
from .function_builder import FunctionBuilder
from .registry import CustomOp, DOMAIN, refuse_autograd, register, untraced

OP_TYPE = "PSLA"
PLUGIN_VERSION = "1"
MAX_DISP = 8  # plugins/psla/psla_kernel.h: kMaxDisp (bounds per-position arrays)
_FLOAT_TYPES = (torch.float32, torch.float16)


@functools.cache
def cell_offsets(max_disp: int) -> tuple[tuple[int, int], ...]:
    """(dy, dx) of every cell, in the order shared with the kernel and the ONNX function."""
    ring = [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1) if (a, b) != (0, 0)]
    return ((0, 0),) + tuple((a * s, b * s) for s in range(1, max_disp + 1) for a, b in ring)


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(d) for d in t.shape) + "]"


def check_inputs(query, key, value, max_disp) -> None:
    """Raises ValueError (naming the argument and the shapes) for invalid input."""
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"psla: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"psla: {name} must have rank 4 [N, C, H, W], got shape {_shape(t)}")
    if query.shape != key.shape:
        raise ValueError(
            f"psla: query and key must have the same shape [N, c, H, W], got query {_shape(query)} and key {_shape(key)}"
        )
    n, _, h, w = query.shape
    if (value.shape[0], value.shape[2], value.shape[3]) != (n, h, w):
        raise ValueError(
            f"psla: value must match query in N, H and W, got value {_shape(value)} and query {_shape(query)}"
        )
    if query.shape[1] == 0:
        raise ValueError(f"psla: query and key need at least one channel, got query {_shape(query)}")
    if isinstance(max_disp, bool) or not isinstance(max_disp, (int, np.integer)):
        raise ValueError(f"psla: max_disp must be an int, got {type(max_disp).__name__}")
    if not 0 <= max_disp <= MAX_DISP:
        raise ValueError(f"psla: max_disp must be in [0, {MAX_DISP}], got {max_disp}")
    if not (query.dtype == key.dtype == value.dtype):
        raise ValueError(
            f"psla: query, key and value must share one dtype, got {query.dtype}, {key.dtype}, {value.dtype}"
        )
    if not (query.device == key.device == value.device):
        raise ValueError(
            f"psla: query, key and value must be on one device, got {query.device}, {key.device}, {value.device}"
        )


def inside_mask(height: int, width: int, max_disp: int, device=None) -> torch.Tensor:
    """[cells, H, W] bool: whether cell i of position (y, x) lies inside the map."""
    ys = torch.arange(height, device=device)
    xs = torch.arange(width, device=device)
    masks = []
    for dy, dx in cell_offsets(max_disp):
        in_y = (ys + dy >= 0) & (ys + dy < height)
        in_x = (xs + dx >= 0) & (xs + dx < width)
        masks.append(in_y[:, None] & in_x[None, :])
    return torch.stack(masks)


def psla_reference(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, max_disp: int) -> torch.Tensor:
    """Vectorised over positions; loops over the 1 + 8·max_disp cells.

    Holds one shifted view of key/value at a time (views of one zero-padded
    copy), never all of them. Computes in FP32 for FP16 input, like the kernel.
    """
    compute = torch.float32 if query.dtype == torch.float16 else query.dtype
    q, k, v = query.to(compute), key.to(compute), value.to(compute)
    n, _, h, w = q.shape
    d = max_disp
    padded_key = F.pad(k, (d, d, d, d))
    padded_value = F.pad(v, (d, d, d, d))
    offsets = cell_offsets(d)

    def window(padded: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
        return padded[:, :, d + dy : d + dy + h, d + dx : d + dx + w]

    logits = torch.stack([(q * window(padded_key, dy, dx)).sum(1) for dy, dx in offsets], dim=1)
    logits = logits.masked_fill(~inside_mask(h, w, d, device=q.device), float("-inf"))
    weights = torch.softmax(logits, dim=1)  # [N, cells, H, W]
    out = torch.zeros_like(v)
    for i, (dy, dx) in enumerate(offsets):
        out = out.addcmul(weights[:, i : i + 1], window(padded_value, dy, dx))
    return out.to(value.dtype)


HOST_ISAS = ("auto", "generic")


def _native_layout(dtype_name: str, isa: str) -> torch.memory_format:
    """The layout the host kernel reads without copying: NCHW where its
    NCHW-rows schedule runs (FP32 with AVX2), else channels-last, which makes
    the per-position channel loops unit-stride."""
    return torch.contiguous_format if _native.kernels().psla_reads_nchw(dtype_name, isa) else torch.channels_last


def psla_native(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, max_disp: int, num_threads: int = 0, isa: str = "auto"
):
    """The fused kernel body, host build. CPU tensors, FP32 or FP16; no autograd
    (refuses inputs that require grad while grad mode is on).

    isa="generic" forces the baseline x86-64 build of the body (for tests);
    "auto" takes the AVX2 + FMA build when the CPU has it."""
    refuse_autograd("psla", query=query, key=key, value=value)
    if isa not in HOST_ISAS:
        raise ValueError(f"psla: isa must be one of {HOST_ISAS}, got {isa!r}")
    if query.device.type != "cpu":
        raise ValueError(f"psla: impl='native' runs on the CPU, got tensors on {query.device}")
    if query.dtype not in _FLOAT_TYPES:
        raise ValueError(f"psla: impl='native' takes float32 or float16, got {query.dtype}")
    dtype_name = str(query.dtype).removeprefix("torch.")
    layout = _native_layout(dtype_name, isa)
    q, k, v = (t.detach().contiguous(memory_format=layout) for t in (query, key, value))
    out = torch.empty_like(v, memory_format=layout)
    n, c, h, w = q.shape
    _native.kernels().psla_forward(
        dtype_name,
        q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(),
        (n, c, v.shape[1], h, w), int(max_disp),
        q.stride(), k.stride(), v.stride(), out.stride(),
        num_threads, isa,
    )  # fmt: skip
    return out


class _PSLAExport(torch.autograd.Function):
    """Used only while exporting: emits one vidtrt::PSLA node."""

    @staticmethod
    def forward(ctx, query, key, value, max_disp):
        with untraced():
            return psla_reference(query, key, value, max_disp)

    @staticmethod
    def symbolic(g, query, key, value, max_disp):
        out = g.op(
            f"{DOMAIN}::{OP_TYPE}",
            query,
            key,
            value,
            max_disp_i=max_disp,
            plugin_version_s=PLUGIN_VERSION,
            plugin_namespace_s=DOMAIN,
        )
        out.setType(value.type())
        return out


IMPLEMENTATIONS = ("reference", "native")


def psla(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, max_disp: int, impl: str = "reference"):
    """PSLA(query = g(F^{t+ε}), key = f(F^t), value = F^t) → value aligned to the query frame.

    query, key: [N, c, H, W]; value: [N, C, H, W]; returns [N, C, H, W].
    impl: "reference" (PyTorch, differentiable) or "native" (fused host kernel).
    """
    check_inputs(query, key, value, max_disp)
    if torch.onnx.is_in_onnx_export():
        return _PSLAExport.apply(query, key, value, int(max_disp))
    if impl == "reference":
        return psla_reference(query, key, value, int(max_disp))
    if impl == "native":
        return psla_native(query, key, value, int(max_disp))
    raise ValueError(f"psla: impl must be one of {IMPLEMENTATIONS}, got {impl!r}")


def onnx_function(opset: int) -> onnx.FunctionProto:
    """Portable decomposition of vidtrt.PSLA into standard ONNX ops.

    Gathers key and value at all cells ([N, ch, cells, H·W]) — the fused kernel
    exists because this costs cells× the memory of value. Logits, softmax and
    the weighted sum run in FP32 whatever the input type.
    """
    b = FunctionBuilder(OP_TYPE, ["query", "key", "value"], ["out"], ["max_disp"], opset)
    f32 = onnx.TensorProto.FLOAT
    zero, one = b.const(0), b.const(1)
    d = b.attr_int("max_disp")
    strides = b.unsqueeze(b.op("Range", one, b.op("Add", d, one), one), [1])  # [d, 1]
    ring = [(a, c) for a in (-1, 0, 1) for c in (-1, 0, 1) if (a, c) != (0, 0)]
    centre = b.const([0])

    def offsets(axis_values):
        scaled = b.reshape(b.op("Mul", strides, b.const([axis_values])), [-1])  # [8d], stride-major
        return b.op("Concat", centre, scaled, axis=0)  # [cells]

    dy = offsets([a for a, _ in ring])
    dx = offsets([c for _, c in ring])
    cells = b.op("Shape", dy)  # [1]
    q_shape = b.op("Shape", "query")
    height = b.op("Gather", q_shape, b.const(2), axis=0)
    width = b.op("Gather", q_shape, b.const(3), axis=0)

    def neighbour(delta, size):
        """Neighbour coordinates [cells, size], whether inside, and clamped into range."""
        pos = b.op("Add", b.unsqueeze(delta, [1]), b.unsqueeze(b.op("Range", zero, size, one), [0]))
        inside = b.op("And", b.op("GreaterOrEqual", pos, zero), b.op("Less", pos, size))
        clamped = b.op("Min", b.op("Max", pos, zero), b.op("Sub", size, one))
        return inside, clamped

    in_y, cy = neighbour(dy, height)
    in_x, cx = neighbour(dx, width)
    inside = b.op("And", b.unsqueeze(in_y, [2]), b.unsqueeze(in_x, [1]))  # [cells, H, W]
    index = b.op("Add", b.op("Mul", b.unsqueeze(cy, [2]), width), b.unsqueeze(cx, [1]))
    index = b.reshape(index, [-1])  # [cells·H·W] into the flattened map

    def gathered(x):  # [N, ch, H, W] → FP32 [N, ch, cells, H·W]
        flat = b.op("Cast", b.reshape(x, [0, 0, -1]), to=f32)
        grouped = b.op("Concat", b.const([0, 0]), cells, b.const([-1]), axis=0)
        return b.reshape(b.op("Gather", flat, index, axis=2), grouped)

    query = b.op("Cast", b.reshape("query", [0, 0, -1]), to=f32)
    logits = b.reduce_sum(b.op("Mul", b.unsqueeze(query, [2]), gathered("key")), [1])  # [N, cells, H·W]
    mask = b.reshape(inside, b.op("Concat", b.const([1]), cells, b.const([-1]), axis=0))
    logits = b.op("Where", mask, logits, b.const(float("-inf"), dtype=np.float32))
    weights = b.op("Softmax", logits, axis=1)
    out = b.reduce_sum(b.op("Mul", gathered("value"), b.unsqueeze(weights, [1])), [2])  # [N, C, H·W]
    out = b.reshape(b.op("CastLike", out, "value"), b.op("Shape", "value"))
    b.op("Identity", out, out="out")
    return b.build(doc=__doc__.split("\n\n")[0])


def example(dtype: torch.dtype = torch.float32, seed: int = 0):
    """A PSLA problem at a quarter of the paper's channels (c=64, C=256, 19×32, d=4)."""
    g = torch.Generator().manual_seed(seed)
    query, key = (torch.randn(1, 64, 19, 32, generator=g) * 0.25 for _ in range(2))
    value = torch.randn(1, 256, 19, 32, generator=g)
    return tuple(t.to(dtype) for t in (query, key, value)), {"max_disp": 4}


def paper_problem(seed: int = 0):
    """PSLA at the paper's scale: c = 256, C = 1024 on the 38×63 map of a
    600×1000 image, max displacement 4."""
    g = torch.Generator().manual_seed(seed)
    n, c, big_c, h, w, d = 1, 256, 1024, 38, 63, 4
    query, key = (torch.randn(n, c, h, w, generator=g) * 0.1 for _ in range(2))
    value = torch.randn(n, big_c, h, w, generator=g)
    return (query, key, value), {"max_disp": d}, work((query, key, value), {"max_disp": d})


def work(tensors, attrs) -> dict:
    """Logits (c) and weighted sum (C) over the (cell, position) pairs inside the map."""
    query, _, value = tensors
    n, c, h, w = query.shape
    big_c = value.shape[1]
    cells = int(inside_mask(h, w, int(attrs["max_disp"])).sum())
    size = value.element_size()
    return {"flops": 2.0 * n * cells * (c + big_c), "bytes": float(size * n * h * w * (2 * c + 2 * big_c))}


def kernel_layout(tensors) -> tuple:
    """The inputs in the layout psla_native reads without copying (a
    ``kernel_layout``)."""
    layout = _native_layout(str(tensors[0].dtype).removeprefix("torch."), "auto")
    return tuple(t.contiguous(memory_format=layout) for t in tensors)


register(
    CustomOp(
        op_type=OP_TYPE,
        plugin_version=PLUGIN_VERSION,
        attributes=("max_disp",),
        build_function=onnx_function,
        function=psla,
        input_names=("query", "key", "value"),
        output_names=("out",),
        example=example,
        work=work,
        paper_problem=paper_problem,
        kernel_layout=kernel_layout,
    )
)
