"""The op infrastructure on its own: FunctionBuilder's nodes and functions,
run by ONNX Runtime against values written by hand, and the registry's
attach_local_functions on small models. (The op table against the plugin
sources is tests/test_plugin_library_info.py.)"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from vidtrt.ops import registry
from vidtrt.ops.function_builder import FunctionBuilder

OPSET = 17


def model_with_function(function: onnx.FunctionProto, x_shape, attrs: dict, out_rank: int) -> onnx.ModelProto:
    node = helper.make_node(function.name, ["x"], ["y"], domain=registry.DOMAIN, **attrs)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * out_rank)],
    )  # fmt: skip
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(registry.DOMAIN, 1)],
        functions=[function],
    )  # fmt: skip
    onnx.checker.check_model(model, full_check=True)
    return model


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_a_function_built_by_hand_computes_what_it_says():
    """y = ReduceSum over axis 1 of (x · scale + offset), reshaped to [2, 2]:
    the attribute references, constants, reshape and reduce_sum in one body."""
    b = FunctionBuilder("ScaleShiftSum", ["x"], ["y"], ["scale", "offset"], OPSET)
    offset = b.op("Cast", b.attr_int("offset"), to=TensorProto.FLOAT)
    shifted = b.op("Add", b.op("Mul", "x", b.attr_float("scale")), offset)
    summed = b.reduce_sum(b.reshape(shifted, [4, 3]), [1])  # [4]: the reduced axis is dropped
    b.op("Reshape", summed, b.const([2, 2]), out="y")
    function = b.build(doc="scale, shift, sum")
    assert (function.domain, function.name, list(function.attribute)) == (registry.DOMAIN, "ScaleShiftSum", ["scale", "offset"])
    assert [(i.domain, i.version) for i in function.opset_import] == [("", OPSET)]
    assert function.doc_string == "scale, shift, sum"
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    model = model_with_function(function, x.shape, {"scale": 0.5, "offset": 3}, 2)
    # rows of 3 of 0.5·[0..11] + 3: 0.5·(0+1+2) + 9 = 10.5, then +4.5 each
    np.testing.assert_array_equal(run(model, x), np.array([[10.5, 15.0], [19.5, 24.0]], np.float32))


@pytest.mark.parametrize(("keepdims", "shape"), [(None, (2,)), (0, (2,)), (1, (2, 1))])
def test_reduce_sum_drops_the_reduced_axes_unless_asked(keepdims, shape):
    b = FunctionBuilder("RowSums", ["x"], ["y"], [], OPSET)
    kwargs = {} if keepdims is None else {"keepdims": keepdims}
    b.op("Identity", b.reduce_sum("x", [1], **kwargs), out="y")
    [reduce] = [n for n in b.nodes if n.op_type == "ReduceSum"]
    assert helper.get_attribute_value(next(a for a in reduce.attribute if a.name == "keepdims")) == (keepdims or 0)
    got = run(model_with_function(b.build(), (2, 3), {}, len(shape)), np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(got, np.full(shape, 3.0, np.float32))


def test_fresh_names_are_distinct_and_carry_the_prefix():
    b = FunctionBuilder("Body", ["x"], ["y"], [], OPSET, prefix="loop_")
    names = [b.op("Relu", "x"), b.op("Relu", "x"), b.const([1]), b.unsqueeze("x", [0]), b.attr_int("k")]
    assert len(set(names)) == len(names)
    assert all(name.startswith("loop_") for name in names)
    assert b.op("Relu", "x", out="y") == "y"  # an explicit name is kept as given


def test_build_graph_types_inputs_and_outputs_in_order():
    b = FunctionBuilder("Body", ["i", "x"], ["y"], [], OPSET)
    b.op("Add", "x", b.op("Cast", "i", to=TensorProto.FLOAT), out="y")
    graph = b.build_graph([(TensorProto.INT64, []), (TensorProto.FLOAT, [3])], [(TensorProto.FLOAT, [3])])
    assert [(v.name, v.type.tensor_type.elem_type) for v in graph.input] == [("i", TensorProto.INT64), ("x", TensorProto.FLOAT)]
    assert [d.dim_value for d in graph.input[1].type.tensor_type.shape.dim] == [3]
    assert [v.name for v in graph.output] == ["y"] and list(graph.node) == b.nodes


# ---------------------------------------------------------------- attach_local_functions


def model_with_vidtrt_node(extra_imports=()) -> onnx.ModelProto:
    op = registry.registered_ops()["PSLA"]
    node = helper.make_node("PSLA", list(op.input_names), list(op.output_names), domain=registry.DOMAIN)
    graph = helper.make_graph([node], "g", [], [])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), *extra_imports])


def vidtrt_imports(model: onnx.ModelProto) -> list[int]:
    return [imp.version for imp in model.opset_import if imp.domain == registry.DOMAIN]


def test_attach_adds_the_function_and_one_vidtrt_import():
    model = model_with_vidtrt_node([helper.make_opsetid("zz.other", 1)])  # a domain sorting after "vidtrt"
    assert registry.attach_local_functions(model) == ["PSLA"]
    assert [(f.domain, f.name) for f in model.functions] == [(registry.DOMAIN, "PSLA")]
    assert vidtrt_imports(model) == [registry.DOMAIN_VERSION]


def test_attach_keeps_an_existing_vidtrt_import_single():
    model = model_with_vidtrt_node([helper.make_opsetid(registry.DOMAIN, 1)])
    registry.attach_local_functions(model)
    registry.attach_local_functions(model)  # twice: neither the import nor the function doubles
    assert vidtrt_imports(model) == [1]
    assert [f.name for f in model.functions] == ["PSLA"]


def test_attach_leaves_other_domains_alone():
    model = model_with_vidtrt_node([helper.make_opsetid("zz.other", 1)])
    model.graph.node.append(helper.make_node("Custom", ["a"], ["b"], domain="zz.other"))
    assert registry.attach_local_functions(model) == ["PSLA"]
    assert [f.name for f in model.functions] == ["PSLA"]


def test_attach_refuses_an_unregistered_vidtrt_node():
    model = model_with_vidtrt_node()
    model.graph.node.append(helper.make_node("NoSuchOp", ["a"], ["b"], domain=registry.DOMAIN))
    with pytest.raises(ValueError, match="node vidtrt.NoSuchOp but no such custom op is registered"):
        registry.attach_local_functions(model)


def test_registry_records_are_immutable():
    """Ops and op-table entries are shared by every caller: frozen, so one
    caller cannot change another's op."""
    op = registry.registered_ops()["PSLA"]
    entry = registry.OpTableEntry("psla", "PSLA", "1", "PslaPluginCreator")
    for record, field in ((op, "plugin_version"), (entry, "plugin_version")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(record, field, "2")


def test_channels_last_copies_4d_tensors_only():
    """The kernel layout of PSLA and MostSimilarRoIAlign: 4-D tensors become
    channels-last copies with the same values; other ranks pass through."""
    four, three, one, five = torch.randn(2, 3, 4, 5), torch.randn(3, 4, 5), torch.randn(7), torch.randn(1, 2, 3, 4, 5)
    out = registry.channels_last((four, three, one, five))
    assert out[0].is_contiguous(memory_format=torch.channels_last) and not four.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out[0], four)
    assert out[1] is three and out[2] is one and out[3] is five
