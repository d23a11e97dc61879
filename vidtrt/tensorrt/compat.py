"""Can these engines run here? A TensorRT engine is a compiled plan for one GPU
model, one TensorRT version and — when it contains vidtrt plugin layers — one
build of the plugin library. Running it anywhere else fails at
deserialisation with an opaque message, or worse, runs with different
kernels. So ``vidtrt build`` records where each engine set was built
(``EngineRecord``, stored in the bundle manifest's ``engines[precision]``),
and the tensorrt backend compares that record with this machine before
deserialising anything, naming every difference and the command that fixes it.

Everything here except ``current_environment`` is pure logic.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, fields
from typing import Mapping


class EngineMismatchError(ValueError):
    """Engines built for another GPU, TensorRT version or plugin library."""


@dataclass(frozen=True)
class EngineRecord:
    """Where one precision's engine set was built."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.6"
    plugin_library_sha256: str | None  # None: built without the plugin library (ONNX functions inlined)
    precision: str
    built_at: str  # ISO 8601, UTC

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_entry(cls, entry: Mapping) -> "EngineRecord":
        """From a manifest ``engines[precision]`` entry (which has more keys: files, plugins, profiles)."""
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in entry]
        if missing:
            raise ValueError(
                f"the manifest's engine entry lacks {', '.join(missing)}; it was not written by `vidtrt build`. "
                "Rebuild the engines."
            )
        return cls(**{n: entry[n] for n in names})


@dataclass(frozen=True)
class Environment:
    """This machine as far as engines care; None where it could not be determined."""

    tensorrt_version: str | None
    gpu_name: str | None
    compute_capability: str | None
    plugin_library_sha256: str | None
    notes: tuple[str, ...] = ()  # why a field is None (no tensorrt, no GPU, ...)


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def make_record(current: Environment, precision: str, built_at: str | None = None) -> EngineRecord:
    """The record of engines built in ``current`` (which must be complete: a
    build needs TensorRT and a GPU)."""
    if current.tensorrt_version is None or current.gpu_name is None or current.compute_capability is None:
        why = "; ".join(current.notes) or "TensorRT or the GPU could not be queried"
        raise ValueError(f"cannot record where engines are built: {why}")
    return EngineRecord(
        tensorrt_version=current.tensorrt_version,
        gpu_name=current.gpu_name,
        compute_capability=current.compute_capability,
        plugin_library_sha256=current.plugin_library_sha256,
        precision=precision,
        built_at=built_at or utc_now(),
    )


def _short(digest: str | None) -> str:
    return f"sha256 {digest[:12]}…" if digest else "none"


def differences(record: EngineRecord, current: Environment) -> list[str]:
    """One human-readable line per property that makes the engines unusable here."""
    out = []
    if current.gpu_name is None:
        out.append("GPU: none visible here (engines need the GPU they were built on, " f"{record.gpu_name!r})")
    elif current.gpu_name != record.gpu_name:
        # Same compute capability is not enough: TensorRT picks kernels for the
        # exact device (SM count, memory), and warns or fails on another model.
        out.append(f"GPU: built on {record.gpu_name!r}, this machine has {current.gpu_name!r}")
    if current.compute_capability is not None and current.compute_capability != record.compute_capability:
        out.append(
            f"compute capability: built for {record.compute_capability}, this GPU is {current.compute_capability}"
        )
    if current.tensorrt_version is None:
        out.append(f"TensorRT version: built with {record.tensorrt_version}, TensorRT is not importable here")
    elif current.tensorrt_version != record.tensorrt_version:
        out.append(f"TensorRT version: built with {record.tensorrt_version}, this installation has {current.tensorrt_version}")
    if record.plugin_library_sha256 is not None:
        # An engine built without the library inlined the ONNX functions and
        # runs anywhere; one built with it serialised plugin layers whose
        # kernels live in that exact library.
        if current.plugin_library_sha256 is None:
            out.append(
                f"plugin library: the engines contain vidtrt plugin layers (library {_short(record.plugin_library_sha256)}), "
                "this installation has no libvidtrt_plugins.so"
            )
        elif current.plugin_library_sha256 != record.plugin_library_sha256:
            out.append(
                f"plugin library: built with libvidtrt_plugins.so {_short(record.plugin_library_sha256)}, "
                f"this installation's is {_short(current.plugin_library_sha256)}"
            )
    return out


def check_engine_compatible(record: EngineRecord, current: Environment, bundle: str = "BUNDLE") -> None:
    """Raises EngineMismatchError listing every difference between where the
    engines were built and ``current``, with the command that rebuilds them."""
    diffs = differences(record, current)
    if not diffs:
        return
    lines = "\n".join(f"  - {d}" for d in diffs)
    raise EngineMismatchError(
        f"the {record.precision} TensorRT engines in {bundle} (built {record.built_at}) cannot run here:\n{lines}\n"
        "A TensorRT engine runs only on the GPU model, TensorRT version and plugin library it was built with. "
        f"Rebuild the engines on this machine: `vidtrt build {bundle} --precision {record.precision}`"
    )


def current_environment(device: int = 0) -> Environment:
    """TensorRT version, GPU name and compute capability of ``device`` and the
    plugin library's hash, each None (with a note) when it cannot be
    determined. Queries TensorRT and CUDA only if they are importable; on the
    machine this was written on both are absent, so only the None paths ran."""
    from .. import _native
    from ..export.bundle import sha256
    from . import cuda_available, tensorrt_available

    notes = []
    trt_ok, trt_info = tensorrt_available()
    tensorrt_version = trt_info if trt_ok else None
    if not trt_ok:
        notes.append(trt_info)
    gpu_name = capability = None
    gpu_ok, gpu_info = cuda_available(device)
    if gpu_ok:
        from cuda.bindings import runtime as cudart

        from . import cuda_check, decode_name

        props = cuda_check(cudart.cudaGetDeviceProperties(device))
        gpu_name, capability = decode_name(props.name), f"{props.major}.{props.minor}"
    else:
        notes.append(gpu_info)
    plugin = _native.plugin_library_path()
    return Environment(
        tensorrt_version=tensorrt_version,
        gpu_name=gpu_name,
        compute_capability=capability,
        plugin_library_sha256=sha256(plugin) if plugin is not None else None,
        notes=tuple(notes),
    )
