"""TensorRT flavours: TensorRT-RTX engine records and their selection, the
image profile's floor, compute-capability parsing, the precision rules that
make graphs build for Turing, and INT64 outputs as TensorRT-RTX types them.
The full build of every stage is tests/test_tensorrt_rtx_build.py."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from vidtrt import cli
from vidtrt.core.bundle import load_bundle
from vidtrt.export.exporter import export_bundle
from vidtrt.export.precision import convert_fp16, half_function_gemms, write_fp16_variants
from vidtrt.tensorrt.build import MIN_FEATURE_SIDE, ImageProfile, _checked_profile, engine_path, image_profile, minimum_image_side
from vidtrt.tensorrt.compat import (
    EngineMismatchError,
    EngineRecord,
    Environment,
    engine_set_key,
    make_aot_record,
    select_engine_set,
)
from vidtrt.tensorrt.flavours import available, dotted, parse_compute_capabilities

RTX_OK, RTX_WHY = available("tensorrt-rtx")
needs_rtx = pytest.mark.skipif(not RTX_OK, reason=f"tensorrt-rtx is not usable here: {RTX_WHY}")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    b = export_bundle("psla", tmp_path_factory.mktemp("flav") / "psla_small", config_name="psla_small", log=lambda _: None)
    write_fp16_variants(b, log=lambda _: None)
    return load_bundle(b.directory)


# ---------------------------------------------------------------- compute capabilities


def test_compute_capabilities_parse_and_validate():
    assert parse_compute_capabilities("75,86,89") == ["75", "86", "89"]
    assert parse_compute_capabilities(" sm86, 8.9 ,86,SM_120") == ["86", "89", "120"]
    assert [dotted(sm) for sm in ("75", "86", "120")] == ["7.5", "8.6", "12.0"]
    with pytest.raises(ValueError, match="cannot target compute capability '70'"):
        parse_compute_capabilities("70")
    with pytest.raises(ValueError, match="at least one"):
        parse_compute_capabilities(" , ")


# ---------------------------------------------------------------- records and selection


def _rtx_engines(*sms, version="1.7.1.116", precision="fp16"):
    return {
        engine_set_key("tensorrt-rtx", precision, sm): {
            "files": {"key": engine_path(precision, "key", "tensorrt-rtx", sm)},
            **make_aot_record("tensorrt-rtx", version, sm, precision, built_at="2026-12-01T00:00:00+00:00").to_dict(),
        }
        for sm in sms
    }


def _gpu(cc, version="1.7.1.116", name="NVIDIA GeForce RTX 4090"):
    return Environment(version, name, cc, None, runtime="tensorrt-rtx")


def test_rtx_keys_paths_and_records():
    assert engine_set_key("tensorrt", "fp16") == "fp16"  # standard TensorRT keeps its pre-RTX layout
    assert engine_set_key("tensorrt-rtx", "int8", "75") == "tensorrt-rtx/sm75/int8"
    assert engine_path("fp16", "key", "tensorrt-rtx", "89") == "engines/tensorrt-rtx/sm89/fp16/key.engine"
    record = make_aot_record("tensorrt-rtx", "1.7.1.116", "86", "fp16")
    assert (record.runtime, record.compute_capability, record.gpu_name, record.plugin_library_sha256) == (
        "tensorrt-rtx", "8.6", None, None,
    )  # fmt: skip
    assert EngineRecord.from_entry(record.to_dict()) == record
    # An entry from before TensorRT-RTX support has no runtime: standard TensorRT.
    old = {k: v for k, v in record.to_dict().items() if k != "runtime"}
    assert EngineRecord.from_entry(old).runtime == "tensorrt"


def test_rtx_set_is_chosen_by_the_gpus_compute_capability():
    engines = _rtx_engines("75", "86", "89")
    for cc in ("7.5", "8.6", "8.9"):
        entry = select_engine_set(engines, "tensorrt-rtx", "fp16", _gpu(cc))
        assert entry["compute_capability"] == cc
    # Any GPU of that capability: the record names none.
    assert select_engine_set(engines, "tensorrt-rtx", "fp16", _gpu("8.6", name="NVIDIA RTX A6000"))


def test_rtx_engine_for_another_sm_is_refused_with_the_build_command():
    engines = _rtx_engines("86", "89")
    with pytest.raises(EngineMismatchError) as err:
        select_engine_set(engines, "tensorrt-rtx", "fp16", _gpu("7.5"), bundle="bundles/psla")
    text = str(err.value)
    assert "compute capability 7.5 (built for: 8.6, 8.9)" in text
    assert "`vidtrt build bundles/psla --runtime tensorrt-rtx --sm 75 --precision fp16`" in text
    with pytest.raises(EngineMismatchError, match="no int8 tensorrt-rtx engines"):
        select_engine_set(engines, "tensorrt-rtx", "int8", _gpu("8.6"))


def test_rtx_engine_of_another_version_is_refused():
    engines = _rtx_engines("86", version="1.6.0.1")
    with pytest.raises(EngineMismatchError) as err:
        select_engine_set(engines, "tensorrt-rtx", "fp16", _gpu("8.6", version="1.7.1.116"), bundle="b")
    text = str(err.value)
    assert "TensorRT-RTX version: built with 1.6.0.1, this installation has 1.7.1.116" in text
    assert "--runtime tensorrt-rtx --sm 86 --precision fp16" in text


def test_rtx_selection_without_a_gpu_names_the_sets():
    env = Environment("1.7.1.116", None, None, None, notes=("no CUDA GPU",), runtime="tensorrt-rtx")
    with pytest.raises(EngineMismatchError, match=r"compute capabilities: 8\.6, 8\.9\): no CUDA GPU"):
        select_engine_set(_rtx_engines("86", "89"), "tensorrt-rtx", "fp16", env)


def test_standard_tensorrt_never_takes_an_rtx_set():
    engines = {"fp16": _rtx_engines("86")["tensorrt-rtx/sm86/fp16"]}  # mislabelled on purpose
    env = Environment("11.1.0", "NVIDIA GeForce RTX 3090", "8.6", None)
    with pytest.raises(EngineMismatchError, match="built with tensorrt-rtx, not tensorrt"):
        select_engine_set(engines, "tensorrt", "fp16", env)


# ---------------------------------------------------------------- profile floor


def test_profile_minimum_makes_every_stage_valid(bundle):
    stride = bundle.manifest.feature_stride
    smallest = minimum_image_side(bundle.manifest)
    assert smallest >= MIN_FEATURE_SIDE * stride and smallest % 16 == 0
    assert _checked_profile(bundle.manifest, None).min == (smallest, smallest)
    with pytest.raises(ValueError, match=f"below {smallest} px"):
        _checked_profile(bundle.manifest, ImageProfile((16, 16), (64, 64), (128, 128)))
    # Without the floor the preprocessing alone allows a 1-pixel-wide strip.
    assert image_profile(bundle.manifest.preprocess).min == (16, 16)


def test_build_refuses_sm_for_standard_tensorrt_and_missing_sm_for_rtx(bundle, capsys):
    assert cli.main(["build", str(bundle.directory), "--runtime", "tensorrt", "--sm", "86"]) == 1
    assert "--sm is for --runtime tensorrt-rtx" in capsys.readouterr().err
    assert cli.main(["build", str(bundle.directory), "--runtime", "tensorrt-rtx"]) == 1
    assert "give --sm" in capsys.readouterr().err
    assert cli.main(["build", str(bundle.directory), "--runtime", "tensorrt-rtx", "--sm", "86", "--stages", "nope"]) == 1
    assert "has no stage nope" in capsys.readouterr().err


# ---------------------------------------------------------------- precision rules for Turing


def _fc_graph():
    """image features [1, 8, 4, 4] → Conv → Flatten → Gemm (rank 2) → Softmax."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 8, 1, 1)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.standard_normal((3, 64)).astype(np.float32), "fc")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Flatten", ["c"], ["f"]),
        helper.make_node("Gemm", ["f", "fc"], ["logits"], transB=1, name="logits"),
        helper.make_node("Softmax", ["logits"], ["p"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "fc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, 3])], [w, fc],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _gemm_input_types(model):
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(inferred.graph.value_info) + list(inferred.graph.input)}
    types.update({i.name: i.data_type for i in inferred.graph.initializer})
    return [types[n.input[0]] for n in inferred.graph.node if n.op_type in ("MatMul", "Gemm")]


def test_fp16_runs_rank2_gemms_in_fp16_and_softmax_in_fp32():
    import onnxruntime as ort

    model = _fc_graph()
    half, report = convert_fp16(model)
    assert report["fp16_op_types"].get("Gemm") == 1 and report["fp32_op_types"].get("Softmax") == 1
    assert _gemm_input_types(half) == [TensorProto.FLOAT16]
    x = np.random.default_rng(1).standard_normal((1, 8, 4, 4)).astype(np.float32)
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]  # noqa: E731
    np.testing.assert_allclose(run(half), run(model), atol=2e-2)


def test_function_gemms_become_fp16_and_keep_their_output_type():
    """A local function with an FP32 MatMul (as the custom ops' fallbacks
    have) gets FP16 operands and a CastLike back to the caller's type."""
    import onnxruntime as ort

    body = [helper.make_node("MatMul", ["a", "b"], ["y"])]
    function = helper.make_function("vidtrt", "Mm", ["a", "b"], ["y"], body, [helper.make_opsetid("", 17)])
    graph = helper.make_graph(
        [helper.make_node("Mm", ["a", "b"], ["y"], domain="vidtrt")], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4, 4]) for n in ("a", "b")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("vidtrt", 1)], functions=[function])
    assert half_function_gemms(model) == {"Mm": 1}
    ops = [(n.op_type, dict((a.name, a.i) for a in n.attribute)) for n in model.functions[0].node]
    assert ops == [("Cast", {"to": TensorProto.FLOAT16}), ("Cast", {"to": TensorProto.FLOAT16}), ("MatMul", {}), ("CastLike", {})]
    onnx.checker.check_model(model, full_check=True)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 4)).astype(np.float32), rng.standard_normal((4, 4)).astype(np.float32)
    (y,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"a": a, "b": b})
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, a @ b, atol=1e-2)


def _all_gemms_fp16_or_quantized(model) -> list[str]:
    """Names of MatMul/Gemm nodes (main graph and functions) that would run in FP32."""
    bad = []
    dequantized = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(inferred.graph.value_info) + list(inferred.graph.input)}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    for n in model.graph.node:
        if n.op_type in ("MatMul", "Gemm") and not any(i in dequantized for i in n.input):
            if types.get(n.input[0]) != TensorProto.FLOAT16:
                bad.append(n.name or n.output[0])
    for f in model.functions:
        produced_by_half_cast = {m.output[0] for m in f.node if m.op_type == "Cast" and m.attribute[0].i == TensorProto.FLOAT16}
        for n in f.node:
            if n.op_type in ("MatMul", "Gemm") and not all(i in produced_by_half_cast for i in n.input if i):
                bad.append(f"{f.name}/{n.output[0]}")
    return bad


def test_bundle_fp16_graphs_have_no_fp32_gemm(bundle):
    assert _all_gemms_fp16_or_quantized(_fc_graph()) == ["logits"]  # the check sees an FP32 Gemm
    for stage in bundle.stages:
        assert _all_gemms_fp16_or_quantized(onnx.load(str(bundle.stage_file(stage, "fp16")))) == [], stage


# ---------------------------------------------------------------- INT64 outputs


@needs_rtx
def test_rtx_types_every_stage_output_as_the_manifest_says(bundle):
    """`labels` is INT64: the parsed network's outputs (what the engine's
    bindings will be) map, through the backend's dtype rule, to the
    manifest's dtypes — so the backends size every buffer right."""
    from types import SimpleNamespace

    from vidtrt.runtime.backends.tensorrt_backend import TensorRTRTXBackend
    from vidtrt.tensorrt.flavours import capturing_logger, module

    trt = module("tensorrt-rtx")
    logger = capturing_logger("tensorrt-rtx").trt_logger
    fake_backend = SimpleNamespace(trt=trt)
    seen_int64 = False
    for stage, spec in bundle.stages.items():
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        assert parser.parse_from_file(str(bundle.stage_file(stage))), stage
        outputs = {network.get_output(i).name: network.get_output(i).dtype for i in range(network.num_outputs)}
        for t in spec.outputs:
            got = TensorRTRTXBackend._numpy_dtype(fake_backend, outputs[t.name])
            assert got == np.dtype(t.dtype), (stage, t.name, got, t.dtype)
            seen_int64 |= got == np.int64
    assert seen_int64
