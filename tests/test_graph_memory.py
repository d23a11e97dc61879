"""vidtrt/export/memory.py: intermediate tensor sizes at concrete shapes,
checked on small hand-built graphs whose sizes are known."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from vidtrt.export.memory import tensor_sizes

FLOAT, INT64, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


def const(name, value, dtype=np.int64):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value, dtype=dtype), name))


def model(nodes, inputs, outputs, functions=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("test", 1)] if functions else [])
    m = helper.make_model(graph, opset_imports=opsets, functions=list(functions))
    onnx.checker.check_model(m)
    return m


def by_name(sizes):
    return {s.name: s for s in sizes}


def test_shapes_follow_the_concrete_inputs():
    m = model(
        [helper.make_node("MatMul", ["a", "b"], ["ab"]), helper.make_node("Relu", ["ab"], ["out"])],
        [helper.make_tensor_value_info("a", FLOAT, ["M", "K"]), helper.make_tensor_value_info("b", FLOAT, ["K", "N"])],
        [helper.make_tensor_value_info("out", FLOAT, ["M", "N"])],
    )
    sizes = tensor_sizes(m, {"a": [30, 7], "b": [7, 50]})
    assert [(s.name, s.op, s.shape, s.dtype, s.bytes) for s in sizes] == [
        ("ab", "MatMul", (30, 50), "FLOAT", 6000), ("out", "Relu", (30, 50), "FLOAT", 6000),
    ]  # fmt: skip


def test_range_arithmetic_is_folded():
    """ONNX's data propagation stops at Range (an anchor grid's); the analysis evaluates it."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        const("zero_index", [0]), const("one_index", [1]), const("zero", 0), const("step", 1),
        helper.make_node("Gather", ["shape", "zero_index"], ["height"], axis=0),
        helper.make_node("Gather", ["shape", "one_index"], ["width"], axis=0),
        helper.make_node("Squeeze", ["height", "zero_index"], ["height_scalar"]),
        helper.make_node("Squeeze", ["width", "zero_index"], ["width_scalar"]),
        helper.make_node("Range", ["zero", "height_scalar", "step"], ["rows"]),  # [H]
        helper.make_node("Range", ["zero", "width_scalar", "step"], ["columns"]),  # [W]
        helper.make_node("Unsqueeze", ["rows", "one_index"], ["row_column"]),  # [H, 1]
        helper.make_node("Mul", ["row_column", "columns"], ["grid"]),  # [H, W]
        helper.make_node("Cast", ["grid"], ["out"], to=FLOAT),
    ]  # fmt: skip
    m = model(nodes, [helper.make_tensor_value_info("x", FLOAT, ["H", "W"])], [helper.make_tensor_value_info("out", FLOAT, ["H", "W"])])
    fixed = onnx.ModelProto()
    fixed.CopyFrom(m)
    for dim, size in zip(fixed.graph.input[0].type.tensor_type.shape.dim, (40, 3000)):
        dim.dim_value = size
    plain = {v.name: v for v in onnx.shape_inference.infer_shapes(fixed, data_prop=True).graph.value_info}
    assert not plain["grid"].type.tensor_type.shape.dim[1].HasField("dim_value")  # what the folding is for
    sizes = by_name(tensor_sizes(m, {"x": [40, 3000]}))
    assert sizes["out"].shape == (40, 3000) and sizes["out"].bytes == 40 * 3000 * 4
    assert sizes["columns"].shape == (3000,) and sizes["columns"].op == "Range"


def test_data_dependent_dims_are_reported_unknown():
    m = model(
        [helper.make_node("NonZero", ["x"], ["where"]), helper.make_node("Transpose", ["where"], ["out"])],
        [helper.make_tensor_value_info("x", FLOAT, ["N"])],
        [helper.make_tensor_value_info("out", INT64, ["count", 1])],
    )
    sizes = tensor_sizes(m, {"x": [100]})
    assert {s.name for s in sizes} == {"where", "out"}  # listed, not skipped
    assert all(s.bytes is None for s in sizes)
    assert by_name(sizes)["where"].unknown_dims == [1] and by_name(sizes)["where"].shape[0] == 1


def loop_model():
    """A Loop over the rows of x (trip count from its shape) whose body makes an
    [N, N] outer product of row t with itself and sums it to [N]."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Gather", ["x", "t"], ["row"], axis=0),  # [N]
            helper.make_node("Unsqueeze", ["row", "axis1"], ["column"]),  # [N, 1]
            helper.make_node("Mul", ["column", "row"], ["outer"]),  # [N, N]
            helper.make_node("ReduceSum", ["outer", "axis1"], ["summed"], keepdims=0),  # [N]
        ],
        "body",
        [helper.make_tensor_value_info("t", INT64, []), helper.make_tensor_value_info("cond_in", BOOL, [])],
        [helper.make_tensor_value_info("cond_out", BOOL, []), helper.make_tensor_value_info("summed", FLOAT, None)],
    )
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        const("axis0", [0]), const("axis1", [1]),
        helper.make_node("Gather", ["shape", "axis0"], ["rows"], axis=0),
        helper.make_node("Squeeze", ["rows", "axis0"], ["trips"]),
        helper.make_node("Constant", [], ["true"], value=helper.make_tensor("true", BOOL, [], [True])),
        helper.make_node("Loop", ["trips", "true"], ["stacked"], body=body),
        helper.make_node("Relu", ["stacked"], ["out"]),
    ]  # fmt: skip
    return model(nodes, [helper.make_tensor_value_info("x", FLOAT, ["T", "N"])], [helper.make_tensor_value_info("out", FLOAT, ["T", "N"])])


def test_loop_bodies_and_scan_outputs_are_resolved():
    sizes = tensor_sizes(loop_model(), {"x": [6, 500]})
    assert not [s for s in sizes if s.bytes is None]
    largest = sizes[0]
    assert (largest.name, largest.shape, largest.bytes) == ("outer", (500, 500), 500 * 500 * 4)
    assert largest.scope == "Loop stacked body (per iteration)"
    named = by_name(sizes)
    assert named["stacked"].shape == (6, 500) and named["out"].shape == (6, 500)
    assert named["stacked"].scope == ""


def test_function_tensors_are_traced_to_their_function():
    function = helper.make_function(
        "test", "Square", ["x"], ["y"],
        [helper.make_node("Mul", ["x", "x"], ["square"]), helper.make_node("Identity", ["square"], ["y"])],
        opset_imports=[helper.make_opsetid("", 17)],
    )  # fmt: skip
    m = model(
        [helper.make_node("Square", ["a"], ["b"], domain="test"), helper.make_node("Relu", ["b"], ["out"])],
        [helper.make_tensor_value_info("a", FLOAT, ["N"])],
        [helper.make_tensor_value_info("out", FLOAT, ["N"])],
        functions=[function],
    )
    sizes = tensor_sizes(m, {"a": [10]})
    assert {s.function for s in sizes if s.op == "Mul"} == {"test.Square"}
    assert {s.function for s in sizes if s.op == "Relu"} == {""}
    assert all(s.bytes == 40 for s in sizes)


@pytest.mark.parametrize(
    "shapes, message",
    [
        ({}, r"no concrete shape given for graph input 'x'"),
        ({"x": [3]}, r"input 'x' has rank 2, got shape \[3\]"),
        ({"x": [3, 4], "y": [1]}, r"not graph inputs: \['y'\]"),
    ],
)
def test_input_shapes_are_checked(shapes, message):
    with pytest.raises(ValueError, match=message):
        tensor_sizes(loop_model(), shapes)


def test_static_dims_must_agree():
    m = model(
        [helper.make_node("Relu", ["x"], ["out"])],
        [helper.make_tensor_value_info("x", FLOAT, [2, "N"])],
        [helper.make_tensor_value_info("out", FLOAT, [2, "N"])],
    )
    with pytest.raises(ValueError, match=r"input 'x' has static dims \(2, 'N'\), got shape \[3, 5\]"):
        tensor_sizes(m, {"x": [3, 5]})
