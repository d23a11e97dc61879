"""The TensorRT flavours vidtrt builds engines with, as data.

- ``tensorrt``: standard TensorRT 10 (10.8+) / 11, Python module ``tensorrt``.
  Data-centre, desktop and embedded GPUs; Triton's tensorrt backend. Building
  needs the GPU the engine will run on. Custom ops run as vidtrt's IPluginV3
  plugins when ``libvidtrt_plugins.so`` (built for the same major version) is
  loaded, as their ONNX functions otherwise.
- ``tensorrt-rtx``: TensorRT for RTX (``pip install tensorrt-rtx``), module
  ``tensorrt_rtx``. RTX GPUs: SM75 (only when asked for explicitly), SM80,
  SM86, SM89, SM120. Engines are built ahead of time for chosen compute
  capabilities, without a GPU. Our plugin library is never loaded: it is
  compiled against standard TensorRT's headers, and on a machine without a
  GPU TensorRT-RTX 1.7's parser aborts the process as soon as a node resolves
  to any plugin. Custom ops therefore always run as their ONNX functions.

Nothing here imports TensorRT at module import.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import threading
from dataclasses import dataclass

from . import MIN_TENSORRT, _parse_version


@dataclass(frozen=True)
class Flavour:
    name: str  # what the CLI calls it (--runtime, --backend)
    display: str  # what NVIDIA calls it
    module: str  # the Python module
    min_version: tuple[int, ...]
    builds_without_gpu: bool  # AOT builds for explicit compute capabilities
    loads_plugins: bool  # whether vidtrt loads libvidtrt_plugins.so into it
    install_hint: str


TENSORRT = Flavour(
    name="tensorrt",
    display="TensorRT",
    module="tensorrt",
    min_version=MIN_TENSORRT,
    builds_without_gpu=False,
    loads_plugins=True,
    install_hint="install TensorRT 10.8+ or 11 for this Python (NVIDIA's wheels or tarball; PyPI's `tensorrt` needs NVIDIA's index)",
)
TENSORRT_RTX = Flavour(
    name="tensorrt-rtx",
    display="TensorRT-RTX",
    module="tensorrt_rtx",
    min_version=(1, 0),
    builds_without_gpu=True,
    loads_plugins=False,
    install_hint="pip install tensorrt-rtx (or pip install 'vidtrt[rtx]')",
)
FLAVOURS: dict[str, Flavour] = {f.name: f for f in (TENSORRT, TENSORRT_RTX)}

# Compute capabilities TensorRT-RTX can target, as its ComputeCapability enum
# names them. SM75 (Turing) has no FP32 GEMM there: FP32 graphs with
# MatMul/Gemm/Conv-as-GEMM do not build for it; FP16 and INT8 graphs do.
RTX_COMPUTE_CAPABILITIES = ("75", "80", "86", "89", "120", "121")


class UnknownFlavour(ValueError):
    pass


def flavour(name: str) -> Flavour:
    try:
        return FLAVOURS[name]
    except KeyError:
        raise UnknownFlavour(f"unknown TensorRT runtime {name!r}; choose one of {', '.join(FLAVOURS)}") from None


@functools.cache
def available(name: str) -> tuple[bool, str]:
    """(True, version) when the flavour's module imports and is new enough,
    else (False, why not)."""
    f = flavour(name)
    try:
        module = importlib.import_module(f.module)
    except Exception as err:  # PyPI's `tensorrt` stub raises at import, not only ImportError
        return False, f"`import {f.module}` failed ({type(err).__name__}: {err})"
    version = getattr(module, "__version__", None)
    if version is None or not hasattr(module, "Builder"):
        return False, f"the imported `{f.module}` module ({getattr(module, '__file__', '?')}) is not the TensorRT Python API"
    if _parse_version(version)[: len(f.min_version)] < f.min_version:
        wanted = ".".join(map(str, f.min_version))
        return False, f"{f.name} {version} is installed; vidtrt needs {wanted} or newer"
    return True, version


def require(name: str, what: str) -> None:
    from . import DOCTOR_HINT, TensorRTUnavailable

    ok, reason = available(name)
    if not ok:
        f = flavour(name)
        wanted = ".".join(map(str, f.min_version))
        raise TensorRTUnavailable(
            f"{what} needs the {f.display} Python package ({wanted} or newer), which is not usable here: {reason}. "
            f"To get it: {f.install_hint}; {DOCTOR_HINT}."
        )


def module(name: str):
    """The flavour's Python module (``require`` it first for a clear error)."""
    return importlib.import_module(flavour(name).module)


def parse_compute_capabilities(text: str) -> list[str]:
    """``"75,86,89"`` or ``"7.5,8.6"`` → ``["75", "86", "89"]``, validated
    against what TensorRT-RTX can target; order kept, duplicates dropped."""
    out: list[str] = []
    for piece in str(text).split(","):
        piece = piece.strip().lower().removeprefix("sm").removeprefix("_")
        if not piece:
            continue
        sm = piece.replace(".", "")
        if sm not in RTX_COMPUTE_CAPABILITIES:
            raise ValueError(
                f"TensorRT-RTX cannot target compute capability {piece!r}; choose from {', '.join(RTX_COMPUTE_CAPABILITIES)}"
            )
        if sm not in out:
            out.append(sm)
    if not out:
        raise ValueError("give at least one compute capability, e.g. --sm 86,89")
    return out


def dotted(sm: str) -> str:
    """``"86"`` → ``"8.6"``, ``"120"`` → ``"12.0"`` (how CUDA reports it)."""
    return f"{sm[:-1]}.{sm[-1]}"


class CapturingLogger:
    """A TensorRT logger (of either flavour) that prints errors and keeps them
    (and the last warnings), so a failed build can say which layer failed.
    One per process and flavour: builders and runtimes keep a reference."""

    def __init__(self, trt, echo=None):
        base = trt.ILogger

        class _Logger(base):
            def __init__(inner):
                base.__init__(inner)

            def log(inner, severity, msg):
                if severity <= trt.ILogger.Severity.ERROR:
                    with self._lock:
                        self.errors.append(msg)
                    if self.echo is not None:
                        self.echo(f"[{self.flavour_name}] error: {msg}")
                elif severity == trt.ILogger.Severity.WARNING:
                    # Not echoed: the parser warns once per inlined function
                    # node ("A node named ... already exists"), hundreds per graph.
                    with self._lock:
                        self.warnings.append(msg)
                        del self.warnings[:-200]

        self.trt_logger = _Logger()
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.echo = echo
        self.flavour_name = getattr(trt, "__name__", "tensorrt")
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def quiet(self):
        """Errors are kept but not printed inside the block (a caller that
        reports them itself); the previous echo comes back after it."""
        echo, self.echo = self.echo, None
        try:
            yield self
        finally:
            self.echo = echo

    def take_errors(self) -> list[str]:
        with self._lock:
            out, self.errors = self.errors, []
        return out


@functools.cache
def capturing_logger(name: str) -> CapturingLogger:
    import sys

    return CapturingLogger(module(name), echo=lambda line: print(line, file=sys.stderr))
