"""Greedy non-maximum suppression with a fixed-size output: the survivors of
``torchvision.ops.nms(boxes, scores, iou_threshold)``, first ``max_output`` of
them, padded with −1.

boxes [K, 4] = (x1, y1, x2, y2) and scores [K], both float32, give keep
[max_output] int32: indices into the input, in descending score order, then −1.

  order    a stable descending sort of the scores (of equal scores the lower
           index comes first: torchvision's CPU kernel sorts stably)
  area     (x2 − x1)·(y2 − y1)
  IoU      inter / ((area_a + area_b) − inter), inter = max(0, min(x2) − max(x1))·max(0, min(y2) − max(y1))
           in FP32, each operation rounded once (no FMA), as torchvision computes it
  greedy   walk the order; a box not yet suppressed is kept and suppresses
           every later box whose IoU with it is > iou_threshold (strictly)

An entry whose score is −inf (or NaN) is invalid: it is never kept and
suppresses nothing (detectors pad their candidate lists with −inf). For
finite scores the result is exactly ``torchvision.ops.nms(...)[:max_output]``;
−inf entries sort after all others there, so dropping them from
torchvision's result gives ours. A zero-area pair has IoU 0/0 = NaN, which is
not > the threshold, so identical degenerate boxes do not suppress each
other (as in torchvision). Coordinates must be finite.

torchvision compares the FP32 IoU with the threshold as a double. The ONNX
attribute, the plugin field and the kernels hold an FP32 threshold, so the
Python entry point rounds the threshold toward −inf to FP32: for every FP32
x, x > t (double) exactly when x > that FP32 value (0.3 as FP32 is above 0.3
and would keep a pair whose IoU rounds to it; torchvision suppresses it).

The output shape depends on ``max_output`` alone, never on the data, which is
what lets TensorRT (and TensorRT-RTX, which has no runner for ONNX
NonMaxSuppression) build it.

Three implementations that agree (tests/test_fixed_size_nms.py holds the naive oracle):
  reference  PyTorch below: sort, then the greedy walk with one vectorised
             IoU row per kept box
  portable   the ONNX function ``vidtrt.FixedSizeNMS`` (``onnx_function``):
             [K, K] IoU and precedence matrices and a fixed-point Loop
  fused      plugins/fixed_size_nms/fixed_size_nms_kernel.h (bitmask NMS),
             host build via vidtrt._kernels and CUDA build inside the TensorRT plugin
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import onnx
import torch

from .. import _native
from .function_builder import FunctionBuilder
from .registry import CustomOp, DOMAIN, register, untraced

OP_TYPE = "FixedSizeNMS"
PLUGIN_VERSION = "1"
# plugins/fixed_size_nms/fixed_size_nms_kernel.h: kMaxBoxes. The device scan
# keeps one bit per box in shared memory (8 KiB at this size) and the
# suppression mask grows with K² (512 MiB at this size).
MAX_BOXES = 65536


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(d) for d in t.shape) + "]"


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def check_inputs(boxes, scores, iou_threshold, max_output) -> None:
    """Raises ValueError (naming the argument and the shapes) for invalid input."""
    for name, t, rank, layout in (("boxes", boxes, 2, "[K, 4]"), ("scores", scores, 1, "[K]")):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"fixed_size_nms: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != rank:
            raise ValueError(f"fixed_size_nms: {name} must have rank {rank} {layout}, got shape {_shape(t)}")
        if t.dtype != torch.float32:
            raise ValueError(
                f"fixed_size_nms: {name} must be float32 (coordinates and scores stay FP32), got {t.dtype}"
            )
    if boxes.shape[1] != 4:
        raise ValueError(f"fixed_size_nms: boxes must have shape [K, 4] (x1, y1, x2, y2), got shape {_shape(boxes)}")
    if scores.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"fixed_size_nms: scores must have one entry per box, got boxes {_shape(boxes)} and scores {_shape(scores)}"
        )
    if boxes.shape[0] > MAX_BOXES:
        raise ValueError(f"fixed_size_nms: at most {MAX_BOXES} boxes are supported, got boxes {_shape(boxes)}")
    if boxes.device != scores.device:
        raise ValueError(
            f"fixed_size_nms: boxes and scores must be on one device, got {boxes.device} and {scores.device}"
        )
    if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, numbers.Real):
        raise ValueError(f"fixed_size_nms: iou_threshold must be a float, got {type(iou_threshold).__name__}")
    if not math.isfinite(iou_threshold):
        raise ValueError(f"fixed_size_nms: iou_threshold must be finite, got {iou_threshold}")
    if not _is_int(max_output):
        raise ValueError(f"fixed_size_nms: max_output must be an int, got {type(max_output).__name__}")
    if max_output < 1:
        raise ValueError(f"fixed_size_nms: max_output must be >= 1, got {max_output}")


def threshold_float32(iou_threshold: float) -> float:
    """The FP32 threshold that decides like torchvision's double comparison.

    torchvision tests ``iou > t`` with an FP32 iou and a double t. For an FP32
    x, x > t holds exactly when x > t↓, t↓ being t rounded toward −inf to FP32
    (the next FP32 value above t↓ is already above t). Round-to-nearest would
    differ when it rounds up and the IoU equals the rounded value.
    """
    t = float(iou_threshold)
    with np.errstate(over="ignore"):
        down = np.float32(t)
        if float(down) > t:
            down = np.nextafter(down, np.float32(-np.inf))
    return float(down)


def fixed_size_nms_reference(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, max_output: int):
    """Sort, then the greedy walk; each kept box computes its IoU with every
    later box in one vectorised row. ``iou_threshold`` is the FP32 threshold
    (``threshold_float32``). Stops once ``max_output`` boxes are kept."""
    boxes, scores = boxes.detach().cpu(), scores.detach().cpu()
    count = boxes.shape[0]
    valid = scores > float("-inf")  # False for NaN too
    key = torch.where(valid, scores, torch.full_like(scores, float("-inf")))
    order = torch.sort(key, descending=True, stable=True).indices
    x1, y1, x2, y2 = boxes[order].unbind(1)
    area = (x2 - x1) * (y2 - y1)
    suppressed = (~valid[order]).numpy().copy()
    order_list = order.tolist()
    keep = torch.full((max_output,), -1, dtype=torch.int32)
    kept = 0
    for p in range(count):
        if suppressed[p]:
            continue
        keep[kept] = order_list[p]
        kept += 1
        if kept == max_output:
            break
        later = slice(p + 1, None)
        w = (torch.minimum(x2[p], x2[later]) - torch.maximum(x1[p], x1[later])).clamp(min=0)
        h = (torch.minimum(y2[p], y2[later]) - torch.maximum(y1[p], y1[later])).clamp(min=0)
        inter = w * h
        iou = inter / ((area[p] + area[later]) - inter)
        suppressed[p + 1 :] |= (iou > iou_threshold).numpy()
    return keep


def fixed_size_nms_native(boxes, scores, iou_threshold: float, max_output: int, num_threads=0):
    """The fused kernel body (bitmask NMS), host build. CPU tensors only.

    No refuse_autograd here, unlike the other ops' fused paths: the result
    is a set of indices, which has no gradient on either path, so nothing is
    lost by detaching the inputs."""
    if boxes.device.type != "cpu":
        raise ValueError(f"fixed_size_nms: impl='native' runs on the CPU, got tensors on {boxes.device}")
    b, s = boxes.detach(), scores.detach()  # the body takes any strides
    keep = torch.empty(max_output, dtype=torch.int32)
    _native.kernels().fixed_size_nms_forward(
        b.data_ptr(), s.data_ptr(), keep.data_ptr(), b.shape[0], max_output, float(iou_threshold),
        b.stride(), s.stride(0), keep.stride(0), num_threads,
    )  # fmt: skip
    return keep


class _FixedSizeNMSExport(torch.autograd.Function):
    """Used only while exporting: emits one vidtrt::FixedSizeNMS node."""

    @staticmethod
    def forward(ctx, boxes, scores, iou_threshold, max_output):
        with untraced():
            return fixed_size_nms_reference(boxes, scores, iou_threshold, max_output)

    @staticmethod
    def symbolic(g, boxes, scores, iou_threshold, max_output):
        keep = g.op(
            f"{DOMAIN}::{OP_TYPE}",
            boxes,
            scores,
            iou_threshold_f=iou_threshold,
            max_output_i=max_output,
            plugin_version_s=PLUGIN_VERSION,
            plugin_namespace_s=DOMAIN,
        )
        keep.setType(boxes.type().with_dtype(torch.int32).with_sizes([max_output]))
        return keep


IMPLEMENTATIONS = ("reference", "native")


def fixed_size_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    iou_threshold: float,
    max_output: int,
    impl: str = "reference",
) -> torch.Tensor:
    """torchvision.ops.nms(boxes, scores, iou_threshold)[:max_output], padded with −1.

    boxes [K, 4] (x1, y1, x2, y2) and scores [K], float32; entries scored −inf
    (or NaN) are never kept and suppress nothing. Returns keep [max_output]
    int32: indices into boxes in descending score order (ties: lower index
    first), then −1. impl: "reference" (PyTorch) or "native" (fused host kernel).
    Not differentiable (the result is a set of indices).
    """
    check_inputs(boxes, scores, iou_threshold, max_output)
    threshold, count = threshold_float32(iou_threshold), int(max_output)
    if torch.onnx.is_in_onnx_export():
        return _FixedSizeNMSExport.apply(boxes, scores, threshold, count)
    if impl == "reference":
        return fixed_size_nms_reference(boxes, scores, threshold, count).to(boxes.device)
    if impl == "native":
        return fixed_size_nms_native(boxes, scores, threshold, count)
    raise ValueError(f"fixed_size_nms: impl must be one of {IMPLEMENTATIONS}, got {impl!r}")


# Names of the Loop's outputs inside the function: tests read the iteration
# count from an inlined copy of the graph.
LOOP_KEEP = "loop_keep"
LOOP_ITERATIONS = "loop_iterations"


def onnx_function(opset: int) -> onnx.FunctionProto:
    """Portable decomposition of vidtrt.FixedSizeNMS into standard ONNX ops.

    No data-dependent shape anywhere (no NonMaxSuppression, NonZero or TopK):

      before[i, j]   i precedes j in the stable descending order of the keys
                     (key = score, −inf for invalid entries): key_i > key_j, or
                     equal keys and i < j                         [K, K]
      over[i, j]     IoU(i, j) > iou_threshold, torchvision's FP32 expression  [K, K]
      S[i, j]        before & over & valid_i: a kept i suppresses j
      keep           the fixed point of keep[j] = valid_j & not any_i(keep[i] & S[i, j]),
                     iterated from keep = valid in a Loop that stops when nothing
                     changes. The greedy result is the only fixed point (each
                     entry depends only on entries before it), and after t
                     passes the first t entries of the order are final, so at
                     most K passes are needed (the trip count).
      rank[j]        number of kept entries before j (a ReduceSum of 0/1 floats,
                     exact below 2^24)
      out[r]         the kept j with rank r, else −1: one-hot [max_output, K]
                     of (rank == r) & keep, times (j + 1), summed, minus 1

    "any" is a 0/1 Mul and a ReduceSum, not a MatMul: TensorRT-RTX cannot
    build FP32 GEMMs for every target. K may be dynamic, and 0.
    """
    b = FunctionBuilder(OP_TYPE, ["boxes", "scores"], ["keep"], ["iou_threshold", "max_output"], opset)
    f32, i32 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT32
    zero, one = b.const(0), b.const(1)

    def fconst(v):
        return b.const(v, dtype=np.float32)

    threshold = b.attr_float("iou_threshold")
    max_output = b.attr_int("max_output")
    f_zero, f_one, f_minus_one, neg_inf = fconst(0.0), fconst(1.0), fconst(-1.0), fconst(-np.inf)

    count = b.op("Gather", b.op("Shape", "scores"), zero, axis=0)  # K, a scalar
    index = b.op("Range", zero, count, one)  # [K] int64

    def rows(t):  # [K] → [K, 1]: the value of entry i
        return b.unsqueeze(t, [1])

    def cols(t):  # [K] → [1, K]: the value of entry j
        return b.unsqueeze(t, [0])

    valid = b.op("Greater", "scores", neg_inf)  # False for −inf and NaN
    key = b.op("Where", valid, "scores", neg_inf)
    key_i, key_j = rows(key), cols(key)
    before = b.op(
        "Or",
        b.op("Greater", key_i, key_j),
        b.op("And", b.op("Equal", key_i, key_j), b.op("Less", rows(index), cols(index))),
    )

    x1, y1, x2, y2 = (b.op("Gather", "boxes", b.const(c), axis=1) for c in range(4))
    area = b.op("Mul", b.op("Sub", x2, x1), b.op("Sub", y2, y1))
    width = b.op("Max", b.op("Sub", b.op("Min", rows(x2), cols(x2)), b.op("Max", rows(x1), cols(x1))), f_zero)
    height = b.op("Max", b.op("Sub", b.op("Min", rows(y2), cols(y2)), b.op("Max", rows(y1), cols(y1))), f_zero)
    inter = b.op("Mul", width, height)
    iou = b.op("Div", inter, b.op("Sub", b.op("Add", rows(area), cols(area)), inter))
    over = b.op("Greater", iou, threshold)  # NaN (a zero-area pair) is not over
    suppress = b.op("Cast", b.op("And", b.op("And", before, over), rows(valid)), to=f32)
    valid_f = b.op("Cast", valid, to=f32)

    # Loop body: (iteration, cond, keep, passes) → (changed, keep', passes + 1).
    # It reads suppress, valid_f and the constants from the enclosing scope.
    h = onnx.helper
    body_nodes = [
        h.make_node("Unsqueeze", ["keep_in", b.const([1])], ["keep_rows"]),
        h.make_node("Mul", [suppress, "keep_rows"], ["kept_suppressors"]),
        h.make_node("ReduceSum", ["kept_suppressors", b.const([0])], ["hits"], keepdims=0),
        h.make_node("Greater", ["hits", f_zero], ["hit"]),
        h.make_node("Where", ["hit", f_zero, valid_f], ["keep_out"]),
        h.make_node("Sub", ["keep_out", "keep_in"], ["keep_delta"]),
        h.make_node("Abs", ["keep_delta"], ["keep_change"]),
        h.make_node("ReduceSum", ["keep_change", b.const([0])], ["changes"], keepdims=0),
        h.make_node("Greater", ["changes", f_zero], ["changed"]),
        h.make_node("Add", ["passes_in", one], ["passes_out"]),
    ]
    body = h.make_graph(
        body_nodes,
        "fixed_size_nms_fixed_point",
        [
            h.make_tensor_value_info("iteration", onnx.TensorProto.INT64, []),
            h.make_tensor_value_info("cond_in", onnx.TensorProto.BOOL, []),
            h.make_tensor_value_info("keep_in", f32, None),
            h.make_tensor_value_info("passes_in", onnx.TensorProto.INT64, []),
        ],
        [
            h.make_tensor_value_info("changed", onnx.TensorProto.BOOL, []),
            h.make_tensor_value_info("keep_out", f32, None),
            h.make_tensor_value_info("passes_out", onnx.TensorProto.INT64, []),
        ],
    )
    always = b.const(True, dtype=np.bool_)
    b.nodes.append(h.make_node("Loop", [count, always, valid_f, zero], [LOOP_KEEP, LOOP_ITERATIONS], body=body))
    keep_f = LOOP_KEEP

    # rank[j]: kept entries before j; slot r takes the kept j with rank r.
    rank = b.reduce_sum(b.op("Mul", b.op("Cast", before, to=f32), rows(keep_f)), [0])  # [K]
    slots = b.op("Cast", b.op("Range", zero, max_output, one), to=f32)  # [max_output]
    hit = b.op("And", b.op("Equal", cols(rank), rows(slots)), cols(b.op("Greater", keep_f, f_zero)))
    label = b.op("Add", b.op("Cast", index, to=f32), f_one)  # j + 1, exact below 2^24
    picked = b.op("Where", hit, cols(label), f_zero)  # [max_output, K], at most one nonzero per row
    # A zero column keeps the sum defined when K = 0.
    pad = b.op("ConstantOfShape", b.op("Concat", b.unsqueeze(max_output, [0]), b.const([1]), axis=0),
               value=onnx.numpy_helper.from_array(np.zeros(1, dtype=np.float32)))  # fmt: skip
    total = b.reduce_sum(b.op("Concat", picked, pad, axis=1), [1])  # [max_output]
    b.op("Cast", b.op("Add", total, f_minus_one), to=i32, out="keep")
    return b.build(doc=__doc__.split("\n\n")[0])


def example(dtype: torch.dtype = torch.float32, seed: int = 0):
    """An RPN's proposal NMS at reduced size: 1000 boxes crowded on a 600×1000
    image (many overlaps, some tied scores, 1 in 10 padded with −inf), IoU 0.7,
    up to 300 survivors. FP32 only: dtype must be float32."""
    if dtype != torch.float32:
        raise ValueError(f"FixedSizeNMS takes float32 boxes and scores only, got {dtype}")
    g = torch.Generator().manual_seed(seed)
    count = 1000
    centre = torch.rand(count, 2, generator=g) * torch.tensor([1000.0, 600.0])
    size = 16 + torch.rand(count, 2, generator=g) * 200
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=1)
    scores = torch.randint(0, 200, (count,), generator=g).float() / 200  # ties
    scores[::10] = float("-inf")
    return (boxes, scores), {"iou_threshold": 0.7, "max_output": 300}


def paper_problem(seed: int = 0):
    """An RPN's proposal NMS: 3840 proposals (the detectors' constant pre-NMS
    count) of 16..400 px on a 600×1000 image, IoU 0.7, 300 survivors."""
    g = torch.Generator().manual_seed(seed)
    count = 3840
    centre = torch.rand(count, 2, generator=g) * torch.tensor([1000.0, 600.0])
    size = 16 + torch.rand(count, 2, generator=g) * 384
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=1)
    scores = torch.rand(count, generator=g)
    attrs = {"iou_threshold": 0.7, "max_output": 300}
    return (boxes, scores), attrs, work((boxes, scores), attrs)


def work(tensors, attrs) -> dict:
    """Each pair's IoU once (~12 FLOPs); the K×K bit mask written and scanned."""
    count = tensors[0].shape[0]
    return {"flops": 12.0 * count * (count - 1) / 2, "bytes": 4.0 * count * 5 + 2 * count * count / 8}


register(
    CustomOp(
        op_type=OP_TYPE,
        plugin_version=PLUGIN_VERSION,
        attributes=("iou_threshold", "max_output"),
        build_function=onnx_function,
        function=fixed_size_nms,
        input_names=("boxes", "scores"),
        output_names=("keep",),
        example=example,
        work=work,
        paper_problem=paper_problem,
        # Box coordinates need FP32 (the IoU must be torchvision's to the bit).
        fp16=False,
        storage_types=(torch.float32,),
    )
)
