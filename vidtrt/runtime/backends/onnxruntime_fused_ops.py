"""vidtrt's custom ops inside ONNX Runtime, run by their fused host kernels.

An exported graph holds every custom op as one ``vidtrt`` node plus a
model-local function with its decomposition. Left alone, ONNX Runtime inlines
the function. A session made here on the CPU provider also loads
``libvidtrt_ort_ops.so`` (native/ort_custom_ops.cpp), which registers a CPU
kernel for each op under the same domain and name. ONNX Runtime prefers a
registered kernel to a local function, so the unchanged file on disk runs each
op with its fused host kernel, the body the TensorRT plugin and the CUDA build
share.

Why a native library (docs/ARCHITECTURE.md, "Custom ops in ONNX Runtime"):
Python custom ops (onnxruntime-extensions' PyOp) were measured first. They
copy every output element by element, about 0.1 µs per float (120 ms for a
million floats), which is slower than the decompositions they would replace,
and they have no float16. The library is built only when ONNX Runtime's C/C++
API headers are found at build time (``ONNXRUNTIME_ROOT``), as the plugin
library needs TensorRT's. Without it, sessions run the decompositions and
``vidtrt doctor`` says so.

The mode of a session (``custom_ops``): ``fused``, ``decomposed`` (for
comparison and debugging), or ``auto``. ``auto`` picks fused on the CPU
provider when the library is built. With the CUDA provider in front it picks
decomposed: the decompositions then run on the GPU, and a host kernel would
move each op's inputs and outputs across PCIe. The environment variable
``VIDTRT_ORT_CUSTOM_OPS`` sets the default for every session vidtrt creates.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import onnx
import onnxruntime as ort

from ... import _native

FUSED, DECOMPOSED, AUTO = "fused", "decomposed", "auto"
MODES = (AUTO, FUSED, DECOMPOSED)
MODE_ENV = "VIDTRT_ORT_CUSTOM_OPS"


class FusedOpsUnavailable(RuntimeError):
    """The ONNX Runtime custom-op library was not built into this installation."""


def library_path() -> Path | None:
    return _native.ort_ops_library_path()


def available() -> bool:
    return library_path() is not None


def resolve_mode(mode: str | None, providers: Iterable[str]) -> str:
    """``fused`` or ``decomposed`` for a session on ``providers`` (see the module doc)."""
    mode = (mode or os.environ.get(MODE_ENV) or AUTO).lower()
    if mode not in MODES:
        raise ValueError(f"custom-op mode must be one of {', '.join(MODES)}, got {mode!r}")
    providers = list(providers)
    on_cpu = not providers or providers[0] == "CPUExecutionProvider"
    if mode == AUTO:
        return FUSED if on_cpu and available() else DECOMPOSED
    if mode == FUSED and not available():
        raise FusedOpsUnavailable(
            "the fused custom ops for ONNX Runtime (libvidtrt_ort_ops.so) are not in this build: rebuild with "
            "ONNXRUNTIME_ROOT pointing at ONNX Runtime's API headers (docs/ARCHITECTURE.md), or run the "
            f"decompositions ({MODE_ENV}=decomposed)"
        )
    return mode


def session_options(mode: str, threads: int = 0, spinning: bool | None = None) -> ort.SessionOptions:
    """Session options for a resolved ``mode`` (the library registered when fused).

    ``spinning``: whether ONNX Runtime's idle pool threads spin. Off by default
    when fused: the fused kernels run their own OpenMP threads, and pool
    threads spinning beside them take the same cores.
    """
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if mode == FUSED:
        options.register_custom_ops_library(str(library_path()))
    if spinning is None:
        spinning = mode != FUSED
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return options


def create_session(
    model: str | Path | onnx.ModelProto,
    providers: Iterable[str] | None = None,
    custom_ops: str | None = None,
    threads: int = 0,
    spinning: bool | None = None,
) -> ort.InferenceSession:
    """An InferenceSession on ``model`` (a path or a ModelProto) whose vidtrt
    custom ops run fused or decomposed; ``session.vidtrt_custom_ops`` says which."""
    providers = list(providers or ["CPUExecutionProvider"])
    mode = resolve_mode(custom_ops, providers)
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(source, session_options(mode, threads, spinning), providers=providers)
    session.vidtrt_custom_ops = mode  # type: ignore[attr-defined]
    return session
