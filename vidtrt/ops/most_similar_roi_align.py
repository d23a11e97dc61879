"""Most-similar RoI align: the MS RoI Align of Temporal RoI Align (Gong et al.,
AAAI 2021, §"Temporal ROI Align", Eq. 2-4), with open-mmlab/mmtracking's
semantics.

roi_feats [R, C, h, w] (RoIAlign features of the target frame's proposals) and
support_feats [T, C, H, W] (support frame feature maps) give out
[T, R, C, h, w]. For every RoI cell m = (r, y, x) and support frame t:

  s_j  = <n(roi_feats[r, :, y, x]), n(support_feats[t, :, j])>   (Eq. 2; j over the
         H·W cells in row-major order; n(v) = v / max(‖v‖₂, 1e-12))
  J    = the top_k cells of largest s_j; of equal similarities the lower j wins
  w_j  = exp(s_j) / Σ_{i ∈ J} exp(s_i)                            (Eq. 3; no temperature)
  out[t, r, :, y, x] = Σ_{j ∈ J} w_j · support_feats[t, :, j]     (Eq. 4; un-normalised)

What mmtracking does (mmtrack/models/roi_heads/roi_extractors/temporal_roi_align.py,
``TemporalRoIAlign.most_similar_roi_align``, read at commit 34f7ddd6) and how
this op relates to it:
- Cosine similarity: both sides divided by ``tensor.norm(p=2, dim=1)``, one
  matrix product of the [R·h·w, C] and [C, T·H·W] normalised features, viewed
  as [R·h·w, T, H·W]. Same here.
- ``topk(k=num_most_similar_points, dim=2, largest=True)`` per support frame:
  top_k distinct cells of each frame separately. Same here.
- ``values.softmax(dim=2)`` directly on the cosine similarities: no scaling or
  temperature (similarities lie in [-1, 1], so the weights are mild). Same here.
- The weighted sum gathers ``ref_feats`` (not the normalised copy). Same here.
- Output ``[img_n, roi_n, C, roi_h, roi_w]`` = [T, R, C, h, w]. Same here.
- Zero vectors: mmtracking divides by the bare norm, so a zero RoI or support
  vector becomes NaN and poisons the outputs it touches. Here the norm is
  clamped at 1e-12 (torch.nn.functional.normalize), so a zero vector has
  similarity 0 with everything; for any vector of norm ≥ 1e-12 the two agree.
- Ties: torch.topk does not specify which of equal values it returns. Here
  the lower cell index wins in all three layers (ONNX TopK specifies exactly
  that; the kernel keeps an earlier cell on equality; the reference breaks
  ties explicitly), so the layers agree even on exact ties.
- mmtracking's configs (configs/vid/temporal_roi_align/*) use
  ``num_most_similar_points=2`` with 512-channel features, 7×7 RoIs and 14
  support frames at test time; the paper's ablation picked K = 4. top_k here
  is in [1, 8] (the kernel's per-query arrays) and at most H·W.

Three implementations that agree (tests/test_most_similar_roi_align.py holds
the naive oracle):
  reference  vectorised PyTorch below (differentiable w.r.t. both inputs)
  portable   the ONNX function ``vidtrt.MostSimilarRoIAlign`` (``onnx_function``)
  fused      plugins/most_similar_roi_align/most_similar_roi_align_kernel.h, host
             build via vidtrt._kernels and CUDA build inside the TensorRT plugin;
             it never stores the (R·h·w) × (T·H·W) similarity matrix (about 2 GB
             in FP32 at the paper's scale), which the other two hold one
             support frame at a time (about 140 MB).
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from .. import _native
from .function_builder import FunctionBuilder
from .registry import CustomOp, DOMAIN, channels_last, refuse_autograd, register, untraced

OP_TYPE = "MostSimilarRoIAlign"
PLUGIN_VERSION = "1"
MAX_TOP_K = 8  # plugins/most_similar_roi_align/most_similar_roi_align_kernel.h: kMaxTopK
NORM_EPS = 1e-12  # kNormEps; torch.nn.functional.normalize's default
_STORAGE_TYPES = (torch.float32, torch.float16)
# float64 runs only in the reference, for gradient checks.
_REFERENCE_TYPES = _STORAGE_TYPES + (torch.float64,)
# Largest similarity block the reference holds at once (elements): the whole
# per-frame matrix at the paper's scale (14 700 × 2 394) fits in two blocks.
_REFERENCE_BLOCK = 1 << 24


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(d) for d in t.shape) + "]"


def check_inputs(roi_feats, support_feats, top_k) -> None:
    """Raises ValueError (naming the argument and the shapes) for invalid input."""
    for name, t, layout in (("roi_feats", roi_feats, "[R, C, h, w]"), ("support_feats", support_feats, "[T, C, H, W]")):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"most_similar_roi_align: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"most_similar_roi_align: {name} must have rank 4 {layout}, got shape {_shape(t)}")
    if roi_feats.shape[1] != support_feats.shape[1]:
        raise ValueError(
            "most_similar_roi_align: roi_feats and support_feats must have the same channel count C, got "
            f"roi_feats {_shape(roi_feats)} and support_feats {_shape(support_feats)}"
        )
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)):
        raise ValueError(f"most_similar_roi_align: top_k must be an int, got {type(top_k).__name__}")
    if not 1 <= top_k <= MAX_TOP_K:
        raise ValueError(f"most_similar_roi_align: top_k must be in [1, {MAX_TOP_K}], got {top_k}")
    cells = support_feats.shape[2] * support_feats.shape[3]
    if top_k > cells:
        raise ValueError(
            f"most_similar_roi_align: top_k = {top_k} exceeds the H*W = {cells} cells of a support frame, "
            f"got support_feats {_shape(support_feats)}"
        )
    if roi_feats.dtype not in _REFERENCE_TYPES or roi_feats.dtype != support_feats.dtype:
        raise ValueError(
            "most_similar_roi_align: roi_feats and support_feats must share one dtype, float32 or float16, got "
            f"{roi_feats.dtype} and {support_feats.dtype}"
        )
    if roi_feats.device != support_feats.device:
        raise ValueError(
            "most_similar_roi_align: roi_feats and support_feats must be on one device, got "
            f"{roi_feats.device} and {support_feats.device}"
        )


def top_k_lower_index_wins(sim: torch.Tensor, k: int) -> torch.Tensor:
    """Indices [rows, k] of the k largest entries of each row of ``sim``;
    among equal values the lower index wins (torch.topk leaves that open).

    The k-th largest value splits each row: every entry above it is taken
    (fewer than k of them), then entries equal to it by increasing index. A
    second topk over an integer-valued key (exact in float32 below 2^24)
    picks exactly those.
    """
    cells = sim.shape[1]
    kth = sim.topk(k, dim=1).values[:, -1:]
    position = torch.arange(cells, dtype=torch.float32, device=sim.device)
    key = torch.where(sim > kth, float(2 * cells), torch.where(sim == kth, cells - position, -1.0))
    return key.topk(k, dim=1).indices


def most_similar_roi_align_reference(roi_feats: torch.Tensor, support_feats: torch.Tensor, top_k: int):
    """One support frame at a time, the similarity matrix in blocks of RoI
    cells (at most _REFERENCE_BLOCK entries). Differentiable w.r.t. both
    inputs (through the kept similarities and the gathered features).
    Computes in FP32 for FP16 input, like the kernel.
    """
    compute = torch.float32 if roi_feats.dtype == torch.float16 else roi_feats.dtype
    x, s = roi_feats.to(compute), support_feats.to(compute)
    rois, channels, height, width = x.shape
    frames, _, support_h, support_w = s.shape
    cells = support_h * support_w
    queries = F.normalize(x, dim=1, eps=NORM_EPS).permute(0, 2, 3, 1).reshape(-1, channels)  # [R·h·w, C]
    keys = F.normalize(s, dim=1, eps=NORM_EPS).reshape(frames, channels, cells)  # [T, C, H·W]
    values = s.permute(0, 2, 3, 1).reshape(frames, cells, channels)  # [T, H·W, C], un-normalised
    rows = max(1, _REFERENCE_BLOCK // max(cells, 1))
    per_frame = []
    for t in range(frames):
        blocks = []
        for start in range(0, queries.shape[0], rows):
            sim = queries[start : start + rows] @ keys[t]  # [rows, H·W]
            index = top_k_lower_index_wins(sim, top_k)
            weights = torch.softmax(sim.gather(1, index), dim=1)  # Eq. 3
            blocks.append((weights.unsqueeze(2) * values[t][index]).sum(1))  # Eq. 4: [rows, C]
        per_frame.append(torch.cat(blocks) if blocks else x.new_zeros(0, channels))
    out = torch.stack(per_frame) if per_frame else x.new_zeros(0, 0, channels)
    out = out.reshape(frames, rois, height, width, channels).permute(0, 1, 4, 2, 3)
    return out.to(roi_feats.dtype)


def most_similar_roi_align_native(roi_feats, support_feats, top_k: int, num_threads: int = 0):
    """The fused kernel body, host build. CPU tensors, FP32 or FP16; no autograd.

    Returns a [T, R, C, h, w] view of channels-last memory ([T, R, h, w, C]),
    the layout the kernel writes with unit stride. Refuses inputs that
    require grad while grad mode is on.
    """
    refuse_autograd("most_similar_roi_align", roi_feats=roi_feats, support_feats=support_feats)
    if roi_feats.device.type != "cpu":
        raise ValueError(f"most_similar_roi_align: impl='native' runs on the CPU, got tensors on {roi_feats.device}")
    if roi_feats.dtype not in _STORAGE_TYPES:
        raise ValueError(f"most_similar_roi_align: impl='native' takes float32 or float16, got {roi_feats.dtype}")
    # Channels-last makes the kernel's channel loops (normalisation, weighted sum) unit-stride.
    x, s = (t.detach().contiguous(memory_format=torch.channels_last) for t in (roi_feats, support_feats))
    rois, channels, height, width = x.shape
    frames, _, support_h, support_w = s.shape
    out = torch.empty((frames, rois, height, width, channels), dtype=x.dtype).permute(0, 1, 4, 2, 3)
    _native.kernels().most_similar_roi_align_forward(
        str(x.dtype).removeprefix("torch."),
        x.data_ptr(), s.data_ptr(), out.data_ptr(),
        (rois, channels, height, width, frames, support_h, support_w), int(top_k),
        x.stride(), s.stride(), out.stride(),
        num_threads,
    )  # fmt: skip
    return out


class _MostSimilarRoIAlignExport(torch.autograd.Function):
    """Used only while exporting: emits one vidtrt::MostSimilarRoIAlign node."""

    @staticmethod
    def forward(ctx, roi_feats, support_feats, top_k):
        with untraced():
            return most_similar_roi_align_reference(roi_feats, support_feats, top_k)

    @staticmethod
    def symbolic(g, roi_feats, support_feats, top_k):
        out = g.op(
            f"{DOMAIN}::{OP_TYPE}",
            roi_feats,
            support_feats,
            top_k_i=top_k,
            plugin_version_s=PLUGIN_VERSION,
            plugin_namespace_s=DOMAIN,
        )
        # [T, R, C, h, w] as traced (dynamic_axes renames them).
        roi_sizes = roi_feats.type().varyingSizes() or [None] * 4
        support_sizes = support_feats.type().varyingSizes() or [None] * 4
        out.setType(roi_feats.type().with_sizes([support_sizes[0], roi_sizes[0], roi_sizes[1], roi_sizes[2], roi_sizes[3]]))
        return out


IMPLEMENTATIONS = ("reference", "native")


def most_similar_roi_align(
    roi_feats: torch.Tensor, support_feats: torch.Tensor, top_k: int, impl: str = "reference"
) -> torch.Tensor:
    """MS RoI Align: for every RoI cell and support frame, the softmax-weighted
    sum of the support features at the top_k most cosine-similar cells.

    roi_feats: [R, C, h, w]; support_feats: [T, C, H, W] (one dtype, float32 or
    float16); returns [T, R, C, h, w] in that dtype. top_k in [1, 8], ≤ H·W.
    impl: "reference" (PyTorch, differentiable) or "native" (fused host kernel).
    """
    check_inputs(roi_feats, support_feats, top_k)
    if torch.onnx.is_in_onnx_export():
        return _MostSimilarRoIAlignExport.apply(roi_feats, support_feats, int(top_k))
    if impl == "reference":
        return most_similar_roi_align_reference(roi_feats, support_feats, int(top_k))
    if impl == "native":
        return most_similar_roi_align_native(roi_feats, support_feats, int(top_k))
    raise ValueError(f"most_similar_roi_align: impl must be one of {IMPLEMENTATIONS}, got {impl!r}")


def onnx_function(opset: int) -> onnx.FunctionProto:
    """Portable decomposition of vidtrt.MostSimilarRoIAlign into standard ONNX ops.

    Normalises both inputs (FP32), then loops over the T support frames: per
    frame one MatMul to the similarities [R·h·w, H·W], TopK (K from the top_k
    attribute; ONNX TopK returns the lower index first among equal values,
    the rule of all three layers), a Softmax over the k values, a Gather of
    the kept cells' un-normalised channels-last support rows and their
    weighted sum; the Loop stacks the frames' [R·h·w, C] results. One frame's
    similarities exist at a time (141 MB at the paper's scale, R = 300, 7×7,
    38×63; all T = 14 at once were 2 GB). R, C, h, w, T, H, W stay dynamic.
    """
    b = FunctionBuilder(OP_TYPE, ["roi_feats", "support_feats"], ["out"], ["top_k"], opset)
    f32, i64, boolean = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64, onnx.TensorProto.BOOL

    def dims(name, *axes):
        shape = b.op("Shape", name)
        return [b.op("Gather", shape, b.const([axis]), axis=0) for axis in axes]  # each [1]

    rois, channels, height, width = dims("roi_feats", 0, 1, 2, 3)
    frames, support_h, support_w = dims("support_feats", 0, 2, 3)
    cells = b.op("Mul", support_h, support_w)

    def normalised(x):  # along axis 1, as torch.nn.functional.normalize
        norm = b.op("Sqrt", b.reduce_sum(b.op("Mul", x, x), [1], keepdims=1))
        return b.op("Div", x, b.op("Max", norm, b.const(NORM_EPS, dtype=np.float32)))

    # allowzero: an empty R or T must not turn a 0 in the shape into "copy".
    def reshape(x, *parts):
        return b.op("Reshape", x, b.op("Concat", *parts, axis=0), allowzero=1)

    roi = b.op("Cast", "roi_feats", to=f32)
    support = b.op("Cast", "support_feats", to=f32)
    queries = b.op("Flatten", b.op("Transpose", normalised(roi), perm=[0, 2, 3, 1]), axis=3)  # [R·h·w, C]
    keys = reshape(normalised(support), frames, channels, cells)  # [T, C, H·W]
    # Cell j of frame t is row t·H·W + j of the channels-last support.
    rows = b.op("Flatten", b.op("Transpose", support, perm=[0, 2, 3, 1]), axis=3)  # [T·H·W, C]
    k = b.reshape(b.attr_int("top_k"), [1])

    # Loop body, frame t: reads keys, rows, queries, cells and k from the
    # enclosing scope. (Scan would slice keys by itself, but ONNX Runtime's
    # Scan refuses a sequence of length 0; a Slice by the iteration number
    # instead of the Gather made TensorRT-RTX 1.7's optimiser fail an
    # internal assertion.)
    frame = FunctionBuilder("most_similar_one_frame", ["frame_t", "frame_cond_in"], ["frame_cond_out", "frame_out"], [], opset, "frame_")
    # The trip count alone ends the loop: TensorRT's parser binds the body's
    # condition input only when the Loop has a condition, and warns when it has both.
    frame.nodes.append(
        onnx.helper.make_node("Constant", [], ["frame_cond_out"], value=onnx.helper.make_tensor("frame_true", boolean, [], [True]))
    )
    frame_keys = frame.op("Gather", keys, "frame_t", axis=0)  # [C, H·W]
    sim = frame.op("MatMul", queries, frame_keys)  # [R·h·w, H·W]
    # FunctionBuilder.op makes single-output nodes; TopK has two.
    values, index = "frame_topk_values", "frame_topk_indices"
    frame.nodes.append(onnx.helper.make_node("TopK", [sim, k], [values, index], axis=-1, largest=1, sorted=1))
    weights = frame.op("Softmax", values, axis=-1)  # [R·h·w, k]
    index = frame.op("Add", index, frame.op("Mul", "frame_t", cells))
    gathered = frame.op("Gather", rows, index, axis=0)  # [R·h·w, k, C]
    weighted = frame.op("Mul", gathered, frame.unsqueeze(weights, [2]))
    frame.op("ReduceSum", weighted, frame.const([1]), keepdims=0, out="frame_out")  # [R·h·w, C]
    body = frame.build_graph([(i64, []), (boolean, [])], [(boolean, []), (f32, None)])
    out = b.op("Loop", b.op("Squeeze", frames, b.const([0])), "", body=body)  # [T, R·h·w, C]

    out = reshape(out, frames, rois, height, width, channels)
    out = b.op("Transpose", out, perm=[0, 1, 4, 2, 3])  # [T, R, C, h, w]
    b.op("CastLike", out, "roi_feats", out="out")
    return b.build(doc=__doc__.split("\n\n")[0])


def example(dtype: torch.dtype = torch.float32, seed: int = 0):
    """mmtracking's setting at reduced size: 32 RoIs of 7×7 cells, 4 support
    frames of 19×32 cells, C = 128, top_k = 2. RoI cells are noisy copies of
    cells of the first support frame, so the top match is a real one."""
    g = torch.Generator().manual_seed(seed)
    support = torch.randn(4, 128, 19, 32, generator=g).relu()  # like ReLU'd backbone features
    ys = torch.randint(0, 19, (32, 7, 7), generator=g)
    xs = torch.randint(0, 32, (32, 7, 7), generator=g)
    roi = support[0][:, ys, xs].permute(1, 0, 2, 3) + 0.3 * torch.randn(32, 128, 7, 7, generator=g)
    return (roi.to(dtype), support.to(dtype)), {"top_k": 2}


def paper_problem(seed: int = 0):
    """SELSA + TRoI at inference (mmtracking's configs): 300 RoIs of 7×7 cells,
    C = 512, 14 support frames of 38×63 cells, top_k = 2."""
    g = torch.Generator().manual_seed(seed)
    rois, c, h, w, frames, sh, sw, top_k = 300, 512, 7, 7, 14, 38, 63, 2
    support = torch.randn(frames, c, sh, sw, generator=g).relu()
    roi = torch.randn(rois, c, h, w, generator=g).relu()
    return (roi, support), {"top_k": top_k}, work((roi, support), {"top_k": top_k})


def work(tensors, attrs) -> dict:
    """The similarities (the bulk), the weighted sum, and ~3 FLOPs per element
    to normalise both inputs; traffic: both inputs read, the output written."""
    roi, support = tensors
    rois, c, h, w = roi.shape
    frames, _, sh, sw = support.shape
    queries, cells, top_k = rois * h * w, sh * sw, int(attrs["top_k"])
    flops = 2.0 * frames * queries * cells * c + 2.0 * frames * queries * top_k * c + 3.0 * (frames * cells + queries) * c
    return {"flops": flops, "bytes": float(roi.element_size() * c * (queries + frames * cells + frames * queries))}


register(
    CustomOp(
        op_type=OP_TYPE,
        plugin_version=PLUGIN_VERSION,
        attributes=("top_k",),
        build_function=onnx_function,
        function=most_similar_roi_align,
        input_names=("roi_feats", "support_feats"),
        output_names=("out",),
        example=example,
        work=work,
        paper_problem=paper_problem,
        kernel_layout=channels_last,
    )
)
