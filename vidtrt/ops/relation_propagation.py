"""Relation propagation (MFSA, Ye et al., §2.2, Eq. 1-3).

sigma, phi [N, d] (the transformed region features σ(R), φ(R)), regions
[N, D] and valid [N] give out [N, D]:

  A_ij = max(0, cos(sigma_i, phi_j)) if valid_i and valid_j, else 0   (Eq. 1)
  Â    = rownorm(A·A + A): each row divided by its sum;
         a row that sums to 0 stays 0                                 (Eq. 2)
  out  = Â·regions                                                    (Eq. 3)

cos(u, v) is the dot product of the L2-normalised vectors, and a zero vector
normalises to zero: a region whose sigma (phi) is all zeros has cosine 0 with
everything, so its row (column) of A is 0. Rows of invalid regions are 0, and
so is the row of a valid region whose affinities are all clipped to 0.

valid is optional (all valid when absent) and may be bool or hold 0/1 in any
integer or floating dtype; the eager entry point refuses other values. In an
exported graph the op always has four inputs: the wrapper passes ones when
valid is None and casts valid to sigma's dtype in front of the node, so the
TensorRT plugin sees one storage type on every input (0 and 1 are exact in
FP16). The ONNX function and the kernels treat any nonzero value as valid.

Three implementations that agree (tests/test_relation_propagation.py holds
the naive oracle):
  reference  vectorised PyTorch below, the literal equations (it forms A·A)
  portable   the ONNX function ``vidtrt.RelationPropagation`` (``onnx_function``),
             also literal
  fused      plugins/relation_propagation/: never forms A·A; by associativity
             Â·R = (A·(A·R) + A·R) / (A·(A·1) + A·1) row-wise, two N²·D
             products instead of an N³ one. Host build via vidtrt._kernels,
             CUDA build inside the TensorRT plugin.
"""

from __future__ import annotations

import onnx
import torch

from .. import _native
from .function_builder import FunctionBuilder
from .registry import CustomOp, DOMAIN, refuse_autograd, register, untraced

OP_TYPE = "RelationPropagation"
PLUGIN_VERSION = "1"
INPUT_NAMES = ("sigma", "phi", "regions", "valid")
_STORAGE_TYPES = (torch.float32, torch.float16)
# float64 runs only in the reference, for gradient checks.
_REFERENCE_TYPES = _STORAGE_TYPES + (torch.float64,)
_FLAG_TYPES = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
HOST_ISAS = ("auto", "generic")


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(d) for d in t.shape) + "]"


def check_inputs(sigma, phi, regions, valid=None) -> None:
    """Raises ValueError (naming the argument and the shapes) for invalid input.

    The values of valid are checked separately (``check_valid_values``): that
    reads the data, which export must not do.
    """
    named = [("sigma", sigma, 2, "[N, d]"), ("phi", phi, 2, "[N, d]"), ("regions", regions, 2, "[N, D]")]
    if valid is not None:
        named.append(("valid", valid, 1, "[N]"))
    for name, t, rank, layout in named:
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"relation_propagation: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != rank:
            raise ValueError(f"relation_propagation: {name} must have rank {rank} {layout}, got shape {_shape(t)}")
    n = sigma.shape[0]
    for name, t, _, _ in named[1:]:
        if t.shape[0] != n:
            raise ValueError(
                f"relation_propagation: {name} must have N = {n} rows like sigma, got {name} {_shape(t)} "
                f"and sigma {_shape(sigma)}"
            )
    if phi.shape[1] != sigma.shape[1]:
        raise ValueError(
            f"relation_propagation: sigma and phi must have the same d, got sigma {_shape(sigma)} and phi {_shape(phi)}"
        )
    if sigma.shape[1] == 0:
        raise ValueError(f"relation_propagation: sigma and phi need d >= 1 channels, got sigma {_shape(sigma)}")
    if not (sigma.dtype == phi.dtype == regions.dtype):
        raise ValueError(
            f"relation_propagation: sigma, phi and regions must share one dtype, got {sigma.dtype}, {phi.dtype}, "
            f"{regions.dtype}"
        )
    if sigma.dtype not in _REFERENCE_TYPES:
        raise ValueError(f"relation_propagation: sigma, phi and regions must be float32 or float16, got {sigma.dtype}")
    if valid is not None and not (valid.dtype in _FLAG_TYPES or valid.is_floating_point()):
        raise ValueError(f"relation_propagation: valid must be bool, integer or floating (0/1), got {valid.dtype}")
    devices = {t.device for _, t, _, _ in named}
    if len(devices) > 1:
        listed = ", ".join(f"{name} on {t.device}" for name, t, _, _ in named)
        raise ValueError(f"relation_propagation: all inputs must be on one device, got {listed}")


def check_valid_values(valid: torch.Tensor) -> None:
    """Raises ValueError unless every entry of a non-bool valid is 0 or 1."""
    if valid.dtype == torch.bool or valid.numel() == 0:
        return
    bad = (valid != 0) & (valid != 1)  # NaN is bad too
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"relation_propagation: valid must hold 0/1, got valid[{i}] = {valid[i].item()}")


def relation_propagation_reference(sigma, phi, regions, valid=None) -> torch.Tensor:
    """Eq. 1-3 as written: forms A, then A·A + A, then the row sums.

    Differentiable w.r.t. sigma, phi and regions (away from zero vectors and
    cosines of exactly 0). Computes in FP32 for FP16 input, like the kernels.
    """
    compute = torch.float32 if regions.dtype == torch.float16 else regions.dtype
    s, p, r = (t.to(compute) for t in (sigma, phi, regions))
    mask = None if valid is None else (valid != 0).to(compute)[:, None]

    def normalised(x):
        # Dividing by 1 instead of 0 keeps a zero vector zero, with finite gradients.
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
        unit = x / torch.where(norm > 0, norm, torch.ones_like(norm))
        return unit if mask is None else unit * mask

    a = (normalised(s) @ normalised(p).T).clamp_min(0)  # Eq. 1
    b = a @ a + a  # Eq. 2
    total = b.sum(dim=1, keepdim=True)
    a_hat = b / torch.where(total > 0, total, torch.ones_like(total))  # a zero row stays zero
    return (a_hat @ r).to(regions.dtype)  # Eq. 3


def relation_propagation_native(sigma, phi, regions, valid=None, num_threads: int = 0, isa: str = "auto"):
    """The fused kernel, host build. CPU tensors, FP32 or FP16; no autograd.

    isa="generic" forces the baseline build of the body (for tests); "auto"
    takes the AVX2 + FMA build when the CPU has it. Refuses inputs the
    reference differentiates (sigma, phi, regions; not the valid mask) that
    require grad while grad mode is on.
    """
    refuse_autograd("relation_propagation", sigma=sigma, phi=phi, regions=regions)
    if sigma.device.type != "cpu":
        raise ValueError(f"relation_propagation: impl='native' runs on the CPU, got tensors on {sigma.device}")
    if sigma.dtype not in _STORAGE_TYPES:
        raise ValueError(f"relation_propagation: impl='native' takes float32 or float16, got {sigma.dtype}")
    if isa not in HOST_ISAS:
        raise ValueError(f"relation_propagation: isa must be one of {HOST_ISAS}, got {isa!r}")
    s, p, r = (t.detach() for t in (sigma, phi, regions))  # the kernel takes any strides
    n, d = s.shape
    # The same 0/1 storage-type flags the plugin receives.
    v = torch.ones(n, dtype=s.dtype) if valid is None else valid.detach().to(s.dtype)
    out = torch.empty((n, r.shape[1]), dtype=r.dtype)
    _native.kernels().relation_propagation_forward(
        str(s.dtype).removeprefix("torch."),
        s.data_ptr(), p.data_ptr(), r.data_ptr(), v.data_ptr(), out.data_ptr(),
        (n, d, r.shape[1]),
        s.stride(), p.stride(), r.stride(), v.stride(0), out.stride(),
        num_threads, isa,
    )  # fmt: skip
    return out


class _RelationPropagationExport(torch.autograd.Function):
    """Used only while exporting: emits one vidtrt::RelationPropagation node."""

    @staticmethod
    def forward(ctx, sigma, phi, regions, valid):
        with untraced():
            return relation_propagation_reference(sigma, phi, regions, valid)

    @staticmethod
    def symbolic(g, sigma, phi, regions, valid):
        out = g.op(
            f"{DOMAIN}::{OP_TYPE}",
            sigma,
            phi,
            regions,
            valid,
            plugin_version_s=PLUGIN_VERSION,
            plugin_namespace_s=DOMAIN,
        )
        out.setType(regions.type())
        return out


IMPLEMENTATIONS = ("reference", "native")


def relation_propagation(
    sigma: torch.Tensor,
    phi: torch.Tensor,
    regions: torch.Tensor,
    valid: torch.Tensor | None = None,
    impl: str = "reference",
) -> torch.Tensor:
    """MFSA's relation propagation module: rownorm(A·A + A)·regions with
    A_ij = max(0, cos(sigma_i, phi_j)) over valid pairs.

    sigma, phi: [N, d]; regions: [N, D] (one dtype, float32 or float16);
    valid: [N] bool or 0/1, or None for all valid. Returns [N, D] in regions'
    dtype. impl: "reference" (PyTorch, differentiable) or "native" (fused
    host kernel).
    """
    check_inputs(sigma, phi, regions, valid)
    if torch.onnx.is_in_onnx_export():
        # Four inputs always, one dtype on all of them (see the module docstring).
        flags = sigma.new_ones(sigma.shape[0]) if valid is None else valid.to(sigma.dtype)
        return _RelationPropagationExport.apply(sigma, phi, regions, flags)
    if valid is not None:
        check_valid_values(valid)
    if impl == "reference":
        return relation_propagation_reference(sigma, phi, regions, valid)
    if impl == "native":
        return relation_propagation_native(sigma, phi, regions, valid)
    raise ValueError(f"relation_propagation: impl must be one of {IMPLEMENTATIONS}, got {impl!r}")


def onnx_function(opset: int) -> onnx.FunctionProto:
    """Portable decomposition of vidtrt.RelationPropagation into standard ONNX ops.

    The literal equations: normalise (zero vectors stay zero), mask, A =
    Relu(σ̂·φ̂ᵀ), B = A·A + A, divide each row by its sum where positive,
    MatMul with regions. FP32 inside whatever the input type; CastLike back.
    Holds N×N tensors and costs an N³ MatMul — what the fused kernel avoids.
    """
    b = FunctionBuilder(OP_TYPE, list(INPUT_NAMES), ["out"], [], opset)
    f32 = onnx.TensorProto.FLOAT
    zero = b.const(0.0, dtype="float32")
    one = b.const(1.0, dtype="float32")
    flags = b.op("Cast", "valid", to=f32)
    mask = b.unsqueeze(b.op("Cast", b.op("Not", b.op("Equal", flags, zero)), to=f32), [1])  # [N, 1]

    def normalised(x):
        x = b.op("Cast", x, to=f32)
        norm = b.op("Sqrt", b.reduce_sum(b.op("Mul", x, x), [1], keepdims=1))  # [N, 1]
        # Div(1, 0) = inf is never selected; Greater is false for NaN, too.
        scale = b.op("Where", b.op("Greater", norm, zero), b.op("Div", one, norm), zero)
        return b.op("Mul", x, b.op("Mul", scale, mask))

    a = b.op("Relu", b.op("MatMul", normalised("sigma"), b.op("Transpose", normalised("phi"), perm=[1, 0])))
    total_b = b.op("Add", b.op("MatMul", a, a), a)
    total = b.reduce_sum(total_b, [1], keepdims=1)
    a_hat = b.op("Div", total_b, b.op("Where", b.op("Greater", total, zero), total, one))
    out = b.op("MatMul", a_hat, b.op("Cast", "regions", to=f32))
    b.op("CastLike", out, "regions", out="out")
    return b.build(doc=__doc__.split("\n\n")[0])


def example(dtype: torch.dtype = torch.float32, seed: int = 0):
    """A quarter of MFSA's inference batch: K = 3 frames × M = 100 proposals,
    d = 64, D = 256, the last 20 proposals of every frame padding (invalid)."""
    g = torch.Generator().manual_seed(seed)
    frames, proposals, d, big_d = 3, 100, 64, 256
    n = frames * proposals
    regions = torch.randn(n, big_d, generator=g)
    # Embeddings that share a component, so many cosines are positive.
    common = torch.randn(1, d, generator=g)
    sigma = torch.randn(n, d, generator=g) + common
    phi = torch.randn(n, d, generator=g) + common
    valid = (torch.arange(n) % proposals) < proposals - 20
    return (sigma.to(dtype), phi.to(dtype), regions.to(dtype), valid), {}


def paper_problem(seed: int = 0):
    """MFSA's inference batch: 21 frames × 300 proposals = 6300 regions,
    d = 256, D = 1024, all valid."""
    g = torch.Generator().manual_seed(seed)
    n, d, big_d = 6300, 256, 1024
    common = torch.randn(1, d, generator=g)
    sigma, phi = (torch.randn(n, d, generator=g) + common for _ in range(2))
    regions = torch.randn(n, big_d, generator=g)
    valid = torch.ones(n, dtype=torch.bool)
    return (sigma, phi, regions, valid), {}, work((sigma, phi, regions, valid), {})


def work(tensors, attrs) -> dict:
    """The fused kernel's work: every A tile twice (N²·d each) and A·R, A·Y
    (N²·D each), not the literal equations' N³ (A·A)."""
    sigma, _, regions = tensors[:3]
    n, d = sigma.shape
    big_d = regions.shape[1]
    size = sigma.element_size()
    return {"flops": 2.0 * (2 * n * n * d + 2 * n * n * big_d), "bytes": float(size * n * (2 * d + 2 * big_d) + n)}


register(
    CustomOp(
        op_type=OP_TYPE,
        plugin_version=PLUGIN_VERSION,
        attributes=(),
        build_function=onnx_function,
        function=relation_propagation,
        input_names=INPUT_NAMES,
        output_names=("out",),
        example=example,
        work=work,
        paper_problem=paper_problem,
    )
)
