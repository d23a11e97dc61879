"""Precision variants (FP16 graphs, INT8 QDQ calibrated on recorded stage
inputs), calibration capture, mAP, and `vidtrt bench` — all on ONNX Runtime."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from vidtrt.bench import bench_bundle, format_report
from vidtrt.calibration.calibrate import calibrate_bundle, record_stage_inputs
from vidtrt.calibration.capture import RecordingBackend
from vidtrt.eval.map import mean_average_precision, per_class_ap
from vidtrt.core.bundle import load_bundle
from vidtrt.export.exporter import export_bundle
from vidtrt.export.precision import convert_fp16, load_calibration, write_fp16_variants
from vidtrt.runtime.backends import create_backend
from vidtrt.runtime.runner import run_video
from vidtrt.runtime.synthetic import moving_shapes_clip, write_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(moving_shapes_clip(num_frames=12, height=120, width=160), tmp_path_factory.mktemp("clip") / "clip.mp4")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, clip):
    b = export_bundle("psla", tmp_path_factory.mktemp("b") / "psla", config_name="psla_small", log=lambda _: None)
    write_fp16_variants(b, log=lambda _: None)
    calibrate_bundle(b, [clip], max_samples=8, progress=False, log=lambda _: None)
    return load_bundle(b.directory)


def float_types(model, names):
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    return [types.get(n) for n in names]


# ---------------------------------------------------------------- FP16


def test_fp16_on_a_small_graph():
    """Conv+Relu on a feature map go FP16; the rank-2 logits and Softmax stay FP32; I/O stay FP32."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Reshape", ["r", "shape"], ["flat"]),
        helper.make_node("Softmax", ["flat"], ["y"], axis=1),
    ]
    shape = numpy_helper.from_array(np.array([1, -1], dtype=np.int64), "shape")
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 100])], [w, shape],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    half, report = convert_fp16(model)
    assert report["fp16_op_types"] == {"Conv": 1, "Relu": 1}
    by_output = {n.output[0]: n for n in half.graph.node}
    assert float_types(half, ["w__fp16"]) == [TensorProto.FLOAT16]
    assert by_output["flat"].input[0] == "r__to_fp32"  # back to FP32 before the rank-2 part
    assert [i.type.tensor_type.elem_type for i in half.graph.input] == [TensorProto.FLOAT]
    x = np.random.default_rng(1).standard_normal((1, 3, 5, 5)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=2e-3)


def test_fp16_stage_graphs_keep_the_documented_ops_in_fp32(bundle):
    model = onnx.load(str(bundle.stage_file("key", "fp16")))
    report = bundle.manifest.variants["fp16"]["conversion"]["key"]
    assert report["fp16_op_types"]["Conv"] >= 20 and "PSLA" in report["fp16_op_types"]
    for op in ("Softmax", "TopK", "FixedSizeNMS", "PSRoIAlign", "Exp"):
        assert op not in report["fp16_op_types"], op
    assert all(i.type.tensor_type.elem_type != TensorProto.FLOAT16 for i in model.graph.input)
    assert all(o.type.tensor_type.elem_type != TensorProto.FLOAT16 for o in model.graph.output)
    psla_node = next(n for n in model.graph.node if n.op_type == "PSLA")
    assert float_types(model, psla_node.input) == [TensorProto.FLOAT16] * 3


def test_fp16_fidelity_on_the_carried_state(bundle):
    recorder = RecordingBackend(create_backend("onnxruntime", bundle))
    run_video(bundle, moving_shapes_clip(num_frames=11, height=120, width=160), backend=recorder, outputs=(), progress=False)
    feed = recorder.records["key"][-1]
    outs = {}
    for precision in ("fp32", "fp16"):
        session = ort.InferenceSession(str(bundle.stage_file("key", precision)), providers=["CPUExecutionProvider"])
        outs[precision] = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
    a, b = outs["fp32"]["temporal_out"].ravel(), outs["fp16"]["temporal_out"].ravel()
    assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.9999
    assert np.abs(a - b).max() < 2e-2 * np.abs(a).max()


# ---------------------------------------------------------------- calibration


def test_calibration_records_what_each_stage_really_receives(bundle, clip):
    recorder = RecordingBackend(create_backend("onnxruntime", bundle))
    recorder.keep_outputs = True
    run_video(bundle, clip, backend=recorder, outputs=(), progress=False)
    # 12 frames, interval 10, key in the middle: frame 5, then frame 11 (1 // 2 of the 2-frame tail... index 10 + 1)
    assert recorder.calls == {"key": 2, "nonkey": 10}
    keys = recorder.records["key"]
    assert [float(k["has_state"][0]) for k in keys] == [0.0, 1.0]
    first_out = recorder.outputs["key"][0]
    np.testing.assert_array_equal(keys[1]["temporal_in"], first_out["temporal_out"])  # propagated, not fresh
    np.testing.assert_array_equal(keys[1]["temporal_key_in"], first_out["temporal_key_out"])
    for feed in recorder.records["nonkey"][:5]:  # frames 0-4 and 6-9 read the first key frame's state
        np.testing.assert_array_equal(feed["temporal_in"], first_out["temporal_out"])

    records, calls = record_stage_inputs(bundle, [clip], max_samples=4, progress=False, log=lambda _: None)
    assert calls == {"key": 2, "nonkey": 10}
    assert {k: len(v) for k, v in records.items()} == {"key": 2, "nonkey": 4, "perframe": 4}
    assert set(records["perframe"][0]) == {"image"}


def test_int8_variant(bundle, clip):
    variant = bundle.manifest.variants["int8"]
    assert variant["calibration"]["samples"] == {"key": 2, "nonkey": 8, "perframe": 8}
    assert variant["calibration"]["sources"] == [str(clip)]
    model = onnx.load(str(bundle.stage_file("nonkey", "int8")))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    psla_node = next(n for n in model.graph.node if n.op_type == "PSLA")
    assert all(producers.get(i) != "DequantizeLinear" for i in psla_node.input)  # custom ops stay float
    scales = json.loads((bundle.directory / "int8" / "scales.json").read_text())
    assert scales["nonkey"] and all(s > 0 for s in scales["nonkey"].values())
    saved = load_calibration(bundle.directory / "int8" / "calibration_key.npz")
    assert len(saved) == 2 and set(saved[0]) == {"image", "temporal_in", "temporal_key_in", "has_state"}
    assert set(bundle.manifest.files) >= {"int8/scales.json", "int8/calibration_key.npz", "int8/key.onnx"}


# ---------------------------------------------------------------- bench and mAP


def test_bench_reports_every_variant(bundle, clip):
    report = bench_bundle(bundle, ["fp32", "fp16", "int8"], clip, log=lambda _: None)
    key = report["stages"]["key"]
    assert key["fp32"]["max_abs_error"] == 0 and key["fp32"]["map50_vs_fp32"] == 1.0
    assert key["fp16"]["cosine"] > 0.9999 and key["int8"]["cosine"] > 0.98
    assert report["end_to_end"]["fp32"]["map50_vs_fp32"] == 1.0
    assert 0.0 <= report["end_to_end"]["int8"]["map50_vs_fp32"] <= 1.0
    for stage in ("key", "nonkey", "perframe"):
        for precision in ("fp32", "fp16", "int8"):
            assert report["stages"][stage][precision]["timing_ms"]["p50"] > 0
    text = format_report(report)
    assert "end to end" in text and "int8" in text


def test_bench_without_a_variant_says_how_to_make_it(tmp_path, bundle):
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(bundle.directory, copy)
    b = load_bundle(copy)
    del b.manifest.variants["int8"]
    b.save()
    with pytest.raises(ValueError, match="vidtrt calibrate"):
        bench_bundle(load_bundle(copy), ["fp32", "int8"], "unused.mp4")


def box(x):
    return [x, x, x + 10, x + 10]


def test_map_by_hand():
    truth = [(np.array([box(0), box(50)], np.float32), np.array([1, 1]))]
    perfect = [(truth[0][0], np.array([0.9, 0.8]), np.array([1, 1]))]
    assert mean_average_precision(perfect, truth) == 1.0
    half = [(np.array([box(0)], np.float32), np.array([0.9]), np.array([1]))]
    assert mean_average_precision(half, truth) == 0.5  # recall 0.5 at precision 1
    # A false positive ranked first: precision 1/2 at recall 1/2, 2/3 at recall 1 → AP = (2/3)·1
    with_fp = [(np.array([box(100), box(0), box(50)], np.float32), np.array([0.99, 0.9, 0.8]), np.array([1, 1, 1]))]
    assert mean_average_precision(with_fp, truth) == pytest.approx(2 / 3)
    wrong_class = [(truth[0][0], np.array([0.9, 0.8]), np.array([2, 2]))]
    assert per_class_ap(wrong_class, truth) == {1: 0.0}
    # identical zero-area boxes (clipped at a border) still match each other
    flat = [(np.array([[0, 0, 0, 10]], np.float32), np.array([1]))]
    assert mean_average_precision([(flat[0][0], np.array([0.5]), np.array([1]))], flat) == 1.0
