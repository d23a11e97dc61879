"""`vidtrt triton-repo`: a bundle as a Triton model repository.

Layout written (``name`` defaults to the bundle's config name)::

    OUT/<name>/config.pbtxt     backend "python", sequence_batching, instance_group
    OUT/<name>/1/model.py       a thin shim: makes vidtrt importable, forwards to
                                vidtrt.serving.triton_model.StreamModel
    OUT/<name>/1/bundle/        a copy of the bundle (the repository stands alone)

The config's parameters tell the model what to run (backend, precision,
schedule, idle timeout, threads); ``model.py`` records where vidtrt is
installed (``SITE_DIRS``: the site-packages of the Python that wrote the
repository; edit them when the server runs elsewhere). ``bundle_sha256`` identifies the bundle, so that a
client can check it talks to a server running the bundle it has.

Sequence batching uses the Oldest strategy: every model instance holds up to
``max_streams`` streams at once (Direct would give an instance only
max_batch_size slots), and one execute() call gets at most one request per
stream, in the stream's order. A stream that sends nothing for
``idle_timeout_s`` is released by Triton's batcher and by the model's table
(max_sequence_idle_microseconds is the same timeout).

:func:`write_stage_models` writes the other kind of repository: every stage
of the bundle as a plain model for Triton's own onnxruntime / tensorrt
backends (see docs/SERVING.md; not testable on a machine without them).
"""

from __future__ import annotations

import json
import re
import shutil
import site
import sys
from pathlib import Path

from ..core.bundle import MANIFEST, Bundle, load_bundle, sha256

BACKENDS = ("onnxruntime", "tensorrt", "tensorrt-rtx")

MODEL_PY = '''\
"""Triton Python-backend model written by `vidtrt triton-repo`: vidtrt does the work."""

import site
import sys

# Where vidtrt and its dependencies are installed (the site-packages of the
# Python that wrote this repository; edit when the server runs elsewhere).
# The stub runs its own interpreter: they go first on its path, before
# Triton's utilities (which import numpy) are imported.
SITE_DIRS = {site_dirs!r}
for directory in reversed(SITE_DIRS):
    if directory not in sys.path:
        sys.path.insert(0, directory)
        site.addsitedir(directory)  # its .pth files: editable installs

import triton_python_backend_utils as pb_utils  # noqa: E402

from vidtrt.serving.triton_model import StreamModel  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        self.model = StreamModel(args, pb_utils)

    def execute(self, requests):
        return self.model.execute(requests)

    def finalize(self):
        self.model.finalize()
'''

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def bundle_identity(bundle: Bundle) -> str:
    """The SHA-256 of the manifest, which holds the SHA-256 of every bundle file."""
    return sha256(bundle.directory / MANIFEST)


def site_dirs() -> list[str]:
    """Where this Python finds vidtrt and its dependencies (for the stub's path)."""
    dirs = [d for d in site.getsitepackages() if Path(d).is_dir()]
    return dirs or [p for p in sys.path if p.endswith("site-packages")]


def check_servable(bundle: Bundle, backend: str, precision: str, schedule: dict) -> dict:
    """The schedule in effect, after refusing what a server cannot run; ValueError otherwise."""
    from ..methods import get_method

    if backend not in BACKENDS:
        raise ValueError(f"--backend {backend}: choose one of {', '.join(BACKENDS)}")
    if precision not in bundle.precisions() and backend == "onnxruntime":
        raise ValueError(
            f"bundle {bundle.directory} has no {precision} graphs (it has {', '.join(bundle.precisions())})"
        )
    if backend == "tensorrt" and precision not in bundle.manifest.engines:
        # Which engine of a set fits the serving GPU is the backend's choice at load time.
        raise ValueError(
            f"bundle {bundle.directory} has no {precision} TensorRT engines (built: "
            f"{', '.join(bundle.manifest.engines) or 'none'}); build them on the serving GPU with `vidtrt build`"
        )
    resolved = get_method(bundle.manifest.method).resolve_schedule(bundle.manifest.schedule, schedule)
    if resolved.get("mode") == "offline":
        raise ValueError(
            f"the {bundle.manifest.method} schedule {resolved} is offline: it answers only at the end of a video and "
            "keeps all of it (MEGA offline also reads frames out of order); a server needs an online schedule: "
            "give --mode online"
        )
    return resolved


def _pbtxt_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid protobuf text string


def stream_model_config(
    name: str, *, instances: int, idle_timeout_s: float, max_streams: int, parameters: dict[str, str]
) -> str:
    batch = max(1, min(max_streams, 16))
    params = "\n".join(
        f'  {{ key: {_pbtxt_string(k)} value: {{ string_value: {_pbtxt_string(v)} }} }}{"," if i < len(parameters) - 1 else ""}'
        for i, (k, v) in enumerate(parameters.items())
    )
    return f"""\
# Written by `vidtrt triton-repo`. One request = one frame of one stream (sequence).
name: {_pbtxt_string(name)}
backend: "python"
# At most one request per stream in one execute() call (Oldest strategy).
max_batch_size: {batch}
input [
  {{ name: "IMAGE" data_type: TYPE_UINT8 dims: [ -1 ] optional: true allow_ragged_batch: true }},
  {{ name: "FRAME" data_type: TYPE_UINT8 dims: [ -1, -1, 3 ] optional: true allow_ragged_batch: true }}
]
output [
  {{ name: "FRAME_INDEX" data_type: TYPE_INT64 dims: [ -1 ] }},
  {{ name: "STAGES" data_type: TYPE_UINT8 dims: [ -1 ] }},
  {{ name: "COUNTS" data_type: TYPE_INT32 dims: [ -1 ] }},
  {{ name: "BOXES" data_type: TYPE_FP32 dims: [ -1, 4 ] }},
  {{ name: "SCORES" data_type: TYPE_FP32 dims: [ -1 ] }},
  {{ name: "LABELS" data_type: TYPE_INT64 dims: [ -1 ] }}
]
sequence_batching {{
  max_sequence_idle_microseconds: {int(round(idle_timeout_s * 1e6))}
  control_input [
    {{ name: "START" control [ {{ kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] }} ] }},
    {{ name: "END" control [ {{ kind: CONTROL_SEQUENCE_END int32_false_true: [ 0, 1 ] }} ] }},
    {{ name: "CORRID" control [ {{ kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 }} ] }}
  ]
  oldest {{
    max_candidate_sequences: {max_streams}
    max_queue_delay_microseconds: 0
  }}
}}
instance_group [ {{ count: {instances} kind: KIND_CPU }} ]
parameters [
{params}
]
"""


def write_repository(
    bundle: Bundle | str | Path,
    out: str | Path,
    *,
    backend: str = "onnxruntime",
    precision: str = "fp32",
    instances: int = 1,
    idle_timeout_s: float = 60.0,
    max_streams: int = 64,
    name: str | None = None,
    schedule: dict | None = None,
    threads: int = 0,
    force: bool = False,
) -> Path:
    """Writes the repository into ``out``; returns the model's directory."""
    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    resolved = check_servable(bundle, backend, precision, dict(schedule or {}))
    name = name or bundle.manifest.config_name
    if not _NAME.match(name):
        raise ValueError(f"--name {name!r}: use letters, digits, '_', '-' and '.' (it is a directory name)")
    for what, value, low in (("instances", instances, 1), ("max_streams", max_streams, 1), ("threads", threads, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{what} must be an integer >= {low}, got {value!r}")
    if not idle_timeout_s > 0:
        raise ValueError(f"the idle timeout must be > 0 s, got {idle_timeout_s!r}")
    out = Path(out)
    model_dir = out / name
    if model_dir.exists():
        if not force:
            raise FileExistsError(f"{model_dir} exists; give --force to replace it")
        shutil.rmtree(model_dir)
    version_dir = model_dir / "1"
    version_dir.mkdir(parents=True)
    shutil.copytree(bundle.directory, version_dir / "bundle")
    (version_dir / "model.py").write_text(MODEL_PY.format(site_dirs=site_dirs()))
    parameters = {
        "bundle": "bundle",
        "bundle_sha256": bundle_identity(bundle),
        "method": bundle.manifest.method,
        "backend": backend,
        "precision": precision,
        "schedule": json.dumps(resolved, sort_keys=True),
        "idle_timeout_s": repr(float(idle_timeout_s)),
        "threads": str(threads),
    }
    (model_dir / "config.pbtxt").write_text(
        stream_model_config(
            name, instances=instances, idle_timeout_s=idle_timeout_s, max_streams=max_streams, parameters=parameters
        )
    )
    return model_dir


# ---------------------------------------------------------------- plain per-stage models

_TRITON_TYPES = {
    "float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64", "int32": "TYPE_INT32",
    "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "int8": "TYPE_INT8",
}  # fmt: skip


def _dims(shape) -> str:
    return ", ".join("-1" if isinstance(d, str) else str(int(d)) for d in shape)


def _tensor_lines(tensors) -> str:
    return ",\n".join(
        f'  {{ name: {_pbtxt_string(t.name)} data_type: {_TRITON_TYPES[t.dtype]} dims: [ {_dims(t.shape)} ] }}' for t in tensors
    )


def stage_model_config(bundle: Bundle, stage: str, model_name: str, platform: str, idle_timeout_s: float) -> str:
    """The config of one stage as a plain model. A state tensor that this stage
    both produces and consumes becomes Triton implicit state (kept by Triton per
    sequence); a state tensor passed to another stage stays an ordinary input
    and output, for the driver (BLS model or client) to carry."""
    spec = bundle.stages[stage]
    own_state = []  # (input, output, StateSpec)
    for state in bundle.manifest.state:
        source_stage, source_output = state.source.split(".", 1)
        for target in state.targets:
            target_stage, target_input = target.split(".", 1)
            if source_stage == stage and target_stage == stage:
                own_state.append((target_input, source_output, state))
    cross_stage = bool(
        [s for s in bundle.manifest.state if any(t.split(".")[0] != s.source.split(".")[0] for t in s.targets)
         and (s.source.split(".")[0] == stage or any(t.split(".")[0] == stage for t in s.targets))]
    )  # fmt: skip
    state_inputs = {i for i, _, _ in own_state}
    state_outputs = {o for _, o, _ in own_state}
    inputs = [t for t in spec.inputs if t.name not in state_inputs or cross_stage]
    outputs = [t for t in spec.outputs if t.name not in state_outputs or cross_stage]
    text = [
        f"# Written by `vidtrt triton-repo --stage-models`: stage {stage!r} of {bundle.manifest.config_name} "
        f"({bundle.manifest.method}) as a plain model.",
        f"name: {_pbtxt_string(model_name)}",
        f"platform: {_pbtxt_string(platform)}",
        "max_batch_size: 0",
        "input [", _tensor_lines(inputs), "]",
        "output [", _tensor_lines(outputs), "]",
    ]
    if own_state and not cross_stage:
        states = ",\n".join(
            f"    {{ input_name: {_pbtxt_string(i)} output_name: {_pbtxt_string(o)} "
            f"data_type: {_TRITON_TYPES[s.dtype]} dims: [ {_dims(s.shape)} ] }}"
            for i, o, s in own_state
        )
        text += [
            "sequence_batching {",
            f"  max_sequence_idle_microseconds: {int(round(idle_timeout_s * 1e6))}",
            '  control_input [ { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] } ]',
            "  state [",
            states,
            "  ]",
            "}",
        ]
    elif cross_stage:
        text.append(
            "# This stage's state goes to or comes from another stage: it is an ordinary input/output here, "
            "carried by the caller (a BLS model or the client) in the method's schedule."
        )
    return "\n".join(text) + "\n"


def write_stage_models(bundle: Bundle | str | Path, out: str | Path, *, precision: str = "fp32", idle_timeout_s: float = 60.0, force: bool = False) -> list[Path]:
    """Every stage of the bundle as a plain model in repository ``out``:
    ``<config>_<stage>/1/model.onnx`` for Triton's onnxruntime backend, or
    ``model.plan`` for its tensorrt backend when the bundle has engines of
    ``precision`` (then the plugin library must be loaded into the server:
    docs/SERVING.md). Not loadable by the CPU-only server of the tests."""
    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    engines = bundle.manifest.engines.get(precision, {}).get("files", {})
    written = []
    for stage in bundle.stages:
        name = f"{bundle.manifest.config_name}_{stage}"
        model_dir = Path(out) / name
        if model_dir.exists():
            if not force:
                raise FileExistsError(f"{model_dir} exists; give --force to replace it")
            shutil.rmtree(model_dir)
        (model_dir / "1").mkdir(parents=True)
        if stage in engines:
            shutil.copy2(bundle.path(engines[stage]), model_dir / "1" / "model.plan")
            platform = "tensorrt_plan"
        else:
            shutil.copy2(bundle.stage_file(stage, precision), model_dir / "1" / "model.onnx")
            platform = "onnxruntime_onnx"
        (model_dir / "config.pbtxt").write_text(stage_model_config(bundle, stage, name, platform, idle_timeout_s))
        written.append(model_dir)
    return written
