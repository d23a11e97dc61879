"""The op self-check: every custom op exported to ONNX, run in ONNX Runtime, and
compared with its PyTorch reference and its fused host kernel."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from . import _native
from .export.onnx import export_module
from .ops import registry
from .runtime.backends import onnxruntime_fused_ops as fused_ops

# Max abs deviation from the reference that passes, per dtype (outputs are O(1)).
TOLERANCE = {torch.float32: 1e-4, torch.float16: 4e-3}


class _OpModule(torch.nn.Module):
    def __init__(self, op: registry.CustomOp, attrs: dict):
        super().__init__()
        self.op, self.attrs = op, attrs

    def forward(self, *tensors):
        return self.op.function(*tensors, **self.attrs)


@dataclass
class Row:
    op: str
    dtype: str
    shapes: str
    backend: str
    max_abs_err: float | None
    ms: float | None
    ok: bool
    note: str = ""


def _timed(fn, repeat: int = 3):
    out = fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return out, (time.perf_counter() - start) / repeat * 1e3


def check_op(op: registry.CustomOp, dtype: torch.dtype, out_dir: Path) -> list[Row]:
    tensors, attrs = op.example(dtype)
    shapes = " ".join("x".join(map(str, t.shape)) for t in tensors)
    dname = str(dtype).removeprefix("torch.")
    tol = TOLERANCE[dtype]
    reference, ref_ms = _timed(lambda: op.function(*tensors, **attrs, impl="reference"))
    rows = [Row(op.op_type, dname, shapes, "reference", 0.0, ref_ms, True)]

    def compare(backend: str, fn):
        try:
            got, ms = _timed(fn)
        except Exception as err:  # reported in the table, and the check fails
            rows.append(Row(op.op_type, dname, shapes, backend, None, None, False, f"{type(err).__name__}: {err}"))
            return
        err = float((got.float() - reference.float()).abs().max())
        rows.append(Row(op.op_type, dname, shapes, backend, err, ms, err <= tol))

    if _native.available():
        compare("native", lambda: op.function(*tensors, **attrs, impl="native"))
    else:
        rows.append(Row(op.op_type, dname, shapes, "native", None, None, False, "host kernel library missing"))

    path = out_dir / f"{op.op_type}_{dname}.onnx"
    export_module(_OpModule(op, attrs), tensors, path, op.input_names, op.output_names)
    feeds = {name: t.numpy() for name, t in zip(op.input_names, tensors)}
    modes = [fused_ops.DECOMPOSED] + ([fused_ops.FUSED] if fused_ops.available() else [])
    for mode in modes:
        session = fused_ops.create_session(path, custom_ops=mode)
        backend = "onnxruntime" if mode == fused_ops.DECOMPOSED else "onnxruntime-fused"
        compare(backend, lambda: torch.from_numpy(np.asarray(session.run(None, feeds)[0])))
    if not fused_ops.available():
        rows.append(Row(op.op_type, dname, shapes, "onnxruntime-fused", None, None, True, "not built (ONNXRUNTIME_ROOT)"))
    return rows


def run(out_dir: Path, dtypes=(torch.float32, torch.float16)) -> list[Row]:
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    for op in registry.registered_ops().values():
        for dtype in dtypes:
            if dtype in op.storage_types:
                rows.extend(check_op(op, dtype, out_dir))
    return rows


def format_table(rows: list[Row]) -> str:
    header = ("op", "dtype", "inputs", "backend", "max |err| vs ref", "ms", "result")
    body = [
        (
            r.op,
            r.dtype,
            r.shapes,
            r.backend,
            "-" if r.max_abs_err is None else f"{r.max_abs_err:.2e}",
            "-" if r.ms is None else f"{r.ms:.1f}",
            ("ok" if r.ok else "FAIL") + (f" ({r.note})" if r.note else ""),
        )
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(b) for b in body])
