"""Can these engines run here? A TensorRT engine is a compiled plan for one GPU
model, one TensorRT version and — when it contains vidtrt plugin layers — one
build of the plugin library. Running it anywhere else fails at
deserialisation with an opaque message, or worse, runs with different
kernels. So ``vidtrt build`` records where each engine set was built
(``EngineRecord``, stored in the bundle manifest's ``engines[precision]``),
and the tensorrt backend compares that record with this machine before
deserialising anything, naming every difference and the command that fixes it.

TensorRT-RTX engines are built ahead of time, without a GPU, for one
compute capability each: their record has no GPU name (they run on any GPU of
that compute capability) and the set is chosen by the GPU's compute
capability (``select_engine_set``).

Everything here except ``current_environment`` is pure logic.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, fields
from typing import Mapping


class EngineMismatchError(ValueError):
    """Engines built for another GPU, TensorRT version or plugin library."""


def engine_set_key(runtime: str, precision: str, sm: str | None = None) -> str:
    """The key of an engine set in ``manifest.engines``: the precision for
    standard TensorRT (built on and for the GPU at hand), and
    ``tensorrt-rtx/sm<CC>/<precision>`` for TensorRT-RTX (one set per target)."""
    if runtime == "tensorrt":
        return precision
    if sm is None:
        raise ValueError(f"{runtime} engine sets are per compute capability; give sm")
    return f"{runtime}/sm{sm}/{precision}"


@dataclass(frozen=True)
class EngineRecord:
    """Where one precision's engine set was built, and for what."""

    tensorrt_version: str
    gpu_name: str | None  # None: built ahead of time without a GPU (TensorRT-RTX), runs on any GPU of the capability
    compute_capability: str  # "8.6"
    plugin_library_sha256: str | None  # None: built without the plugin library (ONNX functions inlined)
    precision: str
    built_at: str  # ISO 8601, UTC
    runtime: str = "tensorrt"  # the TensorRT flavour: "tensorrt" or "tensorrt-rtx"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_entry(cls, entry: Mapping) -> "EngineRecord":
        """From a manifest ``engines[precision]`` entry (which has more keys: files, plugins, profiles)."""
        names = [f.name for f in fields(cls)]
        # Entries written before TensorRT-RTX support have no runtime: standard TensorRT.
        missing = [n for n in names if n not in entry and n != "runtime"]
        if missing:
            raise ValueError(
                f"the manifest's engine entry lacks {', '.join(missing)}; it was not written by `vidtrt build`. "
                "Rebuild the engines."
            )
        return cls(**{n: entry[n] for n in names if n in entry})


@dataclass(frozen=True)
class Environment:
    """This machine as far as engines care; None where it could not be determined."""

    tensorrt_version: str | None
    gpu_name: str | None
    compute_capability: str | None
    plugin_library_sha256: str | None
    notes: tuple[str, ...] = ()  # why a field is None (no tensorrt, no GPU, ...)
    runtime: str = "tensorrt"  # the flavour whose version tensorrt_version is


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


def make_aot_record(runtime: str, version: str, sm: str, precision: str, built_at: str | None = None) -> EngineRecord:
    """The record of engines built ahead of time for compute capability
    ``sm`` ("89") without a GPU and without the plugin library."""
    from .flavours import dotted

    return EngineRecord(
        tensorrt_version=version,
        gpu_name=None,
        compute_capability=dotted(sm),
        plugin_library_sha256=None,
        precision=precision,
        built_at=built_at or utc_now(),
        runtime=runtime,
    )


def _display(runtime: str) -> str:
    return {"tensorrt": "TensorRT", "tensorrt-rtx": "TensorRT-RTX"}.get(runtime, runtime)


def _short(digest: str | None) -> str:
    return f"sha256 {digest[:12]}…" if digest else "none"


def differences(record: EngineRecord, current: Environment) -> list[str]:
    """One human-readable line per property that makes the engines unusable here."""
    out = []
    if record.runtime != current.runtime:
        out.append(f"runtime: built with {record.runtime}, checked against {current.runtime}")
        return out
    if current.gpu_name is None:
        wanted = repr(record.gpu_name) if record.gpu_name is not None else f"a GPU of compute capability {record.compute_capability}"
        out.append(f"GPU: none visible here (the engines need {wanted})")
    elif record.gpu_name is not None and current.gpu_name != record.gpu_name:
        # Same compute capability is not enough: TensorRT picks kernels for the
        # exact device (SM count, memory), and warns or fails on another model.
        out.append(f"GPU: built on {record.gpu_name!r}, this machine has {current.gpu_name!r}")
    if current.compute_capability is not None and current.compute_capability != record.compute_capability:
        out.append(
            f"compute capability: built for {record.compute_capability}, this GPU is {current.compute_capability}"
        )
    if current.tensorrt_version is None:
        name = _display(record.runtime)
        out.append(f"{name} version: built with {record.tensorrt_version}, {name} is not importable here")
    elif current.tensorrt_version != record.tensorrt_version:
        out.append(f"{_display(record.runtime)} version: built with {record.tensorrt_version}, this installation has {current.tensorrt_version}")
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
    if record.runtime == "tensorrt":
        rule = "A TensorRT engine runs only on the GPU model, TensorRT version and plugin library it was built with. "
        fix = f"Rebuild the engines on this machine: `vidtrt build {bundle} --precision {record.precision}`"
    else:
        sm = (current.compute_capability or record.compute_capability).replace(".", "")
        rule = f"A {_display(record.runtime)} engine runs only on GPUs of the compute capability and with the {_display(record.runtime)} version it was built for. "
        fix = f"Rebuild them: `vidtrt build {bundle} --runtime {record.runtime} --sm {sm} --precision {record.precision}`"
    raise EngineMismatchError(
        f"the {record.precision} {_display(record.runtime)} engines in {bundle} (built {record.built_at}) cannot run here:\n{lines}\n{rule}{fix}"
    )


def select_engine_set(engines: Mapping[str, Mapping], runtime: str, precision: str, current: Environment, bundle: str = "BUNDLE"):
    """The manifest entry of the engine set that fits ``current``, checked.

    Standard TensorRT has one set per precision. TensorRT-RTX has one per
    compute capability: the GPU's picks it, and with no GPU visible the
    choice is refused naming the sets there are. Raises EngineMismatchError
    (with the command that builds what is missing)."""
    if runtime == "tensorrt":
        entry = engines.get(engine_set_key(runtime, precision))
        if entry is None:
            built = ", ".join(engines) or "none"
            raise EngineMismatchError(
                f"bundle {bundle} has no {precision} TensorRT engines (built: {built}); "
                f"build them with `vidtrt build {bundle} --precision {precision}`"
            )
    else:
        prefix = f"{runtime}/sm"
        sets = {k: v for k, v in engines.items() if k.startswith(prefix) and k.endswith(f"/{precision}")}
        targets = ", ".join(sorted(v.get("compute_capability", "?") for v in sets.values())) or "none"
        if current.compute_capability is None:
            why = "; ".join(current.notes) or "no GPU visible"
            raise EngineMismatchError(
                f"cannot choose among the {precision} {runtime} engines of {bundle} (compute capabilities: {targets}): {why}"
            )
        sm = current.compute_capability.replace(".", "")
        entry = sets.get(engine_set_key(runtime, precision, sm))
        if entry is None:
            raise EngineMismatchError(
                f"bundle {bundle} has no {precision} {runtime} engines for this GPU's compute capability "
                f"{current.compute_capability} (built for: {targets}); build them with "
                f"`vidtrt build {bundle} --runtime {runtime} --sm {sm} --precision {precision}`"
            )
    record = EngineRecord.from_entry(entry)
    if record.runtime != runtime:
        raise EngineMismatchError(f"the engine set {precision!r} of {bundle} was built with {record.runtime}, not {runtime}")
    check_engine_compatible(record, current, bundle=bundle)
    return entry


def current_environment(device: int = 0, runtime: str = "tensorrt") -> Environment:
    """TensorRT version, GPU name and compute capability of ``device`` and the
    plugin library's hash, each None (with a note) when it cannot be
    determined. Queries TensorRT and CUDA only if they are importable; on the
    machine this was written on both are absent, so only the None paths ran."""
    from .. import _native
    from ..core.bundle import sha256
    from . import cuda_available
    from .flavours import available

    notes = []
    trt_ok, trt_info = available(runtime)
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
    # TensorRT-RTX never loads the plugin library (flavours.py), so its hash is irrelevant there.
    plugin = _native.plugin_library_path() if runtime == "tensorrt" else None
    return Environment(
        tensorrt_version=tensorrt_version,
        gpu_name=gpu_name,
        compute_capability=capability,
        plugin_library_sha256=sha256(plugin) if plugin is not None else None,
        notes=tuple(notes),
        runtime=runtime,
    )
