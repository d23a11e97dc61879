"""Bundles: the export directory of one detector.

A bundle holds the ONNX graph of every stage, the native checkpoint the graphs
were exported from (so the ``torch`` backend can run the same stages eagerly),
and ``manifest.json``: method, config, stages with their I/O (names, shapes with
symbolic dims, dtypes), the state wiring (which output feeds which inputs on
the next invocation), preprocessing, class names, schedule parameters, tool
versions and the SHA-256 of every file. Loading verifies all of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

FORMAT = "vidtrt-bundle"
# The outputs every detecting stage of every method has, in this order:
# boxes [D, 4], scores [D], labels [D] (int64), valid [D] (fixed D, a mask).
DETECTION_OUTPUTS = ("boxes", "scores", "labels", "valid")
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class BundleError(ValueError):
    """A bundle that is missing, incomplete, tampered with or from an incompatible vidtrt."""


@dataclass
class TensorSpec:
    name: str
    shape: list  # ints and symbolic names ("H", "W", "h", "w")
    dtype: str  # numpy dtype name


@dataclass
class StageSpec:
    name: str
    file: str  # ONNX graph, relative to the bundle
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def input(self, name: str) -> TensorSpec:
        return next(t for t in self.inputs if t.name == name)


@dataclass
class StateSpec:
    """A tensor carried between invocations: produced by ``source`` ("stage.output"),
    consumed by every ``targets`` entry ("stage.input") on later invocations."""

    name: str
    source: str
    targets: list[str]
    shape: list  # with symbolic "h", "w" = feature map size
    dtype: str


@dataclass
class Manifest:
    method: str
    config_name: str
    config: dict
    stages: dict[str, StageSpec]
    state: list[StateSpec]
    preprocess: dict
    class_names: list[str]
    schedule: dict
    feature_stride: int
    checkpoint: str
    versions: dict = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # relative path → sha256
    verification: dict = field(default_factory=dict)
    # Precision variants beside the FP32 graphs: {"fp16": {"files": {stage: path}, ...}, "int8": {...}}
    variants: dict = field(default_factory=dict)
    # TensorRT engines: {precision: {"files": {stage: path}, "tensorrt_version", "gpu_name", ...}}
    engines: dict = field(default_factory=dict)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: dict) -> "Manifest":
        d = dict(d)
        d["stages"] = {
            name: StageSpec(
                name=s["name"],
                file=s["file"],
                inputs=[TensorSpec(**t) for t in s["inputs"]],
                outputs=[TensorSpec(**t) for t in s["outputs"]],
            )
            for name, s in d["stages"].items()
        }
        d["state"] = [StateSpec(**s) for s in d["state"]]
        return cls(**d)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tool_versions() -> dict:
    import onnx
    import onnxruntime
    import torch

    from .. import __version__
    from ..ops import registry

    return {
        "vidtrt": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
        "plugins": {name: op.plugin_version for name, op in registry.registered_ops().items()},
    }


PRECISIONS = ("fp32", "fp16", "int8")


def _referenced_files(manifest: Manifest) -> list[str]:
    files = [s.file for s in manifest.stages.values()] + [manifest.checkpoint]
    for section in (manifest.variants, manifest.engines):
        for entry in section.values():
            files += list(entry.get("files", {}).values()) + list(entry.get("extra_files", []))
    return files


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Hashes every file the manifest refers to (graphs, variants, engines,
    checkpoint, calibration data), then writes manifest.json atomically."""
    manifest.files = {f: sha256(directory / f) for f in _referenced_files(manifest)}
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(manifest.to_json())
    os.replace(tmp, directory / MANIFEST)


@dataclass
class Bundle:
    directory: Path
    manifest: Manifest

    def path(self, relative: str) -> Path:
        return self.directory / relative

    @property
    def stages(self) -> dict[str, StageSpec]:
        return self.manifest.stages

    def precisions(self) -> list[str]:
        """Precisions with ONNX graphs in this bundle (fp32 always)."""
        return ["fp32"] + [p for p in PRECISIONS[1:] if p in self.manifest.variants]

    def stage_file(self, stage: str, precision: str = "fp32") -> Path:
        """The ONNX graph of ``stage`` in ``precision``."""
        if stage not in self.stages:
            raise BundleError(f"bundle {self.directory} has no stage {stage!r}; it has {', '.join(self.stages)}")
        if precision == "fp32":
            return self.path(self.stages[stage].file)
        variant = self.manifest.variants.get(precision)
        if variant is None:
            how = "vidtrt calibrate" if precision == "int8" else "vidtrt export --precisions fp32,fp16"
            raise BundleError(f"bundle {self.directory} has no {precision} graphs; create them with `{how}`")
        return self.path(variant["files"][stage])

    def save(self) -> None:
        """Rewrites the manifest (after adding variants or engines), re-hashing every file."""
        write_manifest(self.directory, self.manifest)


def load_bundle(directory: str | os.PathLike, verify_hashes: bool = True) -> Bundle:
    """Reads and checks a bundle: format, version, every file present and unmodified."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not directory.is_dir():
        raise BundleError(f"bundle {directory} does not exist or is not a directory")
    if not manifest_path.exists():
        raise BundleError(f"{directory} is not a vidtrt bundle: no {MANIFEST} (was the export interrupted?)")
    try:
        raw = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise BundleError(f"{manifest_path} is not valid JSON: {err}") from err
    if raw.get("format") != FORMAT:
        raise BundleError(f"{manifest_path} is not a vidtrt bundle manifest (format={raw.get('format')!r})")
    if raw.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"bundle {directory} has format version {raw.get('format_version')}; this vidtrt reads version "
            f"{FORMAT_VERSION}. Re-export it with `vidtrt export`."
        )
    try:
        manifest = Manifest.from_dict(raw)
    except (KeyError, TypeError) as err:
        raise BundleError(f"{manifest_path} is incomplete or malformed: {err}") from err
    from ..ops import registry

    ops = registry.registered_ops()
    for name, version in manifest.versions.get("plugins", {}).items():
        if name in ops and ops[name].plugin_version != version:
            raise BundleError(
                f"bundle {directory} was exported with {name} version {version}; this vidtrt has version "
                f"{ops[name].plugin_version}. Re-export it with `vidtrt export`."
            )
    if verify_hashes:
        for relative, expected in manifest.files.items():
            path = directory / relative
            if not path.exists():
                raise BundleError(f"bundle {directory} is missing {relative}")
            actual = sha256(path)
            if actual != expected:
                raise BundleError(
                    f"bundle file {path} was modified after export (sha256 {actual[:12]}…, manifest says "
                    f"{expected[:12]}…). Re-export the bundle."
                )
    return Bundle(directory, manifest)


def concrete_shape(shape_template, sizes: Mapping[str, int]) -> tuple[int, ...]:
    """A shape template with its symbols replaced by ``sizes`` (e.g. {"h": 38, "w": 63})."""
    out = []
    for d in shape_template:
        if isinstance(d, str):
            if d not in sizes:
                raise KeyError(f"no size given for dimension {d!r} of {list(shape_template)}")
            out.append(int(sizes[d]))
        else:
            out.append(int(d))
    return tuple(out)


def feature_sizes(image_hw: tuple[int, int], feature_stride: int) -> dict[str, int]:
    """The manifest's symbols for an image of ``image_hw`` (H, W): the feature
    map is ceil(H / stride) × ceil(W / stride), as pipelines allocate state."""
    h, w = (int(x) for x in image_hw)
    return {"H": h, "W": w, "h": -(-h // feature_stride), "w": -(-w // feature_stride)}
