"""The TensorRT layer: engine compatibility records, the binding plan (state
buffers, ping-pong), optimisation-profile derivation, the errors without
TensorRT, and the tensorrt backend's bookkeeping against a simulated
TensorRT + CUDA (engines that run the stage's ONNX graph in ONNX Runtime on a
fake device heap).

The simulation checks what the backend does with buffers, addresses, graphs
and copies — never TensorRT itself. Tests that need the real TensorRT 11 or a
GPU skip with the reason.
"""

from __future__ import annotations

import copy
import ctypes
import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest

import vidtrt.tensorrt as vtrt
from vidtrt.tensorrt import flavours
from vidtrt import cli
from vidtrt.core.bundle import Manifest, StageSpec, StateSpec, TensorSpec, load_bundle
from vidtrt.export.exporter import export_bundle
from vidtrt.runtime.backends import create_backend
from vidtrt.runtime.backends import onnxruntime_fused_ops as fused_ops
from vidtrt.runtime.binding import (
    INPUT,
    RESULT,
    STATE,
    STATE_IN,
    STATE_OUT,
    BindingPlan,
    BindingPlanError,
)
from vidtrt.core.bundle import concrete_shape, feature_sizes
from vidtrt.methods.common import sample_image
from vidtrt.runtime.pipelines import create_pipeline
from vidtrt.core.preprocess import Preprocessor
from vidtrt.tensorrt.build import ImageProfile, engine_path, image_profile, stage_profiles
from vidtrt.tensorrt.compat import (
    EngineMismatchError,
    EngineRecord,
    Environment,
    check_engine_compatible,
    current_environment,
    make_record,
)

DETECTIONS = ("boxes", "scores", "labels", "valid")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return export_bundle("psla", tmp_path_factory.mktemp("trt") / "psla_small", config_name="psla_small", log=lambda _: None)


# ====================================================================== compat

RECORD = EngineRecord("11.1.0.106", "NVIDIA GeForce RTX 3090", "8.6", "ab" * 32, "fp16", "2026-07-01T12:00:00+00:00")
SAME = Environment("11.1.0.106", "NVIDIA GeForce RTX 3090", "8.6", "ab" * 32)


def test_compatible_environment_passes():
    check_engine_compatible(RECORD, SAME)


def test_engine_without_plugins_runs_with_or_without_the_library():
    record = EngineRecord(**{**RECORD.to_dict(), "plugin_library_sha256": None})
    check_engine_compatible(record, SAME)
    check_engine_compatible(record, Environment("11.1.0.106", "NVIDIA GeForce RTX 3090", "8.6", None))


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"gpu_name": "NVIDIA A100-SXM4-40GB"}, "GPU: built on 'NVIDIA GeForce RTX 3090', this machine has 'NVIDIA A100-SXM4-40GB'"),
        ({"compute_capability": "8.9"}, "compute capability: built for 8.6, this GPU is 8.9"),
        ({"tensorrt_version": "11.2.0.10"}, "TensorRT version: built with 11.1.0.106, this installation has 11.2.0.10"),
        ({"plugin_library_sha256": "cd" * 32}, "plugin library: built with libvidtrt_plugins.so sha256 abababababab…"),
        ({"plugin_library_sha256": None}, "this installation has no libvidtrt_plugins.so"),
        ({"tensorrt_version": None}, "TensorRT is not importable here"),
        ({"gpu_name": None, "compute_capability": None}, "GPU: none visible here"),
    ],
)
def test_each_difference_is_named_with_the_rebuild_command(change, needle):
    current = Environment(**{**SAME.__dict__, **change})
    with pytest.raises(EngineMismatchError) as err:
        check_engine_compatible(RECORD, current, bundle="bundles/psla")
    text = str(err.value)
    assert needle in text
    assert "`vidtrt build bundles/psla --precision fp16`" in text
    assert isinstance(err.value, ValueError)
    assert text.count("\n  - ") == 1  # exactly the one difference


def test_all_differences_are_listed_together():
    current = Environment("11.2.0.10", "NVIDIA L4", "8.9", None)
    with pytest.raises(EngineMismatchError) as err:
        check_engine_compatible(RECORD, current)
    text = str(err.value)
    for word in ("GPU:", "compute capability:", "TensorRT version:", "plugin library:"):
        assert word in text
    assert text.count("\n  - ") == 4


def test_record_round_trip_and_missing_keys():
    entry = {"files": {"key": "engines/fp16/key.engine"}, "plugins": {"PSLA": "1"}, **RECORD.to_dict()}
    assert EngineRecord.from_entry(entry) == RECORD
    del entry["gpu_name"]
    with pytest.raises(ValueError, match="lacks gpu_name"):
        EngineRecord.from_entry(entry)


def test_make_record_needs_a_complete_environment():
    record = make_record(SAME, "int8", built_at="2026-01-01T00:00:00+00:00")
    assert record.precision == "int8" and record.gpu_name == SAME.gpu_name
    with pytest.raises(ValueError, match="no CUDA GPU"):
        make_record(Environment("11.1.0", None, None, None, notes=("no CUDA GPU (cudaErrorNoDevice)",)), "fp32")


def test_current_environment_without_tensorrt_says_why():
    ok, reason = vtrt.tensorrt_available()
    env = current_environment()
    if ok:
        assert env.tensorrt_version == reason
    else:
        assert env.tensorrt_version is None and reason in env.notes
    gpu_ok, _ = vtrt.cuda_available()
    assert (env.gpu_name is not None) == gpu_ok


# ====================================================================== binding plan


def test_psla_plan(bundle):
    plan = BindingPlan.from_manifest(bundle.manifest)
    # Both states are read and written by the key stage: ping-pong.
    assert plan.buffers["temporal"] == plan.buffers["temporal"].__class__("temporal", (1, 64, "h", "w"), "float32", 2, STATE)
    assert plan.buffers["temporal_key"].count == 2
    assert plan.writer == {"temporal": "key", "temporal_key": "key"}
    key = plan.stages["key"]
    assert key.state_inputs == {"temporal_in": "temporal", "temporal_key_in": "temporal_key"}
    assert key.state_outputs == {"temporal_out": "temporal", "temporal_key_out": "temporal_key"}
    assert key.per_call == ("image", "has_state")
    assert key.results == DETECTIONS
    assert plan.stages["nonkey"].state_outputs == {} and plan.stages["nonkey"].per_call == ("image",)
    assert plan.stages["perframe"].state_inputs == {}
    # Per-call inputs and results are shared across the three stages.
    assert sorted(b.name for b in plan.buffers.values() if b.role != STATE) == sorted(
        ["in:image", "in:has_state"] + [f"out:{n}" for n in DETECTIONS]
    )
    for writes in range(5):
        b = plan.bindings("key", writes)
        assert b["temporal_in"] == b["temporal_in"].__class__("temporal_in", STATE_IN, "temporal", writes % 2)
        assert b["temporal_out"].role == STATE_OUT and b["temporal_out"].index == (writes + 1) % 2
        assert b["image"].role == INPUT and b["image"].buffer == "in:image"
        assert b["boxes"].role == RESULT and b["boxes"].buffer == "out:boxes"
        n = plan.bindings("nonkey", writes)
        assert n["temporal_in"].index == writes % 2 and "temporal_out" not in n
    assert "temporal" in plan.describe()


def test_psla_schedule_reads_latest_and_never_aliases(bundle):
    plan = BindingPlan.from_manifest(bundle.manifest)
    schedule = (["nonkey"] * 4 + ["key"] + ["nonkey"] * 5) * 4
    _simulate(plan, ["key"] + schedule)


def _manifest(stages: dict, state: list) -> Manifest:
    """stages: name → (inputs, outputs), each a list of (name, shape, dtype)."""
    return Manifest(
        method="synthetic",
        config_name="synthetic",
        config={},
        stages={
            name: StageSpec(name, f"{name}.onnx", [TensorSpec(*t) for t in ins], [TensorSpec(*t) for t in outs])
            for name, (ins, outs) in stages.items()
        },
        state=[StateSpec(*s) for s in state],
        preprocess={},
        class_names=[],
        schedule={},
        feature_stride=16,
        checkpoint="model.ckpt",
    )


IMG = ("image", [1, 3, "H", "W"], "float32")
MEM = [1, 8, "h", "w"]


def _simulate(plan: BindingPlan, schedule: list[str], alive: dict | None = None) -> None:
    """Runs ``schedule`` on symbolic buffers holding version numbers: every
    state read must see the latest version, a call must never bind one copy
    as both input and output, and the ``alive`` most recent versions of each
    state must stay in distinct copies."""
    alive = alive or {}
    content = {(b.name, i): 0 for b in plan.state_buffers() for i in range(b.count)}  # version 0: the zeros
    latest = {b.name: 0 for b in plan.state_buffers()}
    history = {b.name: [0] for b in plan.state_buffers()}
    for stage in schedule:
        binding = plan.bindings(stage, dict(latest))
        ins = {(b.buffer, b.index) for b in binding.values() if b.role in (STATE_IN, INPUT)}
        outs = {(b.buffer, b.index) for b in binding.values() if b.role in (STATE_OUT, RESULT)}
        assert not ins & outs, (stage, ins & outs)
        for b in binding.values():
            if b.role == STATE_IN:
                assert content[(b.buffer, b.index)] == latest[b.buffer], (stage, b)
        for b in binding.values():
            if b.role == STATE_OUT:
                latest[b.buffer] += 1
                content[(b.buffer, b.index)] = latest[b.buffer]
                history[b.buffer].append(latest[b.buffer])
                keep = history[b.buffer][-alive.get(b.buffer, 1):]
                held = {v for (name, _), v in content.items() if name == b.buffer}
                assert set(keep) <= held, (b.buffer, keep, held)


def test_state_read_by_two_other_stages_needs_one_buffer():
    m = _manifest(
        {
            "encode": ([IMG], [("memory", MEM, "float32")]),
            "a": ([IMG, ("mem_in", MEM, "float32")], [("boxes", [10, 4], "float32")]),
            "b": ([IMG, ("mem_in", MEM, "float32")], [("boxes", [10, 4], "float32"), ("extra", [3], "int64")]),
        },
        [("memory", "encode.memory", ["a.mem_in", "b.mem_in"], MEM, "float32")],
    )
    plan = BindingPlan.from_manifest(m)
    assert plan.buffers["memory"].count == 1
    assert plan.bindings("encode", 3)["memory"].index == 0 and plan.bindings("a", 3)["mem_in"].index == 0
    assert plan.stages["a"].buffer_of["boxes"] == plan.stages["b"].buffer_of["boxes"] == "out:boxes"
    _simulate(plan, ["encode", "a", "b", "a", "encode", "b", "encode", "encode", "a"])


def test_older_versions_kept_alive_need_one_buffer_each():
    m = _manifest(
        {
            "encode": ([IMG], [("memory", MEM, "float32")]),
            "a": ([IMG, ("mem_in", MEM, "float32")], [("boxes", [10, 4], "float32")]),
        },
        [("memory", "encode.memory", ["a.mem_in"], MEM, "float32")],
    )
    plan = BindingPlan.from_manifest(m, versions_alive={"memory": 3})
    assert plan.buffers["memory"].count == 3
    _simulate(plan, ["encode", "a"] * 7, alive={"memory": 3})
    with pytest.raises(BindingPlanError, match=">= 1"):
        BindingPlan.from_manifest(m, versions_alive={"memory": 0})
    with pytest.raises(BindingPlanError, match="unknown state"):
        BindingPlan.from_manifest(m, versions_alive={"nope": 2})


def test_state_read_and_written_by_one_stage_ping_pongs():
    m = _manifest(
        {"step": ([IMG, ("h_in", MEM, "float16")], [("h_out", MEM, "float16"), ("scores", [5], "float32")])},
        [("hidden", "step.h_out", ["step.h_in"], MEM, "float16")],
    )
    plan = BindingPlan.from_manifest(m)
    assert plan.buffers["hidden"].count == 2 and plan.buffers["hidden"].dtype == "float16"
    assert [plan.bindings("step", k)["h_out"].index for k in range(4)] == [1, 0, 1, 0]
    assert [plan.bindings("step", k)["h_in"].index for k in range(4)] == [0, 1, 0, 1]
    _simulate(plan, ["step"] * 9)
    # Ping-pong and versions kept alive combine: max(versions_alive, 2).
    assert BindingPlan.from_manifest(m, versions_alive={"hidden": 3}).buffers["hidden"].count == 3
    _simulate(BindingPlan.from_manifest(m, versions_alive={"hidden": 3}), ["step"] * 9, alive={"hidden": 3})


def test_two_states_written_by_different_stages():
    m = _manifest(
        {
            "key": ([IMG, ("feat_in", MEM, "float32")], [("feat_out", MEM, "float32"), ("boxes", [4, 4], "float32")]),
            "track": (
                [IMG, ("feat_in", MEM, "float32"), ("tracks_in", [16, 4], "float32")],
                [("tracks_out", [16, 4], "float32"), ("boxes", [4, 4], "float32")],
            ),
        },
        [
            ("feat", "key.feat_out", ["key.feat_in", "track.feat_in"], MEM, "float32"),
            ("tracks", "track.tracks_out", ["track.tracks_in"], [16, 4], "float32"),
        ],
    )
    plan = BindingPlan.from_manifest(m)
    assert plan.buffers["feat"].count == 2 and plan.buffers["tracks"].count == 2
    b = plan.bindings("track", {"feat": 3, "tracks": 6})
    assert (b["feat_in"].index, b["tracks_in"].index, b["tracks_out"].index) == (1, 0, 1)
    rng = random.Random(0)
    _simulate(plan, ["key"] + [rng.choice(["key", "track", "track"]) for _ in range(40)])


def test_same_result_name_with_another_shape_gets_its_own_buffer():
    m = _manifest(
        {"a": ([IMG], [("boxes", [10, 4], "float32")]), "b": ([IMG], [("boxes", [20, 4], "float32")])},
        [],
    )
    plan = BindingPlan.from_manifest(m)
    assert plan.stages["a"].buffer_of["boxes"] == "out:boxes"
    assert plan.stages["b"].buffer_of["boxes"] == "out:b.boxes"


@pytest.mark.parametrize(
    "state, match",
    [
        (("m", "nostage.out", ["a.mem_in"], MEM, "float32"), "source stage 'nostage'"),
        (("m", "a.nothing", ["a.mem_in"], MEM, "float32"), "has no output 'nothing'"),
        (("m", "a.mem_out", ["a.nothing"], MEM, "float32"), "has no input 'nothing'"),
        (("m", "a.mem_out", ["a.mem_in"], [1, 4, "h", "w"], "float32"), "is float32\\[1, 4, 'h', 'w'\\] but a.mem_out"),
        (("m", "a.mem_out", ["a.mem_in"], MEM, "float16"), "float16"),
        (("m", "amem_out", ["a.mem_in"], MEM, "float32"), "not of the form"),
    ],
)
def test_inconsistent_wiring_is_refused(state, match):
    m = _manifest({"a": ([IMG, ("mem_in", MEM, "float32")], [("mem_out", MEM, "float32")])}, [state])
    with pytest.raises(BindingPlanError, match=match):
        BindingPlan.from_manifest(m)


def test_concrete_shapes():
    sizes = feature_sizes((600, 1000), 16)
    assert sizes == {"H": 600, "W": 1000, "h": 38, "w": 63}
    assert concrete_shape([1, 1024, "h", "w"], sizes) == (1, 1024, 38, 63)
    with pytest.raises(KeyError, match="'T'"):
        concrete_shape([1, "T"], sizes)


# ====================================================================== profiles

PAPER_PRE = Preprocessor().as_dict()  # short 600, long ≤ 1000, pad 16


def test_paper_profile_covers_every_frame_the_preprocessor_makes():
    profile = image_profile(PAPER_PRE)
    assert profile == ImageProfile(min=(16, 16), opt=(576, 1008), max=(1008, 1008))
    pre = Preprocessor.from_dict(PAPER_PRE)
    rng = random.Random(1)
    sizes = [(rng.randint(1, 4000), rng.randint(1, 4000)) for _ in range(3000)] + [(1, 4000), (4000, 1), (600, 1000)]
    for h, w in sizes:
        ph, pw = pre.plan(h, w)[2]
        assert profile.min[0] <= ph <= profile.max[0] and profile.min[1] <= pw <= profile.max[1], (h, w, ph, pw)


def test_max_aspect_narrows_the_profile_and_still_covers_those_frames():
    profile = image_profile(PAPER_PRE, max_aspect=16 / 9)
    assert profile == ImageProfile(min=(576, 576), opt=(576, 1008), max=(1008, 1008))
    pre = Preprocessor.from_dict(PAPER_PRE)
    rng = random.Random(2)
    checked = 0
    for _ in range(5000):
        h, w = rng.randint(10, 4000), rng.randint(10, 4000)
        if max(h, w) / min(h, w) > 16 / 9:
            continue
        ph, pw = pre.plan(h, w)[2]
        assert 576 <= ph <= 1008 and 576 <= pw <= 1008, (h, w)
        checked += 1
    assert checked > 1000


def test_profile_without_long_side_cap_needs_max_aspect():
    pre = {**PAPER_PRE, "max_long_side": None}
    with pytest.raises(ValueError, match="max_aspect"):
        image_profile(pre)
    profile = image_profile(pre, max_aspect=2.0)
    assert profile.min == (608, 608) and profile.max == (1200, 1200)
    with pytest.raises(ValueError, match=">= 1"):
        image_profile(PAPER_PRE, max_aspect=0.5)


def test_opt_follows_the_given_frame_and_is_clamped():
    assert image_profile(PAPER_PRE, opt_frame=(480, 640)).opt == (608, 800)
    assert image_profile(PAPER_PRE, opt_frame=(1080, 1920)).opt == (576, 1008)
    assert image_profile(PAPER_PRE, opt_frame=(100, 4000), max_aspect=16 / 9).opt == (576, 1008)


def test_stage_profiles_follow_the_feature_stride(bundle):
    image = image_profile(bundle.manifest.preprocess)
    assert image == ImageProfile(min=(16, 16), opt=(144, 256), max=(256, 256))
    shapes = stage_profiles(bundle.manifest, image)
    assert set(shapes) == {"key", "nonkey", "perframe"}
    assert shapes["key"]["image"] == ((1, 3, 16, 16), (1, 3, 144, 256), (1, 3, 256, 256))
    assert shapes["key"]["temporal_in"] == ((1, 64, 1, 1), (1, 64, 9, 16), (1, 64, 16, 16))
    assert shapes["nonkey"]["temporal_key_in"] == ((1, 16, 1, 1), (1, 16, 9, 16), (1, 16, 16, 16))
    assert "has_state" not in shapes["key"]  # static: no profile entry
    assert set(shapes["perframe"]) == {"image"}
    # An odd image (no padding) rounds the feature map up, as the pipeline does.
    odd = stage_profiles(bundle.manifest, ImageProfile((17, 17), (33, 47), (250, 250)))
    assert odd["key"]["temporal_in"] == ((1, 64, 2, 2), (1, 64, 3, 3), (1, 64, 16, 16))
    assert engine_path("fp16", "key") == "engines/fp16/key.engine"
    # A static input listed before the dynamic ones takes nothing from them.
    reordered = copy.deepcopy(bundle.manifest)
    reordered.stages["key"].inputs.reverse()
    assert reordered.stages["key"].inputs[0].name == "has_state"
    assert stage_profiles(reordered, image)["key"] == shapes["key"]
    with pytest.raises(dataclasses.FrozenInstanceError):  # a profile is a value
        image.min = (8, 8)


# ====================================================================== without TensorRT

needs_no_tensorrt = pytest.mark.skipif(vtrt.tensorrt_available()[0], reason="tensorrt is importable here")


@needs_no_tensorrt
def test_create_backend_without_tensorrt_says_what_is_missing(bundle):
    with pytest.raises(vtrt.TensorRTUnavailable) as err:
        create_backend("tensorrt", bundle)
    text = str(err.value)
    assert "the tensorrt backend needs the TensorRT Python package (10.8 or newer)" in text
    assert "import tensorrt" in text and "vidtrt doctor" in text
    assert isinstance(err.value, RuntimeError)


@needs_no_tensorrt
def test_build_command_without_tensorrt_fails_in_one_line(bundle, capsys):
    assert cli.main(["build", str(bundle.directory), "--runtime", "tensorrt", "--precision", "fp32"]) == 1
    err = capsys.readouterr().err
    assert "vidtrt build: error: vidtrt build needs the TensorRT Python package (10.8 or newer)" in err
    assert "vidtrt doctor" in err and "Traceback" not in err


def test_build_command_arguments(capsys):
    args = cli.build_parser().parse_args(["build", "b", "--precision", "int8", "--workspace", "512", "--frame-size", "1920x1080"])
    assert (args.precision, args.workspace, args.frame_size, args.timing_cache) == ("int8", 512, (1080, 1920), None)
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["build", "b", "--frame-size", "wide"])
    assert "WIDTHxHEIGHT" in capsys.readouterr().err


def test_tensorrt_package_imports_nothing_heavy():
    import subprocess
    import sys

    code = "import sys, vidtrt.tensorrt, vidtrt.tensorrt.compat, vidtrt.tensorrt.build, vidtrt.runtime.binding; " \
        "print('tensorrt' in sys.modules, 'cuda.bindings.runtime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


# ====================================================================== simulated TensorRT + CUDA


class FakeCuda:
    """cuda.bindings.runtime as far as the backend uses it, on a host heap.
    Calls return (error, *values) with error 0, like cuda-python. Stream
    capture records enqueues instead of running them; a graph launch replays
    them. Every call runs synchronously."""

    class cudaMemcpyKind:
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice = 1, 2, 3

    class cudaStreamCaptureMode:
        cudaStreamCaptureModeThreadLocal = 1

    cudaStreamNonBlocking = 1
    cudaEventDefault = 0

    def __init__(self):
        self.heap: dict[int, np.ndarray] = {}
        self.next_ptr = 1 << 20
        self.mallocs = self.frees = self.launches = 0
        self.capturing: list | None = None
        self.graphs: dict[int, list] = {}
        self.live_graphs: set[int] = set()
        self.devices: list[int] = []  # every cudaSetDevice

    def cudaSetDevice(self, device):
        self.devices.append(device)
        return (0,)

    def cudaMalloc(self, size):
        ptr, self.next_ptr = self.next_ptr, self.next_ptr + size + 4096
        self.heap[ptr] = np.zeros(size, np.uint8)
        self.mallocs += 1
        return 0, ptr

    def cudaFree(self, ptr):
        del self.heap[ptr]
        self.frees += 1
        return (0,)

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        if kind == 1:
            self.heap[dst][:n] = np.frombuffer(ctypes.string_at(src, n), np.uint8)
        elif kind == 2:
            ctypes.memmove(dst, self.heap[src].ctypes.data, n)
        else:
            self.heap[dst][:n] = self.heap[src][:n]
        return (0,)

    def cudaMemsetAsync(self, ptr, value, n, stream):
        self.heap[ptr][:n] = value
        return (0,)

    def cudaStreamCreateWithFlags(self, flags):
        return 0, 7

    def cudaStreamSynchronize(self, stream):
        return (0,)

    def cudaStreamDestroy(self, stream):
        return (0,)

    def cudaEventCreateWithFlags(self, flags):
        return 0, object()

    def cudaEventRecord(self, event, stream):
        assert self.capturing is None, "events must not be recorded into a graph"
        return (0,)

    def cudaEventSynchronize(self, event):
        return (0,)

    def cudaEventElapsedTime(self, start, end):
        return 0, 0.5

    def cudaStreamBeginCapture(self, stream, mode):
        self.capturing = []
        return (0,)

    def cudaStreamEndCapture(self, stream):
        ops, self.capturing = self.capturing, None
        handle = 1000 + len(self.graphs)
        self.graphs[handle] = ops
        return 0, handle

    def cudaGraphInstantiate(self, graph, flags):
        self.live_graphs.add(graph)
        return 0, graph

    def cudaGraphDestroy(self, graph):
        return (0,)

    def cudaGraphExecDestroy(self, graph):
        self.live_graphs.discard(graph)
        return (0,)

    def cudaGraphLaunch(self, graph, stream):
        assert graph in self.live_graphs
        self.launches += 1
        for op in self.graphs[graph]:
            op()
        return (0,)

    def cudaGetLastError(self):
        return (0,)


class FakePluginRegistry:
    def __init__(self):
        self.loaded: list[str] = []

    def load_library(self, path):
        self.loaded.append(path)
        return object()

    def get_creator(self, name, version, namespace=""):
        return object()


class FakeTensorRT:
    """tensorrt as far as the backend uses it. An "engine file" names an ONNX
    graph and the stage's I/O; executing it runs the graph in ONNX Runtime on
    the FakeCuda heap, after checking that no output address is an input's."""

    __version__ = "11.1.0.fake"

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class TensorIOMode:
        INPUT, OUTPUT = "input", "output"

    class ExecutionContextAllocationStrategy:
        STATIC, USER_MANAGED = 0, 2

    class OnnxParserFlag:
        ENABLE_PLUGIN_OVERRIDE = 1

    class MemoryPoolType:
        WORKSPACE = 0

    def __init__(self, cuda: FakeCuda):
        self.cuda = cuda
        self.deserialized = 0
        self.executions: list[str] = []
        self.graphs_by_path: dict[str, tuple] = {}  # ONNX path → (stage, StageSpec, feature stride)
        self.built: list[str] = []
        self.fail_stage: str | None = None
        self.network_flags: list[int] = []
        self.engine_padding = 0  # bytes of JSON whitespace after each engine: sizes a build reports in MB
        self.ignore_mismatch: list[bool] = []  # what the build asked of every set_timing_cache
        self.parsers: list[FakeParser] = []

    @staticmethod
    def nptype(dtype):
        return dtype

    def get_plugin_registry(self):
        """Where this build has libvidtrt_plugins.so, loading it registers our creators."""
        return FakePluginRegistry()

    def Builder(self, logger):
        return FakeBuilder(self)


    def OnnxParser(self, network, logger):
        parser = FakeParser(network)
        self.parsers.append(parser)
        return parser

    def Runtime(self, logger):
        fake = self

        class Runtime:
            def deserialize_cuda_engine(self, data):
                fake.deserialized += 1
                return FakeEngine(fake, json.loads(bytes(data)))

        return Runtime()


class FakeParser:
    def __init__(self, network):
        self.network, self.num_errors, self.flags = network, 0, set()

    def set_flag(self, flag):
        self.flags.add(flag)

    def parse_from_file(self, path):
        self.network["onnx"] = path
        return Path(path).exists()


class FakeConfig:
    def __init__(self, trt: FakeTensorRT):
        self.trt = trt
        self.pool_limits, self.profiles, self.cache = {}, [], None

    def set_memory_pool_limit(self, pool, size):
        self.pool_limits[pool] = size

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)

    def create_timing_cache(self, data):
        return bytearray(data)

    def set_timing_cache(self, cache, ignore_mismatch):
        self.trt.ignore_mismatch.append(ignore_mismatch)
        if bytes(cache).startswith(b"foreign"):  # a cache of another GPU / TensorRT
            return False
        self.cache = cache
        return True

    def get_timing_cache(self):
        cache = self.cache

        class Cache:
            def serialize(self):
                return bytes(cache)

        return Cache()


class FakeBuilder:
    """Serialises an "engine" naming the graph, its I/O and the profile set on the
    config; appends one byte per stage to the timing cache."""

    def __init__(self, trt: FakeTensorRT):
        self.trt = trt

    def create_network(self, flags):
        self.trt.network_flags.append(flags)
        return {}

    def create_builder_config(self):
        return FakeConfig(self.trt)

    def create_optimization_profile(self):
        return FakeProfile()

    def build_serialized_network(self, network, config):
        stage, spec, stride = self.trt.graphs_by_path[network["onnx"]]
        if stage == self.trt.fail_stage:
            return None
        config.cache.extend(stage[:1].encode())
        self.trt.built.append(stage)
        profile = {}
        for p in config.profiles:
            profile.update(p)
        desc = {
            "stage": stage, "onnx": network["onnx"], "stride": stride,
            "inputs": [t.__dict__ for t in spec.inputs], "outputs": [t.__dict__ for t in spec.outputs],
            "profile": {n: [list(lo), list(opt), list(hi)] for n, (lo, opt, hi) in profile.items()},
        }
        return json.dumps(desc).encode() + b" " * self.trt.engine_padding


class FakeProfile(dict):
    def set_shape(self, name, lo, opt, hi):
        self[name] = (lo, opt, hi)


class FakeEngine:
    def __init__(self, trt: FakeTensorRT, desc: dict):
        self.trt, self.desc = trt, desc
        # The same session kind as the onnxruntime backend's (fused custom ops
        # where libvidtrt_ort_ops.so is built, their decompositions otherwise),
        # so that the two pipelines compare bit for bit: a real engine runs
        # the plugins, and the fused kernels are their host bodies.
        self.session = fused_ops.create_session(desc["onnx"])
        self.io = {t["name"]: (t, "input") for t in desc["inputs"]} | {t["name"]: (t, "output") for t in desc["outputs"]}
        self.num_io_tensors = len(self.io)
        self.device_memory_size_v2 = 1 << 16

    def get_tensor_name(self, i):
        return list(self.io)[i]

    def get_tensor_mode(self, name):
        return self.io[name][1]

    def get_tensor_dtype(self, name):
        return np.dtype(self.io[name][0]["dtype"])

    def get_tensor_shape(self, name):
        return tuple(d if isinstance(d, int) else -1 for d in self.io[name][0]["shape"])

    def get_tensor_profile_shape(self, name, index):
        return [tuple(s) for s in self.desc["profile"][name]]

    def create_execution_context(self, strategy):
        assert strategy == FakeTensorRT.ExecutionContextAllocationStrategy.USER_MANAGED
        return FakeContext(self)


class FakeContext:
    def __init__(self, engine: FakeEngine):
        self.engine = engine
        self.shapes: dict[str, tuple] = {}
        self.addresses: dict[str, int] = {}
        self.scratch = None

    def set_device_memory(self, ptr, size):
        assert ptr in self.engine.trt.cuda.heap and size >= self.engine.device_memory_size_v2
        self.scratch = ptr

    def set_input_shape(self, name, shape):
        assert self.engine.io[name][1] == "input"
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        spec = self.engine.io[name][0]
        image = next(s for n, s in self.shapes.items() if n == "image")
        sizes = feature_sizes(image[2:], self.engine.desc["stride"])
        return concrete_shape(spec["shape"], sizes)

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream):
        assert self.scratch is not None
        frozen = (dict(self.addresses), {n: self.get_tensor_shape(n) for n in self.engine.io})
        cuda = self.engine.trt.cuda
        if cuda.capturing is not None:
            cuda.capturing.append(lambda: self._execute(*frozen))
        else:
            self._execute(*frozen)
        return True

    def _execute(self, addresses, shapes):
        engine, heap = self.engine, self.engine.trt.cuda.heap
        inputs = [n for n, (_, mode) in engine.io.items() if mode == "input"]
        outputs = [n for n in engine.io if n not in inputs]
        in_ptrs = {addresses[n] for n in inputs}
        for n in outputs:
            assert addresses[n] not in in_ptrs, f"{engine.desc['stage']}: output {n} aliases an input"

        def view(name):
            dtype = engine.get_tensor_dtype(name)
            count = int(np.prod(shapes[name]))
            return heap[addresses[name]][: count * dtype.itemsize].view(dtype).reshape(shapes[name])

        feeds = {n: view(n).copy() for n in inputs}
        results = engine.session.run(outputs, feeds)
        for n, value in zip(outputs, results):
            view(n)[...] = value
        engine.trt.executions.append(engine.desc["stage"])


@pytest.fixture
def fakes(bundle, monkeypatch):
    """FakeTensorRT and FakeCuda in place of tensorrt and cuda-python, for the
    build and the backend; this machine's environment matches the engines."""
    yield from _install_fakes(bundle, monkeypatch)


def _install_fakes(bundle, monkeypatch):
    from vidtrt.runtime.backends import tensorrt_backend
    from vidtrt.tensorrt import build, compat

    cuda = FakeCuda()
    trt = FakeTensorRT(cuda)
    for stage, spec in bundle.stages.items():
        trt.graphs_by_path[str(bundle.stage_file(stage))] = (stage, spec, bundle.manifest.feature_stride)
    monkeypatch.setattr(vtrt, "tensorrt_available", lambda: (True, trt.__version__))
    real_available = flavours.available
    monkeypatch.setattr(flavours, "available", lambda name: (True, trt.__version__) if name == "tensorrt" else real_available(name))
    monkeypatch.setattr(vtrt, "cuda_available", lambda device=0: (True, "Simulated GPU"))
    for module in (tensorrt_backend, build):
        monkeypatch.setattr(module, "_trt", lambda: trt)
        monkeypatch.setattr(module, "_cudart", lambda: cuda)
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", trt)  # numpy_dtype() and logger() import it
    vtrt.logger.cache_clear()
    env = Environment(trt.__version__, "Simulated GPU", "8.6", None)
    monkeypatch.setattr(tensorrt_backend, "_environment", lambda device, runtime="tensorrt": env)
    monkeypatch.setattr(compat, "current_environment", lambda device=0, runtime="tensorrt": env)
    yield cuda, trt, env
    bundle.manifest.engines.clear()
    bundle.save()
    vtrt.logger.cache_clear()


@pytest.fixture
def simulated(bundle, fakes, tmp_path):
    """FP32 "engines" built by `build_engines` through FakeTensorRT."""
    from vidtrt.tensorrt.build import build_engines

    log: list[str] = []
    entry = build_engines(bundle, "fp32", timing_cache=tmp_path / "timing.cache", log=log.append)
    fakes[1].build_log = log
    fakes[1].entry = entry
    return fakes


def _images(n, seed=0, hw=(144, 192)):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((1, 3, *hw)).astype(np.float32) for _ in range(n)]


def _run(backend, images, interval=5, placement="middle"):
    stream = create_pipeline(backend, key_interval=interval, key_placement=placement).stream()
    results = []
    for i, image in enumerate(images):
        results += stream.push(i, image)
    return results + stream.flush()


@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_simulated_backend_matches_onnxruntime_pipeline(bundle, simulated, cuda_graphs):
    cuda, trt, _ = simulated
    images = _images(13)
    want = _run(create_backend("onnxruntime", bundle), images)
    backend = create_backend("tensorrt", bundle, cuda_graphs=cuda_graphs)
    got = _run(backend, images)
    assert [(r.index, r.stage) for r in got] == [(r.index, r.stage) for r in want]
    for w, g in zip(want, got):
        for name in DETECTIONS:
            np.testing.assert_array_equal(w.detections[name], g.detections[name], err_msg=f"frame {w.index} {name}")
    assert trt.deserialized == 3  # each engine once
    assert backend.timings["key"] == [0.5] * 3 and len(backend.timings["nonkey"]) == 10
    if cuda_graphs:
        # Ping-pong: a key graph per state copy; non-key reads either copy. The first
        # key reads the zeros (not a plan buffer) and runs without a graph.
        assert len(cuda.graphs) <= 4 and cuda.launches >= 13 - len(cuda.graphs) - 1
    backend.close()
    assert not cuda.heap and cuda.frees == cuda.mallocs  # everything returned


@pytest.fixture(scope="module")
def impression_bundle(tmp_path_factory):
    return export_bundle("impression", tmp_path_factory.mktemp("trt") / "impression_small", config_name="impression_small", log=lambda _: None)


def test_simulated_backend_runs_impression_state(impression_bundle, monkeypatch, tmp_path):
    """Impression Network's state includes the key frame's image (H × W, not
    h × w), read by the next key stage — which writes it too (ping-pong) —
    and by every non-key frame; the memory gate is a per-call input."""
    from vidtrt.tensorrt.build import build_engines

    fakes = _install_fakes(impression_bundle, monkeypatch)
    cuda, _, _ = next(fakes)
    try:
        build_engines(impression_bundle, "fp32", timing_cache=tmp_path / "timing.cache", log=lambda _: None)
        images = _images(9, seed=3, hw=(128, 160))
        options = dict(key_interval=3, key_placement="middle", memory_gate=0.5)
        streams = [create_pipeline(create_backend(name, impression_bundle), **options).stream() for name in ("onnxruntime", "tensorrt")]
        want, got = ([r for i, im in enumerate(images) for r in s.push(i, im)] + s.flush() for s in streams)
        assert [(r.index, r.stage) for r in got] == [(r.index, r.stage) for r in want]
        assert [r.index for r in got if r.stage == "key"] == [1, 4, 7]
        for w, g in zip(want, got):
            for name in DETECTIONS:
                np.testing.assert_array_equal(w.detections[name], g.detections[name], err_msg=f"frame {w.index} {name}")
        streams[1].pipeline.backend.close()
        assert not cuda.heap
    finally:
        next(fakes, None)


def test_simulated_state_ping_pongs_and_memory_is_recycled(bundle, simulated):
    cuda, _, _ = simulated
    backend = create_backend("tensorrt", bundle)
    image = backend.from_numpy(_images(1)[0])
    state = {"temporal": backend.zeros([1, 64, 9, 12], "float32"), "temporal_key": backend.zeros([1, 16, 9, 12], "float32")}
    flag = np.ones(1, np.float32)
    addresses = []
    for i in range(6):
        out = backend.run("key", {"image": image, "temporal_in": state["temporal"], "temporal_key_in": state["temporal_key"], "has_state": flag})
        assert out["temporal_out"].ptr != state["temporal"].ptr
        # Written into the plan's copies (not a pool fallback), alternating 1, 0, 1, ...
        assert out["temporal_out"].slot[1:] == ("temporal", (i + 1) % 2)
        assert out["temporal_key_out"].slot[1:] == ("temporal_key", (i + 1) % 2)
        addresses.append(out["temporal_out"].ptr)
        state = {"temporal": out["temporal_out"], "temporal_key": out["temporal_key_out"]}
        backend.run("nonkey", {"image": image, "temporal_in": state["temporal"], "temporal_key_in": state["temporal_key"]})
        if i == 2:
            mallocs = cuda.mallocs
    assert len(set(addresses)) == 2 and addresses[0::2] == [addresses[0]] * 3  # two copies, alternating
    assert cuda.mallocs == mallocs  # steady state: the pool serves every buffer

    # A state the caller still holds is never overwritten: the write goes elsewhere.
    held = state["temporal"]
    first = backend.run("key", {"image": image, "temporal_in": held, "temporal_key_in": state["temporal_key"], "has_state": flag})
    kept = first["temporal_out"]
    second = backend.run("key", {"image": image, "temporal_in": kept, "temporal_key_in": first["temporal_key_out"], "has_state": flag})
    assert second["temporal_out"].ptr not in (held.ptr, kept.ptr) and second["temporal_out"].slot is None
    before = backend.to_numpy(held).copy()
    backend.run("key", {"image": image, "temporal_in": second["temporal_out"], "temporal_key_in": second["temporal_key_out"], "has_state": flag})
    np.testing.assert_array_equal(backend.to_numpy(held), before)
    backend.close()


def test_build_records_the_engine_set(bundle, simulated, tmp_path):
    from vidtrt.tensorrt.build import build_engines

    cuda, trt, env = simulated
    entry = trt.entry
    assert trt.built == ["key", "nonkey", "perframe"] and set(trt.network_flags) == {0}  # strongly typed: no flags
    assert entry["files"] == {s: f"engines/fp32/{s}.engine" for s in ("key", "nonkey", "perframe")}
    assert EngineRecord.from_entry(entry) == make_record(env, "fp32", built_at=entry["built_at"])
    assert entry["plugins"] == bundle.manifest.versions["plugins"] and entry["plugins"]["PSLA"] == "1"
    assert entry["workspace_mb"] == 2048
    # The minimum is 4 feature cells a side (minimum_image_side), not one padding block.
    assert entry["profile"]["image"] == {"min": [64, 64], "opt": [144, 256], "max": [256, 256]}
    assert entry["profile"]["inputs"]["key"]["temporal_in"]["max"] == [1, 64, 16, 16]
    from vidtrt import _native

    # The build warns when it has no plugin library to load (graphs then use the ops' ONNX functions).
    warned = any("no plugin library" in line for line in trt.build_log)
    assert warned == (_native.plugin_library_path() is None)
    assert not list(bundle.path("engines/fp32").glob(".*partial"))
    on_disk = load_bundle(bundle.directory).manifest
    assert on_disk.engines["fp32"] == entry and "engines/fp32/nonkey.engine" in on_disk.files
    # The timing cache went through every stage in order and was written back; the next build starts from it.
    assert (tmp_path / "timing.cache").read_bytes() == b"knp"
    build_engines(bundle, "fp32", timing_cache=tmp_path / "timing.cache", log=lambda _: None)
    assert (tmp_path / "timing.cache").read_bytes() == b"knpknp"


def test_failed_build_keeps_the_previous_engines(bundle, simulated):
    from vidtrt.tensorrt.build import EngineBuildError, build_engines

    _, trt, _ = simulated
    before = {s: bundle.path(f).read_bytes() for s, f in trt.entry["files"].items()}
    trt.fail_stage = "nonkey"
    with pytest.raises(EngineBuildError, match="failed to build the fp32 nonkey engine"):
        build_engines(bundle, "fp32", log=lambda _: None)
    assert {s: bundle.path(f).read_bytes() for s, f in trt.entry["files"].items()} == before
    assert not list(bundle.path("engines/fp32").glob(".*partial"))
    assert load_bundle(bundle.directory).manifest.engines["fp32"]["built_at"] == trt.entry["built_at"]


def test_build_refuses_missing_variants_and_mixed_sets(bundle, simulated, monkeypatch):
    from vidtrt.core.bundle import BundleError
    from vidtrt.tensorrt import compat
    from vidtrt.tensorrt.build import build_engines

    with pytest.raises(BundleError, match="no fp16 graphs; create them with `vidtrt export --precisions fp32,fp16`"):
        build_engines(bundle, "fp16", log=lambda _: None)
    with pytest.raises(ValueError, match="precision must be one of"):
        build_engines(bundle, "bf16", log=lambda _: None)
    # Rebuilding one stage elsewhere would mix two machines under one record.
    monkeypatch.setattr(compat, "current_environment", lambda device=0, runtime="tensorrt": Environment("11.1.0.fake", "NVIDIA L4", "8.9", None))
    with pytest.raises(BundleError, match="built elsewhere"):
        build_engines(bundle, "fp32", stages=["key"], log=lambda _: None)


def test_build_logs_sizes_in_mb_and_keeps_a_mismatched_timing_cache_out(bundle, fakes, tmp_path, monkeypatch):
    """Each stage's log line gives its engine's size in MB (2**20 bytes), as
    the file on disk has it; the timing cache is never applied across a
    mismatch (TensorRT would take timings of another GPU or version)."""
    import tqdm as tqdm_module

    from vidtrt import _native
    from vidtrt.tensorrt import build

    cuda, trt, _ = fakes
    trt.engine_padding = 3 * 2**20 // 2  # 1.5 MB plus the JSON
    _tick_clock(build, monkeypatch, 1.2344)
    bars = _record_progress_bars(monkeypatch, tqdm_module)
    log: list[str] = []
    entry = build.build_engines(bundle, "fp32", timing_cache=tmp_path / "timing.cache", workspace_mb=1, log=log.append)
    assert not bars  # no progress bar unless asked
    assert entry["workspace_mb"] == 1  # the smallest workspace is allowed
    for stage, file in entry["files"].items():
        size = bundle.path(file).stat().st_size
        assert entry["stages"][stage]["bytes"] == size and 1.5 * 2**20 < size < 1.55 * 2**20
        assert f"  {stage}: 1.5 MB" in log
        assert entry["stages"][stage]["build_seconds"] == 1.234  # to the millisecond
    assert trt.ignore_mismatch and not any(trt.ignore_mismatch)
    assert cuda.devices == [0]  # the builder targets the default device
    # The parser prefers our plugins to the ops' ONNX functions exactly when the library is loaded.
    override = {FakeTensorRT.OnnxParserFlag.ENABLE_PLUGIN_OVERRIDE} if _native.plugin_library_path() else set()
    assert [p.flags for p in trt.parsers] == [override] * 3


def test_build_starts_an_empty_timing_cache_when_the_saved_one_does_not_fit(bundle, fakes, tmp_path):
    from vidtrt.tensorrt.build import build_engines

    _, trt, _ = fakes
    (tmp_path / "timing.cache").write_bytes(b"foreign timings")
    log: list[str] = []
    build_engines(bundle, "fp32", timing_cache=tmp_path / "timing.cache", log=log.append)
    assert sum("the timing cache does not fit this GPU / TensorRT; starting an empty one" in line for line in log) == 1
    assert not any(trt.ignore_mismatch)
    assert (tmp_path / "timing.cache").read_bytes() == b"knp"  # replaced by this build's timings


def _tick_clock(module, monkeypatch, step):
    """module.time.perf_counter advances by ``step`` seconds a call."""
    from itertools import count
    from types import SimpleNamespace

    ticks = count()
    monkeypatch.setattr(module, "time", SimpleNamespace(perf_counter=lambda: 1000.0 + step * next(ticks)))


def test_build_progress_bar_counts_engines_and_takes_the_log_lines(bundle, fakes, monkeypatch, capsys):
    """With a progress bar and the default log (print), lines go through the
    bar's write so they stay above it; the bar counts one step per engine."""
    import tqdm as tqdm_module

    from vidtrt.tensorrt.build import build_engines

    bars = _record_progress_bars(monkeypatch, tqdm_module)
    build_engines(bundle, "fp32", progress=True)
    (bar,) = bars
    assert bar.total == 3 and bar.steps == 3 and bar.closed
    assert bar.kwargs["leave"] is True and bar.kwargs["disable"] is None  # kept on screen; off without a terminal
    assert any(line.startswith("building fp32 key from ") for line in bar.lines)
    assert "building fp32" not in capsys.readouterr().out  # not printed past the bar


def _record_progress_bars(monkeypatch, tqdm_module):
    bars = []

    class RecordingBar:
        def __init__(self, total=None, **kwargs):
            self.total, self.steps, self.lines, self.closed = total, 0, [], False
            self.kwargs = kwargs
            bars.append(self)

        def update(self, n):
            self.steps += n

        def write(self, line):
            self.lines.append(line)

        def close(self):
            self.closed = True

    monkeypatch.setattr(tqdm_module, "tqdm", RecordingBar)
    return bars


def test_partial_rebuild_on_the_same_machine_keeps_the_other_stages(bundle, simulated):
    """The previous set is read back from manifest.json (strings that are
    equal, not the same objects): rebuilding one stage on the same machine
    and profile is allowed and keeps the other stages' files and records."""
    from vidtrt.tensorrt.build import build_engines

    _, trt, _ = simulated
    reloaded = load_bundle(bundle.directory)
    before = reloaded.manifest.engines["fp32"]
    trt.built.clear()
    entry = build_engines(reloaded, "fp32", stages=["nonkey"], log=lambda _: None)
    assert trt.built == ["nonkey"]
    assert entry["files"] == before["files"] and set(entry["stages"]) == {"key", "nonkey", "perframe"}
    assert entry["stages"]["key"] == before["stages"]["key"]


@pytest.mark.parametrize("gpu,cc", [("NVIDIA L4", "8.9"), ("NVIDIA L4", "8.6"), ("Zotac RTX", "9.0"), ("Simulated GPU", "9.0")])
def test_partial_rebuild_elsewhere_is_refused_whichever_way_the_names_sort(bundle, simulated, monkeypatch, gpu, cc):
    """Refused for one stage; a full rebuild replaces the set."""
    from vidtrt.core.bundle import BundleError
    from vidtrt.tensorrt import compat
    from vidtrt.tensorrt.build import build_engines

    _, _, env = simulated
    monkeypatch.setattr(compat, "current_environment", lambda device=0, runtime="tensorrt": Environment(env.tensorrt_version, gpu, cc, None))
    with pytest.raises(BundleError, match="built elsewhere"):
        build_engines(load_bundle(bundle.directory), "fp32", stages=["key"], log=lambda _: None)
    entry = build_engines(load_bundle(bundle.directory), "fp32", log=lambda _: None)
    assert (entry["gpu_name"], entry["compute_capability"]) == (gpu, cc)


def test_build_api_refuses_bad_runtimes_compute_capabilities_and_workspaces(bundle):
    """The API checks its arguments itself, not only through the CLI (flavours tests)."""
    from vidtrt.tensorrt.build import build_engines
    from vidtrt.tensorrt.flavours import UnknownFlavour

    with pytest.raises(ValueError, match="--sm .compute capabilities. is for --runtime tensorrt-rtx"):
        build_engines(bundle, "fp32", runtime="tensorrt", compute_capabilities=["86"], log=lambda _: None)
    for runtime in ("onnxruntime", "vulkan"):  # names either side of "tensorrt-rtx"
        with pytest.raises(UnknownFlavour, match=f"unknown TensorRT runtime '{runtime}'; choose one of tensorrt, tensorrt-rtx"):
            build_engines(bundle, "fp32", runtime=runtime, log=lambda _: None)
    for workspace in (0, -5):
        with pytest.raises(ValueError, match=f"workspace must be a positive number of MB, got {workspace}"):
            build_engines(bundle, "fp32", workspace_mb=workspace, log=lambda _: None)


def test_partial_rebuild_over_a_set_recorded_before_runtimes_were_named(bundle, simulated):
    """Engine sets recorded before TensorRT-RTX existed have no "runtime": they
    are standard TensorRT's, so one stage may be rebuilt over them."""
    from vidtrt.tensorrt.build import build_engines

    manifest_path = bundle.path("manifest.json")
    manifest = json.loads(manifest_path.read_text())
    del manifest["engines"]["fp32"]["runtime"]
    manifest_path.write_text(json.dumps(manifest))
    entry = build_engines(load_bundle(bundle.directory), "fp32", stages=["key"], log=lambda _: None)
    assert entry["runtime"] == "tensorrt" and set(entry["files"]) == {"key", "nonkey", "perframe"}


@pytest.mark.parametrize(
    "version,name,flag,want",
    [
        ("10.8.0.43", "tensorrt", 2, 1 << 2),  # TensorRT 10 must be asked for strong typing
        ("11.1.0", "tensorrt", 2, 0),  # 11: always strongly typed, the flag deprecated
        ("10.8.0.43", "tensorrt", None, 0),  # no such flag: nothing to ask
        ("1.2.0", "tensorrt_rtx", 2, 0),  # TensorRT-RTX: always strongly typed
        ("10.8.0.43", "tensorrt_rtx", 2, 0),
    ],
)
def test_network_flags_ask_for_strong_typing_on_tensorrt_10_only(version, name, flag, want):
    from types import SimpleNamespace

    from vidtrt.tensorrt.build import _network_flags

    flags = SimpleNamespace() if flag is None else SimpleNamespace(STRONGLY_TYPED=flag)
    trt = SimpleNamespace(__version__=version, __name__=name, NetworkDefinitionCreationFlag=flags)
    assert _network_flags(trt) == want


def test_square_max_aspect_is_one_size():
    profile = image_profile(PAPER_PRE, max_aspect=1.0)
    assert profile.min == profile.max == (608, 608)


def test_profile_bounds_by_hand_without_padding():
    """Bounds that are whole numbers are kept exactly (rounding never moves them)."""
    unpadded = {**PAPER_PRE, "pad_to_multiple": 1}
    assert image_profile(unpadded, max_aspect=2.5).min == (400, 400)  # 1000 / 2.5
    assert image_profile({**unpadded, "max_long_side": None}, max_aspect=1.5).max == (900, 900)  # 600 · 1.5
    # No aspect bound: a strip one pixel wide is possible, and 1 stays the floor
    # whatever min_side asks below it.
    assert image_profile(unpadded).min == (1, 1)
    assert image_profile(unpadded, min_side=0).min == (1, 1)
    assert image_profile(PAPER_PRE, min_side=0).min == (16, 16)
    assert image_profile(unpadded, min_side=70).min == (70, 70)
    assert image_profile(unpadded, max_aspect=1000.0).min == (1, 1)  # 1000 / 1000
    assert image_profile(unpadded, max_aspect=5000.0, min_side=0).min == (1, 1)  # 0.2 px: still 1
    # Tuned by default for HD video: a 1280×720 frame scales by 1000 / 1280 to 562.5 → 563 × 1000.
    assert image_profile(unpadded).opt == (563, 1000)


def test_a_profile_above_the_stages_floor_is_taken_as_given(bundle):
    from vidtrt.tensorrt.build import _checked_profile, minimum_image_side

    floor = minimum_image_side(bundle.manifest)
    above = ImageProfile((floor + 16, floor + 32), (256, 256), (512, 512))
    assert _checked_profile(bundle.manifest, above) is above
    at = ImageProfile((floor, floor), (256, 256), (512, 512))
    assert _checked_profile(bundle.manifest, at) is at


def test_engine_paths_by_runtime():
    # Runtime names as they arrive from the command line: equal strings, not the literals.
    tensorrt, rtx = "".join(["tensor", "rt"]), "-".join(["tensorrt", "rtx"])
    assert engine_path("fp16", "key", tensorrt) == "engines/fp16/key.engine"
    assert engine_path("int8", "key", rtx, "86") == "engines/tensorrt-rtx/sm86/int8/key.engine"


@pytest.mark.parametrize(
    "pre,frame",
    [
        # short 600, long ≤ 1000, no padding: 1000 / (976 / 427) is 437.5 in
        # floats, while the preprocessor resizes 427 to int(427 · (1000 / 976)
        # + 0.5) = 437: the profile's minimum must round that bound down.
        ({"pad_to_multiple": 1}, (427, 976)),
        ({"short_side": 800, "max_long_side": 1333, "pad_to_multiple": 1}, (149, 298)),
        # 600 · (111 / 80) = 832.5 and the frame pads to 864: the maximum rounds up.
        ({}, (80, 111)),
        ({}, (240, 397)),
        # No long-side cap: 600 · (247 / 240) is 617.4999… in floats, and the frame resizes to 618.
        ({"max_long_side": None, "pad_to_multiple": 1}, (240, 247)),
    ],
)
def test_a_frame_of_exactly_max_aspect_fits_the_profile(pre, frame):
    """Bounds that land on .5 in float arithmetic go to the safe side (down for
    the minimum, up for the maximum), so the frame that set max_aspect fits."""
    settings = {**PAPER_PRE, "pad_to_multiple": 32, **pre}
    h, w = frame
    profile = image_profile(settings, max_aspect=w / h)
    padded = Preprocessor.from_dict(settings).plan(h, w)[2]
    assert all(profile.min[0] <= d <= profile.max[0] for d in padded), (padded, profile)


# ---------------------------------------------------------------- TensorRT-RTX sets, bookkeeping


@pytest.fixture
def fake_rtx(bundle, monkeypatch):
    """``aot_build`` replaced by a stand-in that returns an "engine" of a known
    size (or fails for chosen (SM, stage) pairs): what ``_build_rtx`` records,
    writes, logs and cleans up, without building anything. The real builds
    are tests/test_tensorrt_rtx_build.py."""
    from types import SimpleNamespace

    from vidtrt.tensorrt import build, flavours

    trt = SimpleNamespace(__version__="1.2.0.fake", Builder=lambda logger: "one builder")
    monkeypatch.setattr(flavours, "require", lambda name, what: None)
    monkeypatch.setattr(flavours, "module", lambda name: trt)
    monkeypatch.setattr(flavours, "capturing_logger", lambda name: SimpleNamespace(trt_logger=None))
    stages = {str(bundle.stage_file(s)): s for s in bundle.stages}
    fake = SimpleNamespace(calls=[], fail=set(), size=3 * 2**20 // 2, trt=trt)

    def aot_build(onnx_path, sm, input_shapes, workspace_mb, what=None, builder=None):
        stage = stages[str(onnx_path)]
        assert builder == "one builder" and what.startswith(f"the fp32 {stage!r} engine for SM{sm}")
        fake.calls.append((sm, stage))
        if (sm, stage) in fake.fail:
            raise build.EngineBuildError(f"TensorRT-RTX failed to build {what}")
        return f"{sm}:{stage}:".encode() + b"x" * fake.size

    monkeypatch.setattr(build, "aot_build", aot_build)
    yield fake
    bundle.manifest.engines.clear()
    bundle.save()


def test_rtx_sets_record_sizes_times_and_log_lines(bundle, fake_rtx, monkeypatch):
    import tqdm as tqdm_module

    from vidtrt.tensorrt import build
    from vidtrt.tensorrt.build import build_engines

    bars = _record_progress_bars(monkeypatch, tqdm_module)
    _tick_clock(build, monkeypatch, 1.2344)
    log: list[str] = []
    # The runtime's name as the CLI passes it: a string made at run time, not the literal.
    runtime = "-".join(["tensorrt", "rtx"])
    entries = build_engines(bundle, "fp32", runtime=runtime, compute_capabilities=["86", "89"], log=log.append, progress=True)
    assert list(entries) == ["tensorrt-rtx/sm86/fp32", "tensorrt-rtx/sm89/fp32"]
    assert fake_rtx.calls == [(sm, s) for sm in ("86", "89") for s in ("key", "nonkey", "perframe")]
    for key, entry in entries.items():
        sm = key.split("/")[1][2:]
        for stage, file in entry["files"].items():
            assert file == engine_path("fp32", stage, "tensorrt-rtx", sm)
            data = bundle.path(file).read_bytes()
            assert data.startswith(f"{sm}:{stage}:".encode()) and entry["stages"][stage]["bytes"] == len(data)
            assert entry["stages"][stage]["build_seconds"] == 1.234  # to the millisecond
            assert f"  SM{sm} fp32 {stage}: 1.5 MB in 1.2 s" in log, log
    (bar,) = bars
    assert bar.total == 6 and bar.steps == 6 and bar.closed  # two targets × three stages
    assert not list(bundle.path("engines").rglob(".*partial"))
    # A second build writes over the first; the literal name counts targets the same.
    build_engines(bundle, "fp32", runtime="tensorrt-rtx", compute_capabilities=["86", "89"], log=lambda _: None, progress=True)
    assert bars[1].total == 6 and bars[1].steps == 6


def test_rtx_partial_rebuild_keeps_the_other_stages(bundle, fake_rtx):
    from vidtrt.core.bundle import BundleError
    from vidtrt.tensorrt.build import build_engines

    first = build_engines(bundle, "fp32", runtime="tensorrt-rtx", compute_capabilities=["86"], log=lambda _: None)
    before = first["tensorrt-rtx/sm86/fp32"]
    fake_rtx.calls.clear()
    again = build_engines(load_bundle(bundle.directory), "fp32", runtime="tensorrt-rtx", compute_capabilities=["86"], stages=["key"], log=lambda _: None)
    entry = again["tensorrt-rtx/sm86/fp32"]
    assert fake_rtx.calls == [("86", "key")]
    assert entry["files"] == before["files"] and entry["stages"]["nonkey"] == before["stages"]["nonkey"]
    # Another TensorRT-RTX: one stage is refused, the whole set is rebuilt.
    fake_rtx.trt.__version__ = "1.3.0.fake"
    with pytest.raises(BundleError, match="built with another TensorRT-RTX or profile"):
        build_engines(load_bundle(bundle.directory), "fp32", runtime="tensorrt-rtx", compute_capabilities=["86"], stages=["key"], log=lambda _: None)
    again = build_engines(load_bundle(bundle.directory), "fp32", runtime="tensorrt-rtx", compute_capabilities=["86"], log=lambda _: None)
    assert again["tensorrt-rtx/sm86/fp32"]["tensorrt_version"] == "1.3.0.fake"


def test_rtx_failure_keeps_finished_targets_and_leaves_no_partial_engine(bundle, fake_rtx):
    """SM86 finished before SM89's second stage failed: SM86's set is recorded,
    SM89 keeps its previous set, and no temporary engine is left behind."""
    from vidtrt.tensorrt.build import EngineBuildError, build_engines

    build_engines(bundle, "fp32", runtime="tensorrt-rtx", compute_capabilities=["89"], log=lambda _: None)
    previous = load_bundle(bundle.directory).manifest.engines["tensorrt-rtx/sm89/fp32"]
    fake_rtx.fail = {("89", "nonkey")}
    with pytest.raises(EngineBuildError, match="'nonkey' engine for SM89"):
        build_engines(bundle, "fp32", runtime="tensorrt-rtx", compute_capabilities=["86", "89"], log=lambda _: None)
    engines = load_bundle(bundle.directory).manifest.engines
    assert set(engines["tensorrt-rtx/sm86/fp32"]["files"]) == {"key", "nonkey", "perframe"}
    assert engines["tensorrt-rtx/sm89/fp32"] == previous
    assert not list(bundle.path("engines").rglob(".*partial"))


def test_simulated_backend_checks_inputs(bundle, simulated):
    backend = create_backend("tensorrt", bundle)
    with pytest.raises(ValueError, match="outside the engine's profile"):
        backend.run("perframe", {"image": np.zeros((1, 3, 512, 64), np.float32)})
    with pytest.raises(ValueError, match="must be float32, got int64"):
        backend.run("perframe", {"image": np.zeros((1, 3, 64, 64), np.int64)})
    with pytest.raises(ValueError, match="must be float32, got a float16 device array"):
        backend.run("perframe", {"image": backend.from_numpy(np.zeros((1, 3, 64, 64), np.float16))})
    with pytest.raises(ValueError, match="must have shape \\(1,\\)"):
        backend.run("key", {"image": np.zeros((1, 3, 64, 64), np.float32), "temporal_in": np.zeros((1, 64, 4, 4), np.float32),
                            "temporal_key_in": np.zeros((1, 16, 4, 4), np.float32), "has_state": np.zeros(2, np.float32)})
    with pytest.raises(ValueError, match="needs inputs"):
        backend.run("perframe", {})
    out = backend.run("perframe", {"image": np.zeros((1, 3, 64, 64), np.float64)})  # float64 numpy is cast on the host
    assert backend.to_numpy(out["boxes"]).shape == (20, 4)
    backend.close()
    with pytest.raises(RuntimeError, match="closed"):
        backend.run("perframe", {"image": np.zeros((1, 3, 64, 64), np.float32)})


def test_simulated_backend_refuses_foreign_engines_before_loading(bundle, simulated, monkeypatch):
    from vidtrt.runtime.backends import tensorrt_backend

    _, trt, env = simulated
    other = Environment(env.tensorrt_version, "NVIDIA L4", "8.9", None)
    monkeypatch.setattr(tensorrt_backend, "_environment", lambda device, runtime="tensorrt": other)
    with pytest.raises(EngineMismatchError) as err:
        create_backend("tensorrt", bundle)
    assert "GPU: built on 'Simulated GPU', this machine has 'NVIDIA L4'" in str(err.value)
    assert f"vidtrt build {bundle.directory} --precision fp32" in str(err.value)
    assert trt.deserialized == 0
    from vidtrt.core.bundle import BundleError

    with pytest.raises(BundleError, match="no fp16 TensorRT engines .built: fp32.; build them with `vidtrt build"):
        create_backend("tensorrt", bundle, precision="fp16")


def test_bundle_with_engines_still_loads_and_hashes_them(bundle, simulated):
    loaded = load_bundle(bundle.directory)
    assert loaded.manifest.engines["fp32"]["files"]["key"] == "engines/fp32/key.engine"
    assert "engines/fp32/key.engine" in loaded.manifest.files
    path = Path(bundle.path("engines/fp32/key.engine"))
    original = path.read_bytes()
    path.write_bytes(original + b" ")
    try:
        with pytest.raises(ValueError, match="key.engine was modified"):
            load_bundle(bundle.directory)
    finally:
        path.write_bytes(original)


# ====================================================================== real TensorRT (GPU machines)


def _need_real_tensorrt():
    ok, reason = vtrt.tensorrt_available()
    if not ok:
        pytest.skip(f"tensorrt is not importable: {reason}")
    ok, reason = vtrt.cuda_available()
    if not ok:
        pytest.skip(f"no CUDA GPU: {reason}")


# Tolerances of TensorRT against ONNX Runtime running the same precision's graph
# (the check is about TensorRT executing the graph, not about FP16/INT8 error):
# per frame, a one-to-one match of detections (same label) within these.
REAL_TRT_TOLERANCE = {"fp32": (1e-3, 0.5), "fp16": (2e-2, 2.0), "int8": (5e-2, 4.0)}  # (score, box px)
REAL_TRT_MIN_MATCHED = {"fp32": 1.0, "fp16": 0.95, "int8": 0.9}  # matched frames / frames


@pytest.fixture(scope="module")
def real_bundles(tmp_path_factory):
    """Every method's small config with fp32, fp16 and int8 graphs (GPU machines only)."""
    _need_real_tensorrt()
    from vidtrt.calibration.calibrate import calibrate_bundle
    from vidtrt.export.precision import write_fp16_variants
    from vidtrt.methods import all_methods
    from vidtrt.runtime.synthetic import moving_shapes_clip, write_clip

    root = tmp_path_factory.mktemp("real_trt")
    clip = write_clip(moving_shapes_clip(num_frames=12, height=120, width=160), root / "clip.mp4")
    out = {}
    for method in all_methods():
        b = export_bundle(method.name, root / method.name, config_name=method.small_config, log=lambda _: None)
        write_fp16_variants(b, log=lambda _: None)
        calibrate_bundle(b, [clip], max_samples=8, progress=False, log=lambda _: None)
        out[method.name] = load_bundle(b.directory)
    return out


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("method_name", ["psla", "mfsa", "troi", "impression", "mega"])
def test_real_engines_build_and_match_onnxruntime(real_bundles, method_name, precision, tmp_path):
    """Boxes, labels, scores and validity of the whole pipeline on TensorRT
    engines against ONNX Runtime on the same graphs, for every method and
    precision, with and without CUDA graphs."""
    from vidtrt.core.compare import compare_detections
    from vidtrt.methods import get_method
    from vidtrt.tensorrt.build import build_engines

    bundle = real_bundles[method_name]
    entry = build_engines(bundle, precision, timing_cache=tmp_path / "cache.bin", workspace_mb=1024, log=lambda _: None)
    assert set(entry["files"]) == set(bundle.stages) and (tmp_path / "cache.bin").exists()
    reloaded = load_bundle(bundle.directory)
    images = [im.numpy() for im in (sample_image(get_method(method_name).configs[reloaded.manifest.config_name], seed=i) for i in range(9))]

    def run(backend):
        stream = create_pipeline(backend).stream()
        results = [r for i, image in enumerate(images) for r in stream.push(i, image)]
        return results + stream.flush()

    want = run(create_backend("onnxruntime", reloaded, precision=precision))
    score_tol, box_tol = REAL_TRT_TOLERANCE[precision]
    capacity = get_method(method_name).configs[reloaded.manifest.config_name].detection.max_detections
    for cuda_graphs in (False, True):
        with create_backend("tensorrt", reloaded, precision=precision, cuda_graphs=cuda_graphs) as backend:
            got = run(backend)
            assert [(r.index, r.stage) for r in got] == [(r.index, r.stage) for r in want]
            matched = 0
            for w, g in zip(want, got):
                cmp = compare_detections(
                    [w.detections[k] for k in DETECTIONS], [g.detections[k] for k in DETECTIONS], capacity=capacity, nms_iou=0.5
                )
                matched += cmp.ok and cmp.max_score_error <= score_tol and cmp.max_box_error <= box_tol
            assert matched >= REAL_TRT_MIN_MATCHED[precision] * len(want), (method_name, precision, cuda_graphs, matched)
            assert all(t > 0 for times in backend.timings.values() for t in times)
