"""The TensorRT half of vidtrt: engine building (``build.py``), engine/host
compatibility records (``compat.py``) and the helpers both share.

Importing this package loads neither TensorRT nor CUDA: ``vidtrt doctor``,
the CLI and the tests import it on machines that have neither, and ask
``tensorrt_available()`` / ``cuda_available()`` before doing anything real.
The helpers below that do touch TensorRT or CUDA are written against the
TensorRT 11 Python API and cuda-python (``cuda.bindings.runtime``) and could
not be run where this was written (no GPU, no TensorRT library).
"""

from __future__ import annotations

import functools
from pathlib import Path

# TensorRT 11 dropped weak typing; a 10.x parser/builder would build the same
# graphs with other precision semantics, so older versions are refused.
MIN_TENSORRT = (11, 0)
DOCTOR_HINT = "`vidtrt doctor` lists what this installation has and what each missing part disables"


class TensorRTUnavailable(RuntimeError):
    """TensorRT, cuda-python or a GPU is missing for an operation that needs them."""


def _parse_version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


@functools.cache
def tensorrt_available() -> tuple[bool, str]:
    """(True, version) when ``import tensorrt`` works and is TensorRT ≥ 11,
    else (False, why not)."""
    try:
        import tensorrt as trt
    except Exception as err:  # the PyPI stub raises at import or install time, not only ImportError
        return False, f"`import tensorrt` failed ({type(err).__name__}: {err})"
    version = getattr(trt, "__version__", None)
    if version is None or not hasattr(trt, "Builder"):
        return False, f"the imported `tensorrt` module ({getattr(trt, '__file__', '?')}) is not the TensorRT Python API"
    if _parse_version(version)[:2] < MIN_TENSORRT:
        return False, f"TensorRT {version} is installed; vidtrt needs TensorRT {'.'.join(map(str, MIN_TENSORRT))} or newer"
    return True, version


def cuda_available(device: int = 0) -> tuple[bool, str]:
    """(True, GPU name) when cuda-python is importable and ``device`` exists,
    else (False, why not). Not cached: a GPU can appear (driver reload)."""
    try:
        from cuda.bindings import runtime as cudart
    except Exception as err:
        return False, f"cuda-python is not importable (`from cuda.bindings import runtime` failed: {err}); pip install cuda-python"
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess:
        return False, f"no CUDA GPU ({_error_name(err)})"
    if not 0 <= device < count:
        return False, f"CUDA device {device} does not exist ({count} visible)"
    err, props = cudart.cudaGetDeviceProperties(device)
    if err != cudart.cudaError_t.cudaSuccess:
        return False, f"cannot query CUDA device {device} ({_error_name(err)})"
    return True, decode_name(props.name)


def require_tensorrt(what: str) -> None:
    """Raises TensorRTUnavailable naming ``what`` needed TensorRT and why it is missing."""
    ok, reason = tensorrt_available()
    if not ok:
        raise TensorRTUnavailable(
            f"{what} needs the TensorRT {MIN_TENSORRT[0]} Python package, which is not usable here: {reason}. "
            f"Install TensorRT {MIN_TENSORRT[0]} for this Python (NVIDIA's wheels or tarball); {DOCTOR_HINT}."
        )


def require_gpu(what: str, device: int = 0) -> None:
    ok, reason = cuda_available(device)
    if not ok:
        raise TensorRTUnavailable(f"{what} needs a CUDA GPU and cuda-python: {reason}. {DOCTOR_HINT}.")


def decode_name(raw) -> str:
    """cudaDeviceProp.name arrives as bytes padded with NULs (or as str in some builds)."""
    if isinstance(raw, (bytes, bytearray)):
        raw = bytes(raw).split(b"\0", 1)[0].decode("utf-8", "replace")
    return str(raw).strip()


def _error_name(err) -> str:
    try:
        from cuda.bindings import runtime as cudart

        status, name = cudart.cudaGetErrorName(err)
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:
        return str(err)


def cuda_check(result):
    """Unwraps a cuda-python call's (error, *values) tuple, raising RuntimeError
    with the CUDA error name on failure. Returns None, the single value, or a tuple."""
    err, values = result[0], result[1:]
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {_error_name(err)} ({int(err)})")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


@functools.cache
def logger():
    """One process-wide TensorRT logger: the builder and runtime keep a
    reference to it, so it must outlive every engine."""
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


_PLUGIN_CREATORS = (("PSLA", "1", "vidtrt"), ("PSRoIAlign", "1", "vidtrt"))
_loaded_plugin_library: list = []  # [(path, handle)] once loaded in this process


def load_plugin_library(registry=None) -> Path | None:
    """Registers libvidtrt_plugins.so with TensorRT's plugin registry, once per
    process; returns its path, or None when this build has no plugin library
    (the graphs then run the ops' ONNX functions).

    ``IPluginRegistry.load_library`` returns no handle when the library's
    creators are already registered (a second load in one process), so a
    failed load counts as success only when the PSLA creator is then present.
    """
    import tensorrt as trt

    from .. import _native

    path = _native.plugin_library_path()
    if path is None:
        return None
    if _loaded_plugin_library:
        return _loaded_plugin_library[0][0]
    registry = registry or trt.get_plugin_registry()
    handle = registry.load_library(str(path))
    if handle is None and registry.get_creator(*_PLUGIN_CREATORS[0]) is None:
        raise RuntimeError(
            f"TensorRT could not load the vidtrt plugin library {path} (see the TensorRT log above); "
            "rebuild it against this TensorRT with `TENSORRT_ROOT=... pip install -e .`"
        )
    _loaded_plugin_library.append((path, handle))
    return path


def numpy_dtype(trt_dtype):
    """The numpy dtype of a TensorRT DataType (BOOL → bool, INT64 → int64, ...)."""
    import numpy as np
    import tensorrt as trt

    return np.dtype(trt.nptype(trt_dtype))


__all__ = [
    "DOCTOR_HINT",
    "MIN_TENSORRT",
    "TensorRTUnavailable",
    "cuda_available",
    "cuda_check",
    "decode_name",
    "load_plugin_library",
    "logger",
    "numpy_dtype",
    "require_gpu",
    "require_tensorrt",
    "tensorrt_available",
]
