"""vidtrt's custom ops inside ONNX Runtime on their fused host kernels
(libvidtrt_ort_ops.so, vidtrt/runtime/backends/onnxruntime_fused_ops.py).

Per-op parity on every edge case runs in each op's test class (the
"onnx-fused" layer of tests/op_tester.py) and per-method pipeline parity in
tests/test_method_conformance.py. Here: the library against the op registry,
the unchanged file on disk, bit-identity with the native kernel, each method's
stages fused vs decomposed, and how a mode is chosen.
"""

from __future__ import annotations

import ctypes

import numpy as np
import onnx
import pytest
import torch

from vidtrt.core.bundle import DETECTION_OUTPUTS
from vidtrt.core.compare import compare_detections
from vidtrt.export.exporter import export_bundle
from vidtrt.methods import get_method, method_names
from vidtrt.ops import registry
from vidtrt.calibration.capture import RecordingBackend, fill_unscheduled
from vidtrt.methods.common import sample_image
from vidtrt.runtime.backends import create_backend
from vidtrt.runtime.pipelines import create_pipeline
from vidtrt.runtime.backends import onnxruntime_fused_ops as fused_ops
from vidtrt.selfcheck import _OpModule

needs_library = pytest.mark.skipif(
    not fused_ops.available(), reason="no libvidtrt_ort_ops.so in this build (ONNX Runtime API headers: ONNXRUNTIME_ROOT)"
)


@needs_library
def test_library_registers_every_registered_op():
    lib = ctypes.CDLL(str(fused_ops.library_path()))
    lib.vidtrtOrtOpsInfo.restype = ctypes.c_char_p
    info = dict(part.split("=", 1) for part in lib.vidtrtOrtOpsInfo().decode().split(";"))
    assert info["domain"] == registry.DOMAIN
    assert sorted(info["ops"].split(",")) == sorted(registry.registered_ops())


@needs_library
@pytest.mark.parametrize("op_type", sorted(registry.registered_ops()))
def test_fused_session_is_the_native_kernel_bit_for_bit(op_type, tmp_path):
    """The graph file is the exported one, untouched (it still holds the local
    function); the fused session's output equals impl="native" exactly, in
    every storage type, while the decomposition only agrees within rounding."""
    op = registry.registered_ops()[op_type]
    for dtype in op.storage_types:
        tensors, attrs = op.example(dtype)
        path = tmp_path / f"{op_type}_{dtype}.onnx"
        from vidtrt.export.onnx import export_module

        export_module(_OpModule(op, attrs), tensors, path, op.input_names, op.output_names)
        before = path.read_bytes()
        assert any(f.name == op_type for f in onnx.load(str(path)).functions)
        feeds = {name: t.numpy() for name, t in zip(op.input_names, tensors)}
        fused = fused_ops.create_session(path, custom_ops="fused")
        assert fused.vidtrt_custom_ops == "fused"
        got = fused.run(None, feeds)[0]
        native = op.function(*tensors, **attrs, impl="native").contiguous().numpy()
        assert got.dtype == native.dtype and got.shape == native.shape
        np.testing.assert_array_equal(got, native)
        decomposed = fused_ops.create_session(path, custom_ops="decomposed").run(None, feeds)[0]
        reference = op.function(*tensors, **attrs, impl="reference").numpy()
        tol = 1e-4 if dtype == torch.float32 else 4e-3
        np.testing.assert_allclose(decomposed.astype(np.float64), reference.astype(np.float64), atol=tol, rtol=0)
        np.testing.assert_allclose(got.astype(np.float64), reference.astype(np.float64), atol=tol, rtol=0)
        assert path.read_bytes() == before


@needs_library
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_psla_copies_on_tile_edges_and_reused_scratch(dtype, tmp_path):
    """PSLA's channels-last copies in and out of ONNX Runtime's NCHW tensors
    (32x32 AVX2 tiles for FP32, 16x16 otherwise, partial tiles element by
    element) and its scratch kept per thread between calls: shapes with whole
    and partial tiles in both directions, called largest first so the later
    calls reuse larger buffers, each equal to the native kernel exactly."""
    from vidtrt.export.onnx import export_module

    op = registry.registered_ops()["PSLA"]
    generator = torch.Generator().manual_seed(0)
    for channels, value_channels, height, width in [(64, 96, 9, 11), (40, 33, 8, 4), (32, 64, 4, 8), (3, 5, 2, 3)]:
        query, key = (torch.randn(1, channels, height, width, generator=generator).to(dtype) for _ in range(2))
        value = torch.randn(1, value_channels, height, width, generator=generator).to(dtype)
        path = tmp_path / f"psla_{channels}_{value_channels}_{height}x{width}.onnx"
        export_module(_OpModule(op, {"max_disp": 2}), (query, key, value), path, op.input_names, op.output_names)
        session = fused_ops.create_session(path, custom_ops="fused")
        feeds = {"query": query.numpy(), "key": key.numpy(), "value": value.numpy()}
        native = op.function(query, key, value, max_disp=2, impl="native").contiguous().numpy()
        for _ in range(2):
            np.testing.assert_array_equal(session.run(None, feeds)[0], native)


_bundles: dict = {}


def _bundle(method_name, tmp_path_factory):
    if method_name not in _bundles:
        method = get_method(method_name)
        _bundles[method_name] = export_bundle(
            method.name, tmp_path_factory.mktemp(f"fused_{method_name}") / "bundle", config_name=method.small_config,
            log=lambda _: None,
        )  # fmt: skip
    return _bundles[method_name]


@needs_library
@pytest.mark.slow
@pytest.mark.parametrize("method_name", method_names())
def test_every_stage_fused_equals_decomposed(method_name, tmp_path_factory):
    """Each stage of each method's small bundle on the same recorded inputs:
    the fused session's outputs match the decomposition's (and the bundle's
    graphs really hold custom ops for every method but the ones without)."""
    bundle = _bundle(method_name, tmp_path_factory)
    fused = create_backend("onnxruntime", bundle, custom_ops="fused", providers=["CPUExecutionProvider"])
    decomposed = create_backend("onnxruntime", bundle, custom_ops="decomposed", providers=["CPUExecutionProvider"])
    assert fused.custom_ops == "fused" and decomposed.custom_ops == "decomposed"
    # What each stage really receives: the pipeline run on a short clip
    # (stages the schedule never calls get samples from the scheduled ones).
    recorder = RecordingBackend(decomposed)
    method = get_method(method_name)
    _, detector = method.load_detector(checkpoint=bundle.path(bundle.manifest.checkpoint))
    stream = create_pipeline(recorder).stream()
    for i in range(5):
        stream.push(i, sample_image(detector.cfg, seed=300 + i).numpy())
    stream.flush()
    fill_unscheduled(bundle, recorder.records)
    compared = 0
    for name, feeds_list in recorder.records.items():
        for feeds in feeds_list[:2]:
            names = [o.name for o in decomposed.sessions[name].get_outputs()]
            want = dict(zip(names, decomposed.sessions[name].run(None, feeds)))
            got = dict(zip(names, fused.sessions[name].run(None, feeds)))
            if set(DETECTION_OUTPUTS) <= set(names):
                # Detections as sets: rounding may reorder near-equal scores
                # or let NMS keep the other of two near-equal boxes.
                cfg = detector.cfg.detection
                w_all = [want.pop(k) for k in DETECTION_OUTPUTS]
                g_all = [got.pop(k) for k in DETECTION_OUTPUTS]
                batched = w_all[0].ndim == 3
                for i in range(w_all[0].shape[0] if batched else 1):
                    pick = (lambda arrays: [a[i] for a in arrays]) if batched else (lambda arrays: arrays)
                    cmp = compare_detections(pick(w_all), pick(g_all), cfg.max_detections, cfg.nms_iou)
                    assert cmp.ok and cmp.max_score_error < 1e-3, (name, i, cmp)
            for out_name, w in want.items():
                g = got[out_name]
                assert w.shape == g.shape, (name, out_name)
                if np.issubdtype(w.dtype, np.floating):
                    scale = max(1.0, float(np.abs(w).max())) if w.size else 1.0
                    np.testing.assert_allclose(g, w, atol=1e-3 * scale, rtol=0, err_msg=f"{name}.{out_name}")
                else:
                    np.testing.assert_array_equal(g, w, err_msg=f"{name}.{out_name}")
            compared += 1
    assert set(recorder.records) == set(bundle.stages) and compared >= len(bundle.stages)


def test_auto_is_decomposed_behind_the_cuda_provider(monkeypatch):
    monkeypatch.delenv(fused_ops.MODE_ENV, raising=False)
    assert fused_ops.resolve_mode("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == "decomposed"
    expected = "fused" if fused_ops.available() else "decomposed"
    assert fused_ops.resolve_mode(None, ["CPUExecutionProvider"]) == expected
    assert fused_ops.resolve_mode("decomposed", ["CPUExecutionProvider"]) == "decomposed"


def test_mode_from_the_environment_and_bad_modes(monkeypatch):
    monkeypatch.setenv(fused_ops.MODE_ENV, "decomposed")
    assert fused_ops.resolve_mode(None, ["CPUExecutionProvider"]) == "decomposed"
    monkeypatch.setenv(fused_ops.MODE_ENV, "quick")
    with pytest.raises(ValueError, match="auto, fused, decomposed"):
        fused_ops.resolve_mode(None, ["CPUExecutionProvider"])


def test_fused_without_the_library_says_how_to_build_it(monkeypatch):
    monkeypatch.setattr(fused_ops, "library_path", lambda: None)
    with pytest.raises(fused_ops.FusedOpsUnavailable, match="ONNXRUNTIME_ROOT"):
        fused_ops.resolve_mode("fused", ["CPUExecutionProvider"])
    assert fused_ops.resolve_mode("auto", ["CPUExecutionProvider"]) == "decomposed"


def test_cli_flag_sets_the_mode_for_the_process(monkeypatch, tmp_path):
    """--ort-custom-ops goes through the environment variable every session reads."""
    from vidtrt import cli

    monkeypatch.setenv(fused_ops.MODE_ENV, "auto")  # restored (removed) after the test
    seen = {}
    monkeypatch.setattr(cli, "_run", lambda args: seen.setdefault("mode", fused_ops.resolve_mode(None, [])) and 0)
    cli.main(["run", "bundle", "video.mp4", "--ort-custom-ops", "decomposed"])
    assert seen["mode"] == "decomposed"
    import os

    assert os.environ[fused_ops.MODE_ENV] == "decomposed"
