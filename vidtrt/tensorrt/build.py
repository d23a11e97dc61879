"""`vidtrt build`: a TensorRT engine for every stage of a bundle, in one precision.

TensorRT 11 networks are strongly typed: the precision of every layer comes
from the ONNX graph (the FP32 graphs, or the FP16 / INT8-Q/DQ variants made by
``vidtrt export --precisions`` and ``vidtrt calibrate``); there are no FP16 or
INT8 builder flags to set. Building therefore only chooses which graph to
parse (``Bundle.stage_file(stage, precision)``), the shape range, the
workspace and the timing cache.

Shapes: stage graphs are static except the image (H, W) and the feature map
(h, w) = ceil(H / stride), ceil(W / stride). ``stage_profiles`` derives one
optimisation profile per stage from the bundle's preprocessing — the range of
padded sizes the runtime's ``Preprocessor`` can produce — so an engine never
refuses a frame the pipeline can feed it. That derivation is pure and tested
here; ``build_engines`` itself needs TensorRT and a GPU and was written
against the TensorRT 11 Python API without either being available.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from ..export.bundle import PRECISIONS, Bundle, BundleError, Manifest
from ..runtime.binding import feature_sizes

DEFAULT_WORKSPACE_MB = 2048
# The frame size engines are tuned for when none is given: HD video, the
# common case (ImageNet VID snippets are mostly 1280×720 or smaller).
DEFAULT_OPT_FRAME = (720, 1280)
ENGINE_DIR = "engines"


class EngineBuildError(RuntimeError):
    """TensorRT could not parse or build a stage."""


@dataclass(frozen=True)
class ImageProfile:
    """(H, W) of the padded network input: smallest, tuned-for and largest."""

    min: tuple[int, int]
    opt: tuple[int, int]
    max: tuple[int, int]

    def as_dict(self) -> dict:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def image_profile(
    preprocess: Mapping, opt_frame: tuple[int, int] = DEFAULT_OPT_FRAME, max_aspect: float | None = None
) -> ImageProfile:
    """The padded image sizes the bundle's preprocessing can produce.

    The preprocessor scales the short side to ``short_side`` unless the long
    side would exceed ``max_long_side``, then pads to ``pad_to_multiple``. So
    no padded side exceeds ``pad(max_long_side)``, while a side can shrink to
    one padding block for extreme aspect ratios. ``max_aspect`` (long / short
    of the source frames) narrows the range: the short side then stays above
    ``min(short_side, max_long_side / max_aspect)`` and, without a long-side
    cap, the long side below ``short_side · max_aspect``. Either dimension can
    be the short one (portrait video), so the range is the same for H and W.
    ``opt`` is the padded size of an ``opt_frame`` (H, W) source frame.
    """
    from ..runtime.preprocess import Preprocessor

    pre = Preprocessor.from_dict(preprocess)
    pad = pre.pad_to_multiple
    if max_aspect is not None and not max_aspect >= 1.0:
        raise ValueError(f"max_aspect is long side / short side, so >= 1; got {max_aspect}")
    if pre.max_long_side is None and max_aspect is None:
        raise ValueError(
            "the bundle's preprocessing has no max_long_side, so frame sizes are unbounded; give max_aspect "
            "(the widest source aspect ratio) or an explicit profile"
        )
    # Sizes are rounded as the preprocessor rounds (half up); the 1e-9 keeps a
    # bound that float arithmetic lands a hair off on the safe side.
    def rounded(x: float, direction: float) -> int:
        return int(x + 0.5 + direction * 1e-9)

    if max_aspect is None:
        smallest = 1
    else:
        cap = pre.max_long_side if pre.max_long_side is not None else math.inf
        smallest = max(1, rounded(min(pre.short_side, cap / max_aspect), -1))
    if pre.max_long_side is None:
        largest = rounded(pre.short_side * max_aspect, +1)
    elif max_aspect is None:
        largest = pre.max_long_side
    else:
        largest = min(pre.max_long_side, rounded(pre.short_side * max_aspect, +1))
    lo, hi = _round_up(smallest, pad), _round_up(max(largest, smallest), pad)
    _, _, padded = pre.plan(*opt_frame)
    opt = tuple(min(max(d, lo), hi) for d in padded)  # a frame outside max_aspect still gets a valid opt
    return ImageProfile((lo, lo), opt, (hi, hi))


def stage_profiles(manifest: Manifest, image: ImageProfile) -> dict[str, dict[str, tuple[tuple, tuple, tuple]]]:
    """Per stage: every input with symbolic dimensions → (min, opt, max) shapes,
    the symbols filled from ``image`` (H, W) and the feature stride (h, w).
    Inputs with static shapes need no profile entry and get none."""
    sizes = {which: feature_sizes(getattr(image, which), manifest.feature_stride) for which in ("min", "opt", "max")}
    out: dict[str, dict] = {}
    for stage, spec in manifest.stages.items():
        entries = {}
        for t in spec.inputs:
            symbols = [d for d in t.shape if isinstance(d, str)]
            if not symbols:
                continue
            unknown = set(symbols) - set(sizes["min"])
            if unknown:
                raise ValueError(f"stage {stage!r} input {t.name!r} has dimensions {sorted(unknown)} no profile can derive")
            entries[t.name] = tuple(
                tuple(sizes[which][d] if isinstance(d, str) else int(d) for d in t.shape) for which in ("min", "opt", "max")
            )
        out[stage] = entries
    return out


def engine_path(precision: str, stage: str) -> str:
    """Where ``vidtrt build`` writes a stage's engine, relative to the bundle."""
    return f"{ENGINE_DIR}/{precision}/{stage}.engine"


def _parse_stage(trt, builder, onnx_path: Path, plugins_loaded: bool):
    # TensorRT 11: strongly typed always; the old STRONGLY_TYPED flag is ignored, so no flags.
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, _logger())
    if plugins_loaded:
        # Without this flag the parser prefers the model-local ONNX function
        # over a registered plugin of the same name (plugins/psla/README.md).
        parser.set_flag(trt.OnnxParserFlag.ENABLE_PLUGIN_OVERRIDE)
    # parse_from_file resolves external data next to the file and keeps the
    # path in error messages.
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n".join(f"  {parser.get_error(i)}" for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT's ONNX parser rejected {onnx_path}:\n{errors}")
    return network, parser


def _logger():
    from . import logger

    return logger()


def _trt():
    import tensorrt

    return tensorrt


def _cudart():
    from cuda.bindings import runtime

    return runtime


def build_engines(
    bundle: Bundle,
    precision: str = "fp32",
    timing_cache: str | os.PathLike | None = None,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    profile: ImageProfile | None = None,
    log: Callable[[str], None] = print,
    stages: list[str] | None = None,
    device: int = 0,
) -> dict:
    """Builds ``engines/<precision>/<stage>.engine`` for every stage of the
    bundle (or ``stages``), records them in ``manifest.engines[precision]``
    and saves the manifest. Returns that entry.

    Engines are written under temporary names and moved into place only when
    every stage has built, so a failure leaves any previous engine set intact.
    Needs TensorRT ≥ 11 and a GPU; not run where it was written.
    """
    from . import load_plugin_library, require_gpu, require_tensorrt
    from .compat import current_environment, make_record

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if workspace_mb <= 0:
        raise ValueError(f"workspace must be a positive number of MB, got {workspace_mb}")
    require_tensorrt("building TensorRT engines")
    require_gpu("building TensorRT engines", device)
    trt, cudart = _trt(), _cudart()

    from . import cuda_check

    manifest = bundle.manifest
    wanted = list(stages or manifest.stages)
    onnx_files = {}
    for stage in wanted:  # before anything slow: a missing variant fails here, with the command that makes it
        try:
            onnx_files[stage] = bundle.stage_file(stage, precision)
        except KeyError:
            raise BundleError(f"the {precision} graphs of {bundle.directory} have no {stage!r} stage; recreate them") from None
    profile = profile or image_profile(manifest.preprocess)
    shapes = stage_profiles(manifest, profile)

    cuda_check(cudart.cudaSetDevice(device))  # the builder targets the current device
    env = current_environment(device)
    record = make_record(env, precision)
    previous = manifest.engines.get(precision, {})
    entry = {
        "files": dict(previous.get("files", {})) if stages else {},
        **record.to_dict(),
        "plugins": dict(manifest.versions.get("plugins", {})),
        "profile": {"image": profile.as_dict(), "inputs": _jsonable(shapes)},
        "workspace_mb": int(workspace_mb),
    }
    if stages and previous and _set_differs(previous, entry):
        # A partial rebuild must not mix engines from two machines or profiles under one record.
        raise BundleError(
            f"the existing {precision} engines of {bundle.directory} were built elsewhere or with another profile; "
            "rebuild every stage (give no stage list)"
        )

    plugin_path = load_plugin_library()
    if plugin_path is None:
        log(
            "warning: this vidtrt has no plugin library (libvidtrt_plugins.so); building anyway — PSLA and "
            "PS RoI Align run as their ONNX functions, slower and with more memory. Build the library with "
            "TENSORRT_ROOT=/path/to/tensorrt pip install -e ."
        )
    else:
        log(f"plugin library: {plugin_path}")

    cache_bytes = b""
    if timing_cache is not None and Path(timing_cache).exists():
        cache_bytes = Path(timing_cache).read_bytes()
        log(f"timing cache: {timing_cache} ({len(cache_bytes)} bytes)")

    out_dir = bundle.path(f"{ENGINE_DIR}/{precision}")
    out_dir.mkdir(parents=True, exist_ok=True)
    temporaries: dict[str, Path] = {}
    builder = trt.Builder(_logger())
    try:
        for stage in wanted:
            log(f"building {precision} {stage} from {onnx_files[stage].name} ...")
            network, parser = _parse_stage(trt, builder, onnx_files[stage], plugin_path is not None)
            config = builder.create_builder_config()
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
            if shapes[stage]:
                opt_profile = builder.create_optimization_profile()
                for name, (lo, opt, hi) in shapes[stage].items():
                    opt_profile.set_shape(name, lo, opt, hi)
                config.add_optimization_profile(opt_profile)
            # One cache carried through every stage: the stages share most of
            # their layers (backbone, heads), so later stages reuse timings.
            cache = config.create_timing_cache(cache_bytes)
            if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
                log("warning: the timing cache does not fit this GPU / TensorRT; starting an empty one")
                cache_bytes = b""
                config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
            serialized = builder.build_serialized_network(network, config)
            if serialized is None:
                raise EngineBuildError(
                    f"TensorRT failed to build the {precision} {stage} engine (see the TensorRT log above); "
                    f"try a larger --workspace than {workspace_mb} MB"
                )
            tmp = out_dir / f".{stage}.engine.partial"
            with open(tmp, "wb") as f:
                f.write(memoryview(serialized))
                f.flush()
                os.fsync(f.fileno())
            temporaries[stage] = tmp
            cache_bytes = bytes(memoryview(config.get_timing_cache().serialize()))
            log(f"  {stage}: {tmp.stat().st_size / 2**20:.1f} MB")
            del parser, network, config, serialized
    except BaseException:
        for tmp in temporaries.values():
            tmp.unlink(missing_ok=True)
        raise

    for stage, tmp in temporaries.items():
        os.replace(tmp, bundle.path(engine_path(precision, stage)))
        entry["files"][stage] = engine_path(precision, stage)
    if timing_cache is not None:
        tmp_cache = Path(f"{timing_cache}.partial")
        tmp_cache.write_bytes(cache_bytes)
        os.replace(tmp_cache, timing_cache)
        log(f"timing cache saved: {timing_cache}")
    manifest.engines[precision] = entry
    bundle.save()
    log(f"engines recorded in {bundle.path('manifest.json')}: {', '.join(entry['files'])}")
    return entry


# Keys that must agree across the stages of one engine set.
_SET_KEYS = ("tensorrt_version", "gpu_name", "compute_capability", "plugin_library_sha256", "profile")


def _set_differs(a: Mapping, b: Mapping) -> bool:
    return any(a.get(k) != b.get(k) for k in _SET_KEYS)


def _jsonable(shapes: dict) -> dict:
    return {
        stage: {name: {"min": list(lo), "opt": list(opt), "max": list(hi)} for name, (lo, opt, hi) in entries.items()}
        for stage, entries in shapes.items()
    }
