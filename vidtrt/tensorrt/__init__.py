"""The TensorRT half of vidtrt: the flavours (``flavours.py``: TensorRT 10/11
and TensorRT-RTX), engine building (``build.py``), engine/host compatibility
records (``compat.py``) and the helpers they share.

Importing this package loads neither TensorRT nor CUDA: ``vidtrt doctor``,
the CLI and the tests import it on machines that have neither, and ask
``tensorrt_available()`` / ``cuda_available()`` before doing anything real.
The helpers below that touch standard TensorRT or CUDA are written against
the TensorRT 10/11 Python API and cuda-python (``cuda.bindings.runtime``) and
could not be run where this was written (no GPU, no TensorRT library);
TensorRT-RTX builds did run there (ahead of time, without a GPU).
"""

from __future__ import annotations

import functools
from pathlib import Path

# Standard TensorRT from 10.8 (the plugin library's floor; 10.x networks are
# created STRONGLY_TYPED so precision is the graph's, as in 11). The flavours,
# TensorRT-RTX included, are described in flavours.py.
MIN_TENSORRT = (10, 8)
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


def tensorrt_available() -> tuple[bool, str]:
    """(True, version) when ``import tensorrt`` works and is TensorRT ≥ 10.8,
    else (False, why not)."""
    from .flavours import available

    return available("tensorrt")


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
        from .flavours import TENSORRT

        wanted = ".".join(map(str, MIN_TENSORRT))
        raise TensorRTUnavailable(
            f"{what} needs the TensorRT Python package ({wanted} or newer), which is not usable here: {reason}. "
            f"To get it: {TENSORRT.install_hint}; {DOCTOR_HINT}."
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


_loaded_plugin_library: list = []  # [(path, handle)] once loaded in this process


class PluginLibraryMismatch(RuntimeError):
    """libvidtrt_plugins.so was built for another TensorRT major than the one in this process."""


def check_plugin_library_tensorrt(library_tensorrt: tuple[int, int], trt, path: Path | str = "libvidtrt_plugins.so") -> None:
    """Raises PluginLibraryMismatch unless the plugin library, built against
    TensorRT ``library_tensorrt`` (major, minor), can be loaded by the
    ``tensorrt`` module ``trt`` (only its ``__version__`` is read).

    The majors must match: TensorRT 11 made ILogger and ILoggerFinder
    versioned interfaces, so a library built for one major calls the other's
    logger through the wrong vtable slots (plugins/common/tensorrt_version.h).
    Minors may differ either way: everything the library implements or calls
    (IPluginV3One*, IPluginCreatorV3One, the logger interfaces, the expression
    builder, the tensor descriptors) is declared identically by the 10.8 and
    10.16 headers, and TensorRT keeps its ABI stable within a major.
    """
    path = Path(path)
    running_text = str(getattr(trt, "__version__", ""))
    running = _parse_version(running_text)
    built = f"{library_tensorrt[0]}.{library_tensorrt[1]}"
    if len(running) >= 1 and running[0] == library_tensorrt[0]:
        return
    wanted = ".".join(map(str, running[:2])) if len(running) >= 2 else "this process's version"
    raise PluginLibraryMismatch(
        f"{path.name} was built for TensorRT {built} but this process has TensorRT {running_text or '(unknown version)'}; "
        f"rebuild with TENSORRT_ROOT=<TensorRT {wanted}> pip install -e . "
        f"(one plugin library build serves one TensorRT major; this one is {path})"
    )


def load_plugin_library(registry=None) -> Path | None:
    """Registers libvidtrt_plugins.so with TensorRT's plugin registry, once per
    process; returns its path, or None when this build has no plugin library
    (the graphs then run the ops' ONNX functions).

    Before TensorRT sees the library, the TensorRT version the library records
    is checked against this process's (check_plugin_library_tensorrt): a
    library of the other major would load, then crash on its first log line.
    ``IPluginRegistry.load_library`` returns no handle when the library's
    creators are already registered (a second load in one process), so the
    load counts as successful when every creator the library lists is then
    in the registry.
    """
    import tensorrt as trt

    from .. import _native

    path = _native.plugin_library_path()
    if path is None:
        return None
    if _loaded_plugin_library:
        return _loaded_plugin_library[0][0]
    info = _native.read_plugin_library_info(path)
    check_plugin_library_tensorrt(info.tensorrt, trt, path)
    registry = registry or trt.get_plugin_registry()
    handle = registry.load_library(str(path))
    missing = [":".join(creator) for creator in info.creators if registry.get_creator(*creator) is None]
    if missing:
        raise RuntimeError(
            f"TensorRT could not load the vidtrt plugin library {path} (see the TensorRT log above): "
            f"no creator for {', '.join(missing)} after loading it; "
            f"rebuild it against this TensorRT with `TENSORRT_ROOT=... pip install -e .`"
        )
    _loaded_plugin_library.append((path, handle))
    return path


__all__ = [
    "DOCTOR_HINT",
    "MIN_TENSORRT",
    "PluginLibraryMismatch",
    "TensorRTUnavailable",
    "check_plugin_library_tensorrt",
    "cuda_available",
    "cuda_check",
    "decode_name",
    "load_plugin_library",
    "logger",
    "require_gpu",
    "require_tensorrt",
    "tensorrt_available",
]
