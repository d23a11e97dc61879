"""`vidtrt build`: a TensorRT engine for every stage of a bundle, in one precision.

Networks are strongly typed (TensorRT 11 and TensorRT-RTX always; TensorRT 10
through the STRONGLY_TYPED flag): the precision of every layer comes from the
ONNX graph (the FP32 graphs, or the FP16 / INT8-Q/DQ variants made by
``vidtrt export`` and ``vidtrt calibrate``); there are no FP16 or INT8
builder flags to set. Building therefore only chooses which graph to parse
(``Bundle.stage_file(stage, precision)``), the shape range, the workspace,
the timing cache and, for TensorRT-RTX, the compute capabilities.

Shapes: stage graphs are static except the image (H, W) and the feature map
(h, w) = ceil(H / stride), ceil(W / stride). ``stage_profiles`` derives one
optimisation profile per stage from the bundle's preprocessing — the range of
padded sizes the runtime's ``Preprocessor`` can produce, from a floor of
``MIN_FEATURE_SIDE`` feature cells — so an engine never refuses a frame the
pipeline can feed it. The TensorRT-RTX path (``aot_build``) runs here, without
a GPU; the standard TensorRT path needs TensorRT and a GPU and was written
against the TensorRT 10/11 Python API without either being available.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from ..core.bundle import PRECISIONS, Bundle, BundleError, Manifest, feature_sizes

DEFAULT_WORKSPACE_MB = 2048
# The frame size engines are tuned for when none is given: HD video, the
# common case (ImageNet VID snippets are mostly 1280×720 or smaller).
DEFAULT_OPT_FRAME = (720, 1280)
ENGINE_DIR = "engines"
# The smallest feature map side every stage is valid for: MS RoI Align's
# top-k (≤ 8) must fit in the map, and TensorRT checks that at build time for
# the profile's minimum. Preprocessing reaches smaller sides only for extreme
# aspect ratios (a 1000×30 strip), which detection has no use for.
MIN_FEATURE_SIDE = 4


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


def minimum_image_side(manifest: Manifest) -> int:
    """The smallest padded image side the bundle's engines accept."""
    from ..core.preprocess import Preprocessor

    pad = Preprocessor.from_dict(manifest.preprocess).pad_to_multiple
    return _round_up(MIN_FEATURE_SIDE * manifest.feature_stride, pad)


def image_profile(
    preprocess: Mapping,
    opt_frame: tuple[int, int] = DEFAULT_OPT_FRAME,
    max_aspect: float | None = None,
    min_side: int = 1,
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
    ``min_side`` raises the minimum to what the stages accept
    (``minimum_image_side``); smaller frames are refused at run time.
    """
    from ..core.preprocess import Preprocessor

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
    smallest = max(smallest, min_side)
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


def engine_path(precision: str, stage: str, runtime: str = "tensorrt", sm: str | None = None) -> str:
    """Where ``vidtrt build`` writes a stage's engine, relative to the bundle:
    ``engines/<precision>/<stage>.engine`` for standard TensorRT,
    ``engines/tensorrt-rtx/sm<CC>/<precision>/<stage>.engine`` for TensorRT-RTX."""
    if runtime == "tensorrt":
        return f"{ENGINE_DIR}/{precision}/{stage}.engine"
    return f"{ENGINE_DIR}/{runtime}/sm{sm}/{precision}/{stage}.engine"


def _network_flags(trt) -> int:
    """TensorRT 11 and TensorRT-RTX are strongly typed always (the flag is
    deprecated or absent); TensorRT 10 must be asked, or it would pick layer
    precisions itself instead of taking the graph's."""
    from . import _parse_version

    major = _parse_version(getattr(trt, "__version__", "11"))[:1]
    flag = getattr(getattr(trt, "NetworkDefinitionCreationFlag", None), "STRONGLY_TYPED", None)
    if flag is not None and major == (10,) and not getattr(trt, "__name__", "").startswith("tensorrt_rtx"):
        return 1 << int(flag)
    return 0


def _parse_stage(trt, builder, onnx_path: Path, plugins_loaded: bool, logger=None):
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger if logger is not None else _logger())
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


def _checked_profile(manifest: Manifest, profile: ImageProfile | None) -> ImageProfile:
    """The bundle's default profile, or ``profile`` if every stage accepts its minimum."""
    smallest = minimum_image_side(manifest)
    if profile is None:
        return image_profile(manifest.preprocess, min_side=smallest)
    if min(profile.min) < smallest:
        raise ValueError(
            f"the image profile's minimum {profile.min} is below {smallest} px, the smallest padded image side every "
            f"stage of this bundle accepts ({MIN_FEATURE_SIDE} feature cells at stride {manifest.feature_stride})"
        )
    return profile


def build_engines(
    bundle: Bundle,
    precision: str = "fp32",
    timing_cache: str | os.PathLike | None = None,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    profile: ImageProfile | None = None,
    log: Callable[[str], None] = print,
    stages: list[str] | None = None,
    device: int = 0,
    runtime: str = "tensorrt",
    compute_capabilities: list[str] | None = None,
    progress: bool = False,
) -> dict:
    """Builds an engine for every stage of the bundle (or ``stages``) in one
    precision, records the set in ``manifest.engines`` and saves the manifest.

    ``runtime="tensorrt"`` (standard TensorRT 10.8+/11): one set for the GPU
    at hand (``device``), under ``engines/<precision>/``; returns its entry.
    ``runtime="tensorrt-rtx"``: one set per compute capability in
    ``compute_capabilities`` (``["75", "86", "89"]``), built ahead of time
    without a GPU; returns {key: entry}.

    Engines are written under temporary names and moved into place only when
    every stage of a set has built, so a failure leaves any previous engine
    set intact.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if workspace_mb <= 0:
        raise ValueError(f"workspace must be a positive number of MB, got {workspace_mb}")
    if runtime != "tensorrt-rtx":
        from .flavours import flavour

        flavour(runtime)  # raises, naming the runtimes there are
        if compute_capabilities:
            raise ValueError(
                "standard TensorRT builds for the GPU it runs on; --sm (compute capabilities) is for --runtime tensorrt-rtx"
            )
    bar = None
    built: Callable[[], None] = lambda: None  # noqa: E731 - called once per finished engine
    if progress:
        from tqdm import tqdm

        targets = len(compute_capabilities or [None]) if runtime == "tensorrt-rtx" else 1
        total = targets * len(stages or bundle.stages)
        bar = tqdm(total=total, desc=f"vidtrt build {precision}", unit="engine", leave=True, disable=None)
        built = lambda: bar.update(1)  # noqa: E731
        if log is print:
            log = bar.write  # lines above the bar, not through it
    try:
        if runtime == "tensorrt-rtx":
            return _build_rtx(bundle, precision, compute_capabilities, workspace_mb, profile, log, stages, built)
        return _build_tensorrt(bundle, precision, timing_cache, workspace_mb, profile, log, stages, device, built)
    finally:
        if bar is not None:
            bar.close()


def _onnx_files(bundle: Bundle, precision: str, stages) -> dict[str, Path]:
    files = {}
    for stage in stages:  # before anything slow: a missing variant fails here, with the command that makes it
        try:
            files[stage] = bundle.stage_file(stage, precision)
        except KeyError:
            raise BundleError(f"the {precision} graphs of {bundle.directory} have no {stage!r} stage; recreate them") from None
    return files


def _write_partial(out_dir: Path, stage: str, serialized) -> Path:
    tmp = out_dir / f".{stage}.engine.partial"
    with open(tmp, "wb") as f:
        f.write(memoryview(serialized))
        f.flush()
        os.fsync(f.fileno())
    return tmp


def _commit_set(bundle: Bundle, temporaries: dict[str, Path], paths: dict[str, str], entry: dict) -> None:
    for stage, tmp in temporaries.items():
        os.replace(tmp, bundle.path(paths[stage]))
        entry["files"][stage] = paths[stage]


def _build_tensorrt(bundle, precision, timing_cache, workspace_mb, profile, log, stages, device, built=lambda: None) -> dict:
    from . import cuda_check, load_plugin_library, require_gpu, require_tensorrt
    from .compat import current_environment, make_record

    require_tensorrt("building TensorRT engines")
    require_gpu("building TensorRT engines", device)
    trt, cudart = _trt(), _cudart()

    manifest = bundle.manifest
    wanted = list(stages or manifest.stages)
    onnx_files = _onnx_files(bundle, precision, wanted)
    profile = _checked_profile(manifest, profile)
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
        "stages": dict(previous.get("stages", {})) if stages else {},
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
            "warning: this vidtrt has no plugin library (libvidtrt_plugins.so); building anyway — the custom ops "
            "run as their ONNX functions, slower and with more memory. Build the library with "
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
            started = time.perf_counter()
            network, parser = _parse_stage(trt, builder, onnx_files[stage], plugin_path is not None)
            config = builder_config(trt, builder, workspace_mb, shapes[stage])
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
            temporaries[stage] = _write_partial(out_dir, stage, serialized)
            cache_bytes = bytes(memoryview(config.get_timing_cache().serialize()))
            size = temporaries[stage].stat().st_size
            entry["stages"][stage] = {"bytes": size, "build_seconds": round(time.perf_counter() - started, 3)}
            log(f"  {stage}: {size / 2**20:.1f} MB")
            built()
            del parser, network, config, serialized
    except BaseException:
        for tmp in temporaries.values():
            tmp.unlink(missing_ok=True)
        raise

    _commit_set(bundle, temporaries, {s: engine_path(precision, s) for s in temporaries}, entry)
    if timing_cache is not None:
        tmp_cache = Path(f"{timing_cache}.partial")
        tmp_cache.write_bytes(cache_bytes)
        os.replace(tmp_cache, timing_cache)
        log(f"timing cache saved: {timing_cache}")
    manifest.engines[precision] = entry
    bundle.save()
    log(f"engines recorded in {bundle.path('manifest.json')}: {', '.join(entry['files'])}")
    return entry


def builder_config(trt, builder, workspace_mb: int, stage_shapes: Mapping, sm: str | None = None):
    """The builder configuration of one stage, for either flavour: the
    workspace pool limit (``workspace_mb`` MB, in bytes), one optimisation
    profile {input: (min, opt, max)} for the dynamic inputs, and for
    TensorRT-RTX's ahead-of-time build the one compute capability ``sm``."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if sm is not None:
        config.num_compute_capabilities = 1
        config.set_compute_capability(getattr(trt.ComputeCapability, f"SM{sm}"), 0)
    if stage_shapes:
        opt_profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in stage_shapes.items():
            opt_profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(opt_profile)
    return config


def aot_build(
    onnx_path: str | os.PathLike,
    sm: str,
    input_shapes: Mapping[str, tuple],
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    what: str | None = None,
    builder=None,
):
    """Parses one ONNX file and builds it with TensorRT-RTX, ahead of time and
    without a GPU, for compute capability ``sm`` ("75", "86", ...), with one
    optimisation profile {input: (min, opt, max)} for the dynamic inputs.
    Returns the serialised engine; raises EngineBuildError carrying
    TensorRT-RTX's errors (which name the layer)."""
    from .flavours import capturing_logger, module, require

    require("tensorrt-rtx", "building TensorRT-RTX engines")
    trt = module("tensorrt-rtx")
    logger = capturing_logger("tensorrt-rtx")
    logger.take_errors()
    builder = builder if builder is not None else trt.Builder(logger.trt_logger)
    what = what or f"{Path(onnx_path).name} for SM{sm}"
    with logger.quiet():  # the errors go into EngineBuildError instead of the terminal
        return _aot_build(trt, builder, logger, onnx_path, sm, input_shapes, workspace_mb, what)


def _aot_build(trt, builder, logger, onnx_path, sm, input_shapes, workspace_mb, what):
    try:
        network, parser = _parse_stage(trt, builder, Path(onnx_path), False, logger.trt_logger)
    except EngineBuildError as err:
        raise EngineBuildError(f"TensorRT-RTX could not parse {what}: {err}") from None
    config = builder_config(trt, builder, workspace_mb, input_shapes, sm)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        errors = logger.take_errors()
        detail = "\n".join(f"  {e}" for e in errors) or "  (TensorRT-RTX logged no error)"
        hint = (
            "\nTuring (SM75) has no FP32 GEMM in TensorRT-RTX: build the fp16 or int8 graphs for it."
            if sm == "75" and any("FP32 GEMM" in e for e in errors)
            else ""
        )
        raise EngineBuildError(f"TensorRT-RTX failed to build {what}:\n{detail}{hint}")
    del parser, network, config
    return serialized


def _build_rtx(bundle, precision, compute_capabilities, workspace_mb, profile, log, stages, built=lambda: None) -> dict:
    """TensorRT-RTX: ahead-of-time builds, no GPU, no plugin library (flavours.py)."""
    from .compat import engine_set_key, make_aot_record
    from .flavours import capturing_logger, module, parse_compute_capabilities, require

    require("tensorrt-rtx", "building TensorRT-RTX engines")
    if not compute_capabilities:
        raise ValueError("TensorRT-RTX builds ahead of time for chosen GPUs: give compute capabilities, e.g. --sm 86,89")
    sms = parse_compute_capabilities(",".join(compute_capabilities))
    trt = module("tensorrt-rtx")
    logger = capturing_logger("tensorrt-rtx")

    manifest = bundle.manifest
    wanted = list(stages or manifest.stages)
    onnx_files = _onnx_files(bundle, precision, wanted)
    profile = _checked_profile(manifest, profile)
    shapes = stage_profiles(manifest, profile)
    builder = trt.Builder(logger.trt_logger)
    entries = {}
    for sm in sms:
        key = engine_set_key("tensorrt-rtx", precision, sm)
        record = make_aot_record("tensorrt-rtx", trt.__version__, sm, precision)
        previous = manifest.engines.get(key, {})
        entry = {
            "files": dict(previous.get("files", {})) if stages else {},
            **record.to_dict(),
            "plugins": {},  # never loaded into TensorRT-RTX: the custom ops are their ONNX functions
            "profile": {"image": profile.as_dict(), "inputs": _jsonable(shapes)},
            "workspace_mb": int(workspace_mb),
            "stages": dict(previous.get("stages", {})) if stages else {},
        }
        if stages and previous and _set_differs(previous, entry):
            raise BundleError(
                f"the existing {key} engines of {bundle.directory} were built with another TensorRT-RTX or profile; "
                "rebuild every stage (give no stage list)"
            )
        out_dir = bundle.path(str(Path(engine_path(precision, "x", "tensorrt-rtx", sm)).parent))
        out_dir.mkdir(parents=True, exist_ok=True)
        temporaries: dict[str, Path] = {}
        try:
            for stage in wanted:
                started = time.perf_counter()
                serialized = aot_build(
                    onnx_files[stage], sm, shapes[stage], workspace_mb,
                    what=f"the {precision} {stage!r} engine for SM{sm} from {onnx_files[stage].relative_to(bundle.directory)}",
                    builder=builder,
                )  # fmt: skip
                temporaries[stage] = _write_partial(out_dir, stage, serialized)
                seconds = time.perf_counter() - started
                size = temporaries[stage].stat().st_size
                entry["stages"][stage] = {"bytes": size, "build_seconds": round(seconds, 3)}
                log(f"  SM{sm} {precision} {stage}: {size / 2**20:.1f} MB in {seconds:.1f} s")
                built()
                del serialized
        except BaseException:
            for tmp in temporaries.values():
                tmp.unlink(missing_ok=True)
            raise
        _commit_set(bundle, temporaries, {s: engine_path(precision, s, "tensorrt-rtx", sm) for s in temporaries}, entry)
        manifest.engines[key] = entry
        bundle.save()  # each finished target is kept, whatever happens to the next
        entries[key] = entry
    log(f"engines recorded in {bundle.path('manifest.json')}: {', '.join(entries)}")
    return entries


# Keys that must agree across the stages of one engine set.
_SET_KEYS = ("runtime", "tensorrt_version", "gpu_name", "compute_capability", "plugin_library_sha256", "profile")


def _set_differs(a: Mapping, b: Mapping) -> bool:
    return any(a.get(k, "tensorrt" if k == "runtime" else None) != b.get(k) for k in _SET_KEYS)


def _jsonable(shapes: dict) -> dict:
    return {
        stage: {name: {"min": list(lo), "opt": list(opt), "max": list(hi)} for name, (lo, opt, hi) in entries.items()}
        for stage, entries in shapes.items()
    }
