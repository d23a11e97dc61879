"""The precision rewrites of vidtrt/export/precision.py on small hand-built
graphs, each expectation written out by hand: which node computes in which
type, which casts and FP16 constants appear under which names, what the
report counts, and what the INT8 scales are, computed from the calibration
samples with the symmetric min-max rule. Seconds, no exported bundle
(tests/test_precision.py covers the real stage graphs)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from vidtrt.export import precision
from vidtrt.export.precision import (
    activation_scales,
    convert_fp16,
    half_function_gemms,
    half_unquantized_gemms,
    load_calibration,
    quantize_int8,
    save_calibration,
    write_fp16_variants,
    write_int8_variants,
)
from vidtrt.ops import registry

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16


def rng(seed=0):
    return np.random.default_rng(seed)


def model_of(nodes, inputs, outputs, initializers=(), functions=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    imports = [helper.make_opsetid("", opset)]
    if functions:
        imports.append(helper.make_opsetid("local", 1))
    return helper.make_model(graph, opset_imports=imports, functions=list(functions))


def value(name, shape, elem=FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def run(model, feed):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))


def types_of(model):
    """name → element type of every typed value (after shape inference) and initializer."""
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    found = {vi.name: vi.type.tensor_type.elem_type for vi in list(g.input) + list(g.output) + list(g.value_info)}
    found.update({i.name: i.data_type for i in g.initializer})
    return found


def node_by_output(model, name):
    return next(n for n in model.graph.node if name in n.output)


# ---------------------------------------------------------------- convert_fp16: which nodes go FP16


def mixed_graph():
    """x [1,2,4,4] → Conv(w) → c → Relu → r → ReduceMean(axes 2,3, keepdims 0) → pooled [1,2]
    → Add(bias, rank 1) → a → MatMul(fc) → y [1,3]; r is also a graph output (rank 4)."""
    w = numpy_helper.from_array(rng(0).standard_normal((2, 2, 3, 3)).astype(np.float32), "w")
    bias = numpy_helper.from_array(np.array([0.5, -0.25], np.float32), "bias")
    fc = numpy_helper.from_array(rng(1).standard_normal((2, 3)).astype(np.float32), "fc")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("ReduceMean", ["r"], ["pooled"], axes=[2, 3], keepdims=0, name="pool"),
        helper.make_node("Add", ["pooled", "bias"], ["a"], name="add"),
        helper.make_node("MatMul", ["a", "fc"], ["y"], name="fc"),
    ]
    return model_of(nodes, [value("x", [1, 2, 4, 4])], [value("y", [1, 3]), value("r", [1, 2, 4, 4])], [w, bias, fc])


def test_rank_rule_gemm_exception_and_output_names():
    model = mixed_graph()
    half, report = convert_fp16(model)
    # Conv and Relu read and write rank-4 maps; the rank-4 ReduceMean input
    # does not help it: its output is rank 2. Add on rank 2 stays FP32. MatMul
    # goes FP16 whatever the rank.
    assert report["fp16_op_types"] == {"Conv": 1, "Relu": 1, "MatMul": 1}
    assert report["fp32_op_types"] == {"ReduceMean": 1, "Add": 1}
    assert (report["fp16_nodes"], report["fp32_nodes"]) == (3, 2)
    names = [(n.op_type, list(n.input), list(n.output)) for n in half.graph.node]
    assert names == [
        ("Cast", ["x"], ["x__to_fp16"]),
        ("Conv", ["x__to_fp16", "w__fp16"], ["c"]),
        ("Relu", ["c"], ["r__fp16"]),  # a graph output computed in FP16 gets an internal name
        ("Cast", ["r__fp16"], ["r__fp16__to_fp32"]),
        ("ReduceMean", ["r__fp16__to_fp32"], ["pooled"]),
        ("Add", ["pooled", "bias"], ["a"]),
        ("Cast", ["a"], ["a__to_fp16"]),
        ("MatMul", ["a__to_fp16", "fc__fp16"], ["y__fp16"]),
        ("Cast", ["y__fp16"], ["y"]),  # and a final Cast restores each FP32 output,
        ("Cast", ["r__fp16"], ["r"]),  # in the outputs' order
    ]
    casts = {n.output[0]: (n.name, n.attribute[0].i) for n in half.graph.node if n.op_type == "Cast"}
    assert casts == {
        "x__to_fp16": ("x__to_fp16_cast", HALF),
        "r__fp16__to_fp32": ("r__fp16__to_fp32_cast", FLOAT),
        "a__to_fp16": ("a__to_fp16_cast", HALF),
        "r": ("r_output_cast", FLOAT),
        "y": ("y_output_cast", FLOAT),
    }
    assert report["casts_inserted"] == 5
    t = types_of(half)
    assert [t[n] for n in ("c", "r__fp16", "y__fp16", "w__fp16", "fc__fp16")] == [HALF] * 5
    assert [t[n] for n in ("pooled", "a", "bias", "x", "y", "r")] == [FLOAT] * 6
    # The FP32 weights nobody reads any more are gone; the bias an FP32 node reads stays.
    assert sorted(i.name for i in half.graph.initializer) == ["bias", "fc__fp16", "w__fp16"]
    np.testing.assert_array_equal(
        numpy_helper.to_array(next(i for i in half.graph.initializer if i.name == "w__fp16")),
        numpy_helper.to_array(model.graph.initializer[0]).astype(np.float16),
    )
    assert [o.name for o in half.graph.output] == ["y", "r"]
    assert report["function_gemms_in_fp16"] == {}
    x = rng(2).standard_normal((1, 2, 4, 4)).astype(np.float32)
    want, got = run(model, {"x": x}), run(half, {"x": x})
    for name in ("y", "r"):
        assert got[name].dtype == np.float32
        np.testing.assert_allclose(got[name], want[name], rtol=1e-2, atol=1e-2)


def test_the_input_model_is_left_as_it_was():
    model = mixed_graph()
    before = model.SerializeToString()
    convert_fp16(model)
    assert model.SerializeToString() == before


def test_one_cast_per_tensor_and_type_whatever_the_number_of_readers():
    """An FP16 tensor read by two FP32 nodes, and an FP32 input read by two FP16 nodes."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r1"]),
        helper.make_node("Sigmoid", ["x"], ["s1"]),
        helper.make_node("Add", ["r1", "s1"], ["h"]),  # FP16
        helper.make_node("Softmax", ["h"], ["p"], axis=1),  # never FP16
        helper.make_node("Exp", ["h"], ["e"]),  # never FP16
    ]
    model = model_of(nodes, [value("x", [1, 2, 3, 3])], [value("p", [1, 2, 3, 3]), value("e", [1, 2, 3, 3])])
    half, report = convert_fp16(model)
    casts = [(list(n.input), list(n.output)) for n in half.graph.node if n.op_type == "Cast"]
    assert casts == [(["x"], ["x__to_fp16"]), (["h"], ["h__to_fp32"])]
    assert report["casts_inserted"] == 2
    assert report["fp16_op_types"] == {"Relu": 1, "Sigmoid": 1, "Add": 1}
    assert report["fp32_op_types"] == {"Softmax": 1, "Exp": 1}
    assert [list(n.input) for n in half.graph.node if n.op_type in ("Softmax", "Exp")] == [["h__to_fp32"]] * 2


def test_constant_nodes_become_fp16_initializers_and_unused_ones_go():
    """A Constant read by an FP16 node is replaced by an FP16 initializer (the
    Constant node then has no reader and is dropped); a Constant an FP32 node
    reads stays. Constants do not count against the rank rule (k is rank 1)."""
    k = helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(np.array([2.0, 3.0], np.float32), "kv"))
    j = helper.make_node("Constant", [], ["j"], value=numpy_helper.from_array(np.array([1.5], np.float32), "jv"))
    nodes = [
        k,
        j,
        helper.make_node("Mul", ["x", "k"], ["m"]),  # x [1, 2, 2, 2] * k [2]: FP16
        helper.make_node("ReduceMean", ["m"], ["v"], axes=[1, 2, 3], keepdims=0),  # FP32 (not in FP16_OPS)
        helper.make_node("Mul", ["v", "j"], ["y"]),  # rank 1: FP32
    ]
    model = model_of(nodes, [value("x", [1, 2, 2, 2])], [value("y", [1])])
    half, report = convert_fp16(model)
    assert [n.op_type for n in half.graph.node] == ["Constant", "Cast", "Mul", "Cast", "ReduceMean", "Mul"]
    assert node_by_output(half, "j").op_type == "Constant"
    assert list(node_by_output(half, "m").input) == ["x__to_fp16", "k__fp16"]
    (init,) = half.graph.initializer
    assert init.name == "k__fp16" and init.data_type == HALF
    np.testing.assert_array_equal(numpy_helper.to_array(init), [2.0, 3.0])
    assert report["fp32_op_types"] == {"ReduceMean": 1, "Mul": 1}  # Constants are not counted there
    assert report["fp32_nodes"] == 4  # but are in the total
    x = rng(3).standard_normal((1, 2, 2, 2)).astype(np.float32)
    np.testing.assert_allclose(run(half, {"x": x})["y"], run(model, {"x": x})["y"], rtol=5e-3)


def test_a_constant_with_other_attributes_is_not_taken_for_a_value():
    """Only a Constant whose single attribute is ``value`` is a tensor constant
    to copy; a value_float Constant is an ordinary rank-0 input and keeps its
    reader in FP32."""
    nodes = [
        helper.make_node("Constant", [], ["k"], value_float=2.0),
        helper.make_node("Mul", ["x", "k"], ["y"]),
    ]
    model = model_of(nodes, [value("x", [1, 2, 2, 2])], [value("y", [1, 2, 2, 2])])
    half, report = convert_fp16(model)
    assert report["fp16_nodes"] == 0 and report["casts_inserted"] == 0
    assert [n.op_type for n in half.graph.node] == ["Constant", "Mul"]
    # A sparse_value Constant (its attribute's name sorts before "value") is
    # not a dense value either: its reader casts it.
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([2.0], np.float32), "v"), numpy_helper.from_array(np.array([0], np.int64), "i"), [1, 2, 2, 2]
    )
    nodes = [helper.make_node("Constant", [], ["k"], sparse_value=sparse), helper.make_node("Mul", ["x", "k"], ["y"])]
    half, report = convert_fp16(model_of(nodes, [value("x", [1, 2, 2, 2])], [value("y", [1, 2, 2, 2])]))
    assert report["fp16_op_types"] == {"Mul": 1}
    assert list(node_by_output(half, "y__fp16").input) == ["x__to_fp16", "k__to_fp16"]


def test_a_reader_of_untyped_values_stays_fp32():
    """An op of a domain shape inference does not know leaves its outputs
    untyped; a node reading one stays FP32, though its own output is a typed
    rank-4 tensor (the input may be FP32: there is no type to cast from)."""
    nodes = [helper.make_node("Mystery", ["x"], ["m"], domain="com.example"), helper.make_node("Relu", ["m"], ["y"])]
    model = model_of(nodes, [value("x", [1, 2, 2, 2])], [value("y", [1, 2, 2, 2])])
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    half, report = convert_fp16(model)
    assert report["fp16_nodes"] == 0 and report["fp32_op_types"] == {"Mystery": 1, "Relu": 1}
    assert [list(n.input) for n in half.graph.node] == [["x"], ["m"]]


def test_rank_three_is_enough():
    """The rank rule's boundary: tensors of rank 3 go FP16, rank 2 stays FP32."""
    nodes = [helper.make_node("Relu", ["x3"], ["y3"]), helper.make_node("Relu", ["x2"], ["y2"])]
    model = model_of(nodes, [value("x3", [2, 3, 4]), value("x2", [3, 4])], [value("y3", [2, 3, 4]), value("y2", [3, 4])])
    half, report = convert_fp16(model)
    assert report["fp16_op_types"] == {"Relu": 1} and report["fp32_op_types"] == {"Relu": 1}
    assert list(node_by_output(half, "y3__fp16").input) == ["x3__to_fp16"]
    assert list(node_by_output(half, "y2").input) == ["x2"]


def test_constant_of_shape_is_a_tensor_not_a_constant():
    """ConstantOfShape also holds a one-element ``value``, but its output has
    the shape it is given: an FP16 reader gets it through a Cast, never as
    that one element (which would broadcast to another shape)."""
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["filled"], value=numpy_helper.from_array(np.array([2.0], np.float32))),
        helper.make_node("Mul", ["x", "filled"], ["y"]),
    ]
    shape = numpy_helper.from_array(np.array([2, 3, 4], np.int64), "shape")
    model = model_of(nodes, [value("x", [1, 3, 4])], [value("y", [2, 3, 4])], [shape])
    half, report = convert_fp16(model)
    assert report["fp16_op_types"] == {"Mul": 1}
    assert list(node_by_output(half, "y__fp16").input) == ["x__to_fp16", "filled__to_fp16"]
    x = rng(3).standard_normal((1, 3, 4)).astype(np.float32)
    got = run(half, {"x": x})["y"]
    assert got.shape == (2, 3, 4)
    np.testing.assert_allclose(got, np.broadcast_to(2 * x, (2, 3, 4)), rtol=1e-3, atol=1e-3)


def test_a_constant_operand_does_not_excuse_the_others_ranks():
    """Constants skip the rank rule; the node's other tensors still obey it
    (the constant comes first here: the check goes on past it)."""
    c = numpy_helper.from_array(np.ones((1, 1, 3), np.float32), "c")
    model = model_of([helper.make_node("Add", ["c", "x"], ["y"])], [value("x", [2, 3])], [value("y", [1, 2, 3])], [c])
    half, report = convert_fp16(model)
    assert report["fp16_nodes"] == 0 and report["fp32_op_types"] == {"Add": 1}


def test_constants_and_initializers_that_are_graph_outputs_stay():
    """A Constant node and an initializer that are graph outputs keep their
    FP32 selves, though their node readers now read FP16 copies."""
    nodes = [
        helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(np.full((1, 2, 2, 2), 3.0, np.float32))),
        helper.make_node("Mul", ["x", "k"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["y"]),
    ]
    b = numpy_helper.from_array(np.full((1, 2, 2, 2), 0.5, np.float32), "b")
    shape = [1, 2, 2, 2]
    model = model_of(nodes, [value("x", shape)], [value("y", shape), value("k", shape), value("b", shape)], [b])
    half, report = convert_fp16(model)
    assert report["fp16_op_types"] == {"Mul": 1, "Add": 1}
    assert list(node_by_output(half, "m").input) == ["x__to_fp16", "k__fp16"]
    assert sorted(i.name for i in half.graph.initializer) == ["b", "b__fp16", "k__fp16"]
    got = run(half, {"x": np.ones(shape, np.float32)})
    np.testing.assert_array_equal(got["k"], np.full(shape, 3.0, np.float32))
    np.testing.assert_array_equal(got["b"], np.full(shape, 0.5, np.float32))
    np.testing.assert_array_equal(got["y"], np.full(shape, 3.5, np.float32))


def test_an_fp16_reader_of_an_fp16_graph_output_reads_it_as_is():
    """y is a graph output computed in FP16 (renamed, then cast back) and read
    by another FP16 node, which takes the FP16 tensor without a cast."""
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Relu", ["y"], ["z"])]
    shape = [1, 2, 2, 2]
    half, report = convert_fp16(model_of(nodes, [value("x", shape)], [value("y", shape), value("z", shape)]))
    assert report["fp16_op_types"] == {"Relu": 2} and report["casts_inserted"] == 3
    assert [(n.op_type, list(n.input), list(n.output)) for n in half.graph.node] == [
        ("Cast", ["x"], ["x__to_fp16"]),
        ("Relu", ["x__to_fp16"], ["y__fp16"]),
        ("Relu", ["y__fp16"], ["z__fp16"]),
        ("Cast", ["y__fp16"], ["y"]),
        ("Cast", ["z__fp16"], ["z"]),
    ]


def test_nodes_whose_first_output_nobody_reads_stay():
    """Pruning drops unread Constants only: a TopK whose values nobody reads
    (only its indices) is not dead, nor is an Abs nobody reads (op types
    either side of "Constant")."""
    k = numpy_helper.from_array(np.array([2], np.int64), "k")
    nodes = [helper.make_node("TopK", ["x", "k"], ["values", "indices"]), helper.make_node("Abs", ["x"], ["unread"])]
    model = model_of(nodes, [value("x", [1, 2, 2, 5])], [value("indices", [1, 2, 2, 2], TensorProto.INT64)], [k])
    half, _ = convert_fp16(model)
    assert [n.op_type for n in half.graph.node] == ["TopK", "Abs"]
    x = np.arange(20, dtype=np.float32).reshape(1, 2, 2, 5)
    np.testing.assert_array_equal(run(half, {"x": x})["indices"], np.broadcast_to([4, 3], (1, 2, 2, 2)))


def test_nodes_without_float_tensors_or_known_ranks_stay_fp32():
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Reshape", ["s", "flat"], ["s2"]),  # int64 only: nothing to convert
        helper.make_node("Reshape", ["x", "dyn"], ["u"]),  # output rank unknown to inference
        helper.make_node("ReduceSum", ["u"], ["y"], keepdims=0),
        helper.make_node("Identity", ["x"], ["z"]),  # rank 4 in and out: FP16
    ]
    flat = numpy_helper.from_array(np.array([-1], np.int64), "flat")
    model = model_of(
        nodes,
        [value("x", [1, 2, 2, 2]), value("dyn", [None], TensorProto.INT64)],
        [value("s2", [4], TensorProto.INT64), value("y", []), value("z", [1, 2, 2, 2])],
        [flat],
    )
    assert onnx.shape_inference.infer_shapes(model).graph.value_info[1].name == "u"
    assert not onnx.shape_inference.infer_shapes(model).graph.value_info[1].type.tensor_type.HasField("shape")
    half, report = convert_fp16(model)
    assert report["fp16_op_types"] == {"Identity": 1}
    assert report["fp32_op_types"] == {"Shape": 1, "Reshape": 2, "ReduceSum": 1}
    assert list(node_by_output(half, "s2").input) == ["s", "flat"]


def custom_op_graph(op_type, inputs: dict, output_shape, **attrs):
    """One vidtrt custom-op node on float inputs (name → shape), with its local function."""
    node = helper.make_node(op_type, list(inputs), ["out"], domain=registry.DOMAIN, plugin_version="1", **attrs)
    model = model_of([node], [value(n, s) for n, s in inputs.items()], [value("out", output_shape)])
    registry.attach_local_functions(model)
    return model


PSLA_INPUTS = {"q": [1, 4, 5, 6], "k": [1, 4, 5, 6], "v": [1, 3, 5, 6]}


def test_custom_ops_follow_their_registry_entry():
    """PSLA (fp16=True) on rank-4 maps goes FP16; FixedSizeNMS (fp16=False)
    never does; an op of another custom domain never does."""
    assert registry.registered_ops()["PSLA"].fp16 and not registry.registered_ops()["FixedSizeNMS"].fp16
    psla = custom_op_graph("PSLA", PSLA_INPUTS, [1, 3, 5, 6], max_disp=1)
    half, report = convert_fp16(psla)
    assert report["fp16_op_types"] == {"PSLA": 1}
    assert list(node_by_output(half, "out__fp16").input) == ["q__to_fp16", "k__to_fp16", "v__to_fp16"]
    feed = {n: rng(i).standard_normal(shape).astype(np.float32) for i, (n, shape) in enumerate(PSLA_INPUTS.items())}
    np.testing.assert_allclose(run(half, feed)["out"], run(psla, feed)["out"], rtol=1e-2, atol=1e-2)

    # The registry's flag alone decides: a 4-D custom op whose entry says fp16=False stays FP32.
    entry = registry.registered_ops()["PSLA"]
    registry._OPS["PSLA"] = registry.CustomOp(**{**entry.__dict__, "fp16": False})
    try:
        _, report = convert_fp16(psla)
    finally:
        registry._OPS["PSLA"] = entry
    assert report["fp16_op_types"] == {} and report["fp32_op_types"] == {"PSLA": 1}

    # An op of another custom domain (sorting before or after ours) may share a
    # name with ours; it never goes FP16, though every rank here is known
    # (from the declared I/O).
    for domain in ("other.domain", "zz.other"):
        other = helper.make_node("PSLA", list(PSLA_INPUTS), ["out"], domain=domain, max_disp=1)
        foreign = helper.make_model(
            helper.make_graph([other], "g", [value(n, shape) for n, shape in PSLA_INPUTS.items()], [value("out", [1, 3, 5, 6])]),
            opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(domain, 1)],
        )
        _, report = convert_fp16(foreign)
        assert report["fp16_op_types"] == {} and report["fp32_op_types"] == {"PSLA": 1}, domain


def test_fp16_graph_with_gemms_inside_local_functions_reports_them():
    """RelationPropagation's function holds three MatMuls (counted here in its
    body, Loop and If bodies included); they go FP16 in an FP16 graph though
    the node itself, on rank-2 inputs, stays FP32."""
    model = custom_op_graph("RelationPropagation", {"sigma": [4, 3], "phi": [4, 3], "regions": [4, 5], "valid": [4]}, [4, 5])

    def gemms(nodes):
        return sum((n.op_type in ("MatMul", "Gemm")) + sum(gemms(a.g.node) for a in n.attribute) for n in nodes)

    assert gemms(model.functions[0].node) == 3
    half, report = convert_fp16(model)
    assert report["function_gemms_in_fp16"] == {"RelationPropagation": 3}
    assert report["fp32_op_types"] == {"RelationPropagation": 1}
    g = rng(12)
    feed = {"sigma": g.standard_normal((4, 3)), "phi": g.standard_normal((4, 3)), "regions": g.standard_normal((4, 5)), "valid": np.array([1, 1, 0, 1])}
    feed = {k: v.astype(np.float32) for k, v in feed.items()}
    np.testing.assert_allclose(run(half, feed)["out"], run(model, feed)["out"], rtol=1e-2, atol=1e-2)


# ---------------------------------------------------------------- GEMMs in functions and QDQ graphs


def function_with_gemms():
    """Local function local.F(a, b, c): Gemm(a, b, c) → g; MatMul(g, b) → m; a
    Loop of two trips whose body computes MatMul(acc, b) → out = Relu(...)."""
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["acc_in", "b"], ["prod"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Relu", ["prod"], ["acc_out"]),
        ],
        "body",
        [value("i", [], TensorProto.INT64), value("cond_in", [], TensorProto.BOOL), value("acc_in", None)],
        [value("cond_out", [], TensorProto.BOOL), value("acc_out", None)],
    )
    fn = helper.make_function(
        "local",
        "F",
        ["a", "b", "c"],
        ["out"],
        [
            helper.make_node("Gemm", ["a", "b", "c"], ["g"]),
            helper.make_node("Gemm", ["g", "b", ""], ["g2"]),  # no C: the empty input stays empty
            helper.make_node("MatMul", ["g2", "b"], ["m"]),
            helper.make_node("Constant", [], ["trips"], value=numpy_helper.from_array(np.array(2, np.int64))),
            helper.make_node("Constant", [], ["yes"], value=numpy_helper.from_array(np.array(True))),
            helper.make_node("Loop", ["trips", "yes", "m"], ["out"], body=body),
        ],
        [helper.make_opsetid("", 17)],
    )
    call = helper.make_node("F", ["a", "b", "c"], ["out"], domain="local")
    return model_of([call], [value("a", [3, 3]), value("b", [3, 3]), value("c", [3])], [value("out", [3, 3])], functions=[fn])


def test_half_function_gemms_reaches_into_loop_bodies():
    model = function_with_gemms()
    feed = {"a": rng(4).standard_normal((3, 3)).astype(np.float32), "b": rng(5).standard_normal((3, 3)).astype(np.float32), "c": np.array([0.5, -1.0, 2.0], np.float32)}
    want = run(model, feed)["out"]
    assert half_function_gemms(model) == {"F": 4}
    (fn,) = model.functions
    body = next(n for n in fn.node if n.op_type == "Loop").attribute[0].g
    # In the body: cast both operands, multiply, cast back like the first operand.
    assert [(n.op_type, list(n.input), list(n.output)) for n in body.node] == [
        ("Cast", ["acc_in"], ["F__gemm3_0_in0_fp16"]),  # the body's prefix carries the 3 GEMMs before the Loop
        ("Cast", ["b"], ["F__gemm3_0_in1_fp16"]),
        ("MatMul", ["F__gemm3_0_in0_fp16", "F__gemm3_0_in1_fp16"], ["F__gemm3_0_out_fp16"]),
        ("CastLike", ["F__gemm3_0_out_fp16", "acc_in"], ["prod"]),
        ("Identity", ["cond_in"], ["cond_out"]),
        ("Relu", ["prod"], ["acc_out"]),
    ]
    assert all(n.attribute[0].i == HALF for n in body.node if n.op_type == "Cast")
    gemms = [n for n in fn.node if n.op_type in ("Gemm", "MatMul")]
    assert [list(n.input) for n in gemms] == [
        ["F__gemm0_in0_fp16", "F__gemm0_in1_fp16", "F__gemm0_in2_fp16"],
        ["F__gemm1_in0_fp16", "F__gemm1_in1_fp16", ""],
        ["F__gemm2_in0_fp16", "F__gemm2_in1_fp16"],
    ]
    assert [list(n.output) for n in gemms] == [["F__gemm0_out_fp16"], ["F__gemm1_out_fp16"], ["F__gemm2_out_fp16"]]
    back = [(list(n.input), list(n.output)) for n in fn.node if n.op_type == "CastLike"]
    assert back == [(["F__gemm0_out_fp16", "a"], ["g"]), (["F__gemm1_out_fp16", "g"], ["g2"]), (["F__gemm2_out_fp16", "g2"], ["m"])]
    got = run(model, feed)["out"]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=2e-2, atol=2e-2)
    # Done twice, it would cast twice: it runs once per graph (convert_fp16 or quantize_int8).
    assert sum(n.op_type == "CastLike" for n in fn.node) == 3


def test_half_function_gemms_counts_only_functions_with_gemms():
    fn = helper.make_function("local", "NoGemm", ["a"], ["b"], [helper.make_node("Relu", ["a"], ["b"])], [helper.make_opsetid("", 17)])
    custom = helper.make_function(
        "local", "CustomMatMul", ["a"], ["b"], [helper.make_node("MatMul", ["a", "a"], ["b"], domain="com.example")], [helper.make_opsetid("", 17)]
    )
    call = helper.make_node("NoGemm", ["x"], ["y"], domain="local")
    model = model_of([call], [value("x", [2, 2])], [value("y", [2, 2])], functions=[fn, custom])
    assert half_function_gemms(model) == {}
    assert [n.op_type for n in model.functions[1].node] == ["MatMul"]


def test_half_function_gemms_numbers_each_subgraph_after_the_gemms_before_it():
    """Two subgraphs (If branches) after one GEMM: their prefixes carry the count so far."""
    branch = lambda name: helper.make_graph(  # noqa: E731
        [helper.make_node("MatMul", ["m", "m"], [name])], name, [], [value(name, None)]
    )
    fn = helper.make_function(
        "local",
        "G",
        ["a", "flag"],
        ["out"],
        [
            helper.make_node("MatMul", ["a", "a"], ["m"]),
            helper.make_node("If", ["flag"], ["out"], then_branch=branch("t"), else_branch=branch("e")),
        ],
        [helper.make_opsetid("", 17)],
    )
    model = model_of([helper.make_node("G", ["a", "flag"], ["out"], domain="local")], [value("a", [2, 2]), value("flag", [], TensorProto.BOOL)], [value("out", [2, 2])], functions=[fn])
    assert half_function_gemms(model) == {"G": 3}
    if_node = model.functions[0].node[-1]
    branches = {a.name: [n.output[0] for n in a.g.node if n.op_type == "MatMul"] for a in if_node.attribute}
    # Nodes in order: the MatMul first (count 0 → 1), then the If's branches
    # in attribute order (make_node sorts them: else_branch, then_branch).
    assert [a.name for a in if_node.attribute] == ["else_branch", "then_branch"]
    assert branches == {"else_branch": ["G__gemm1_0_out_fp16"], "then_branch": ["G__gemm2_0_out_fp16"]}
    feed = {"a": np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)}
    for flag in (True, False):
        np.testing.assert_allclose(run(model, {**feed, "flag": np.array(flag)})["out"], np.linalg.matrix_power(feed["a"], 4), rtol=1e-3)


def test_half_function_gemms_reaches_into_graphs_attributes():
    """A node holding a list of graphs (an attribute of type GRAPHS; no
    standard op has one, a custom op may): each graph's GEMMs are rewritten,
    numbered after the GEMMs before them."""
    body = lambda name: helper.make_graph([helper.make_node("MatMul", ["a", "a"], [name])], name, [], [value(name, None)])  # noqa: E731
    holder = helper.make_node("Branches", ["a"], ["out"], domain="com.example")
    holder.attribute.append(helper.make_attribute("bodies", [body("first"), body("second")]))
    assert holder.attribute[0].type == onnx.AttributeProto.GRAPHS
    fn = helper.make_function("local", "H", ["a"], ["out"], [holder], [helper.make_opsetid("", 17)])
    model = model_of([helper.make_node("H", ["a"], ["out"], domain="local")], [value("a", [2, 2])], [value("out", [2, 2])], functions=[fn])
    assert half_function_gemms(model) == {"H": 2}
    graphs = model.functions[0].node[0].attribute[0].graphs
    assert [[(n.op_type, list(n.output)) for n in g.node] for g in graphs] == [
        [("Cast", ["H__gemm0_0_in0_fp16"]), ("Cast", ["H__gemm0_0_in1_fp16"]), ("MatMul", ["H__gemm0_0_out_fp16"]), ("CastLike", ["first"])],
        [("Cast", ["H__gemm1_0_in0_fp16"]), ("Cast", ["H__gemm1_0_in1_fp16"]), ("MatMul", ["H__gemm1_0_out_fp16"]), ("CastLike", ["second"])],
    ]


def qdq_graph():
    """Two GEMMs on x [2, 3]: one reads a DequantizeLinear output (quantised: left
    alone), the other a float weight (FP16); a Gemm with an empty C and the
    same weight shares its FP16 copy."""
    w = numpy_helper.from_array(rng(6).standard_normal((3, 3)).astype(np.float32), "w")
    wq = numpy_helper.from_array(np.array([[1, -2, 3], [4, 5, -6], [7, 8, 9]], np.int8), "wq")
    scale = numpy_helper.from_array(np.array(0.5, np.float32), "scale")
    nodes = [
        helper.make_node("DequantizeLinear", ["wq", "scale"], ["wdq"]),
        helper.make_node("MatMul", ["x", "wdq"], ["q"], name="quantised"),
        helper.make_node("MatMul", ["q", "w"], ["h"], name="fc1"),
        helper.make_node("Gemm", ["h", "w", ""], ["y"]),
    ]
    return model_of(nodes, [value("x", [2, 3])], [value("y", [2, 3])], [w, wq, scale])


def test_half_unquantized_gemms():
    model = qdq_graph()
    x = rng(7).standard_normal((2, 3)).astype(np.float32)
    want = run(model, {"x": x})["y"]
    assert half_unquantized_gemms(model) == 2
    assert [(n.op_type, list(n.input), list(n.output)) for n in model.graph.node] == [
        ("DequantizeLinear", ["wq", "scale"], ["wdq"]),
        ("MatMul", ["x", "wdq"], ["q"]),
        ("Cast", ["q"], ["q__fc1_fp16_0"]),  # named after the node, or its index among the rewritten GEMMs
        ("MatMul", ["q__fc1_fp16_0", "w__fp16"], ["h__fp16"]),
        ("Cast", ["h__fp16"], ["h"]),
        ("Cast", ["h"], ["h__1_fp16_0"]),
        ("Gemm", ["h__1_fp16_0", "w__fp16", ""], ["y__fp16"]),
        ("Cast", ["y__fp16"], ["y"]),
    ]
    assert all(n.attribute[0].i == (HALF if n.output[0].endswith(("_0")) else FLOAT) for n in model.graph.node if n.op_type == "Cast")
    # One FP16 copy of w for both readers; the FP32 w has no reader left and is gone.
    assert sorted(i.name for i in model.graph.initializer) == ["scale", "w__fp16", "wq"]
    assert next(i for i in model.graph.initializer if i.name == "w__fp16").data_type == HALF
    onnx.checker.check_model(model, full_check=True)
    got = run(model, {"x": x})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=5e-2)


def test_half_unquantized_gemms_casts_non_float_constants_as_tensors():
    """An integer or FP16 initializer is not FP32: it is cast like any tensor, not copied."""
    w16 = numpy_helper.from_array(np.eye(2, dtype=np.float16), "w16")
    nodes = [helper.make_node("Cast", ["x"], ["x16"], to=HALF), helper.make_node("MatMul", ["x16", "w16"], ["y16"]), helper.make_node("Cast", ["y16"], ["y"], to=FLOAT)]
    model = model_of(nodes, [value("x", [2, 2])], [value("y", [2, 2])], [w16])
    assert half_unquantized_gemms(model) == 1
    matmul = next(n for n in model.graph.node if n.op_type == "MatMul")
    assert list(matmul.input) == ["x16__0_fp16_0", "w16__0_fp16_1"]
    assert [i.name for i in model.graph.initializer] == ["w16"]


def test_a_gemm_in_a_custom_domain_is_not_rewritten():
    nodes = [helper.make_node("MatMul", ["x", "x"], ["y"], domain="com.example")]
    model = model_of(nodes, [value("x", [2, 2])], [value("y", [2, 2])])
    assert half_unquantized_gemms(model) == 0
    assert [n.op_type for n in model.graph.node] == ["MatMul"]


# ---------------------------------------------------------------- INT8


def conv_graph(path: Path):
    """x [1, 2, 5, 5] → Conv(w, b) → c → Relu → r → Conv(w2) → z; r → MatMul(fc) over the last axis → y."""
    g = rng(8)
    inits = [
        numpy_helper.from_array(g.standard_normal((3, 2, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array([0.1, -0.2, 0.3], np.float32), "b"),
        numpy_helper.from_array(g.standard_normal((2, 3, 1, 1)).astype(np.float32), "w2"),
        numpy_helper.from_array(g.standard_normal((5, 4)).astype(np.float32), "fc"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w2"], ["z"], name="conv2"),
        helper.make_node("MatMul", ["r", "fc"], ["y"], name="fc"),
    ]
    model = model_of(nodes, [value("x", [1, 2, 5, 5])], [value("z", [1, 2, 5, 5]), value("y", [1, 3, 5, 4])], inits, opset=17)
    onnx.save(model, str(path))
    return model


def symmetric_scale(arrays):
    """The symmetric INT8 scale from min/max calibration: the range [-m, m],
    m = max |value| over every sample, onto [-127, 127] (-128 unused)."""
    m = max(float(np.abs(a).max()) for a in arrays)
    return m / 127


def test_quantize_int8_scales_from_the_samples(tmp_path):
    model = conv_graph(tmp_path / "fp32.onnx")
    samples = [{"x": rng(10 + i).standard_normal((1, 2, 5, 5)).astype(np.float32) * (i + 1)} for i in range(3)]
    scales = quantize_int8(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", samples)
    assert not (tmp_path / "int8.onnx.tmp").exists()
    # Inputs of the convolutions only: x and r (Relu's output).
    assert set(scales) == {"x", "r"}
    relu_outputs = [run(model, s)["y"] for s in samples]  # just to be sure the graph runs
    assert len(relu_outputs) == 3
    r_values = []
    for s in samples:
        extended = onnx.load(str(tmp_path / "fp32.onnx"))
        extended.graph.output.append(value("r", [1, 3, 5, 5]))
        r_values.append(run(extended, s)["r"])
    assert scales["x"] == pytest.approx(symmetric_scale([s["x"] for s in samples]), rel=1e-6)
    assert scales["r"] == pytest.approx(symmetric_scale(r_values), rel=1e-6)

    int8 = onnx.load(str(tmp_path / "int8.onnx"))
    ops = [n.op_type for n in int8.graph.node]
    # x and r are quantised, the two weights stored in INT8; the bias stays
    # float (no INT32 DequantizeLinear).
    assert ops.count("QuantizeLinear") == 2 and ops.count("DequantizeLinear") == 4
    conv1 = next(n for n in int8.graph.node if n.op_type == "Conv" and n.output[0] == "c")
    producers = {o: n for n in int8.graph.node for o in n.output}
    assert producers[conv1.input[0]].op_type == "DequantizeLinear" and producers[conv1.input[1]].op_type == "DequantizeLinear"
    assert conv1.input[2] == "b"
    # No output quantisation: the Conv writes c straight to the Relu.
    assert next(n for n in int8.graph.node if n.op_type == "Relu").input[0] == "c"
    # The MatMul reads r unquantised (its own Q/DQ pair is the Conv's), in FP16.
    matmul = next(n for n in int8.graph.node if n.op_type == "MatMul")
    assert producers[matmul.input[0]].op_type == "Cast" and producers[matmul.input[0]].input[0] == "r"
    assert producers["y"].op_type == "Cast"
    # Weights per output channel, symmetric: zero points are all zero.
    w_scale = next(i for i in int8.graph.initializer if i.name == producers[conv1.input[1]].input[1])
    w = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "w"))
    np.testing.assert_allclose(numpy_helper.to_array(w_scale), np.abs(w).reshape(3, -1).max(axis=1) / 127, rtol=1e-6)
    for init in int8.graph.initializer:
        if init.data_type == TensorProto.INT8 and init.name.endswith("zero_point"):
            assert not numpy_helper.to_array(init).any()
    assert activation_scales(int8) == scales
    got = run(int8, samples[0])
    want = run(model, samples[0])
    for name in ("z", "y"):
        assert got[name].dtype == np.float32
        np.testing.assert_allclose(got[name], want[name], atol=0.1 * np.abs(want[name]).max())


def test_quantize_int8_calibration_methods(tmp_path):
    conv_graph(tmp_path / "fp32.onnx")
    g = rng(20)
    samples = [{"x": g.standard_normal((1, 2, 5, 5)).astype(np.float32)} for _ in range(4)]
    samples[0]["x"][0, 0, 0, 0] = 40.0  # one outlier: min-max follows it, the others need not
    minmax = quantize_int8(tmp_path / "fp32.onnx", tmp_path / "a.onnx", samples, "minmax")
    percentile = quantize_int8(tmp_path / "fp32.onnx", tmp_path / "b.onnx", samples, "percentile")
    assert minmax["x"] == pytest.approx(40 / 127, rel=1e-6)
    assert percentile["x"] < minmax["x"]
    with pytest.raises(ValueError, match=r"calibration method must be one of \['entropy', 'minmax', 'percentile'\], got 'max'"):
        quantize_int8(tmp_path / "fp32.onnx", tmp_path / "c.onnx", samples, "max")
    with pytest.raises(ValueError, match="no calibration samples for fp32.onnx"):
        quantize_int8(tmp_path / "fp32.onnx", tmp_path / "c.onnx", [])
    assert not (tmp_path / "c.onnx").exists()


def test_quantize_int8_hands_each_method_to_the_calibrator(tmp_path, monkeypatch):
    """Entropy and min-max agree on data this small, so the mapping is checked
    where it is used: the calibration method onnxruntime is asked for."""
    import onnxruntime.quantization as quantization

    conv_graph(tmp_path / "fp32.onnx")
    asked = []

    class Asked(Exception):
        pass

    def quantize_static(*args, calibrate_method, **kwargs):
        asked.append(calibrate_method)
        raise Asked

    monkeypatch.setattr(quantization, "quantize_static", quantize_static)
    for method in ("minmax", "entropy", "percentile"):
        with pytest.raises(Asked):
            quantize_int8(tmp_path / "fp32.onnx", tmp_path / "a.onnx", [{"x": np.ones((1, 2, 5, 5), np.float32)}], method)
    M = quantization.CalibrationMethod
    assert asked == [M.MinMax, M.Entropy, M.Percentile]


def test_gemms_and_custom_ops_read_the_float_tensor_a_conv_quantises(tmp_path):
    """r feeds a Conv (quantised), a PSLA and an Add: the PSLA gets r itself,
    the Add the dequantised copy (TensorRT propagates Q/DQ through it)."""
    w = numpy_helper.from_array(rng(9).standard_normal((3, 3, 1, 1)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Conv", ["r", "w"], ["c"]),
        helper.make_node("PSLA", ["r", "r", "r"], ["p"], domain=registry.DOMAIN, max_disp=1, plugin_version="1"),
        helper.make_node("Add", ["r", "c"], ["a"]),
    ]
    shape = [1, 3, 4, 5]
    model = model_of(nodes, [value("x", shape)], [value("p", shape), value("a", shape)], [w])
    registry.attach_local_functions(model)
    onnx.save(model, str(tmp_path / "fp32.onnx"))
    samples = [{"x": rng(11).standard_normal(shape).astype(np.float32)}]
    scales = quantize_int8(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", samples)
    assert set(scales) == {"r"}
    int8 = onnx.load(str(tmp_path / "int8.onnx"))
    producers = {o: n.op_type for n in int8.graph.node for o in n.output}
    by_type = {n.op_type: n for n in int8.graph.node}
    assert list(by_type["PSLA"].input) == ["r", "r", "r"]
    assert producers[by_type["Conv"].input[0]] == "DequantizeLinear"
    assert producers[by_type["Add"].input[0]] == "DequantizeLinear"
    got, want = run(int8, samples[0]), run(model, samples[0])
    np.testing.assert_array_equal(got["p"], want["p"])  # computed on unrounded values


def test_each_quantised_reader_gets_its_own_pair(tmp_path):
    """Q/DQ go on the inputs of the quantised ops, one pair per reader
    (DedicatedQDQPair): two Convs reading r get two pairs of one scale."""
    w1, w2 = (numpy_helper.from_array(rng(s).standard_normal((3, 3, 1, 1)).astype(np.float32), f"w{s}") for s in (1, 2))
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Conv", ["r", "w1"], ["c1"]),
        helper.make_node("Conv", ["r", "w2"], ["c2"]),
    ]
    shape = [1, 3, 4, 5]
    onnx.save(model_of(nodes, [value("x", shape)], [value("c1", shape), value("c2", shape)], [w1, w2]), str(tmp_path / "fp32.onnx"))
    scales = quantize_int8(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", [{"x": rng(3).standard_normal(shape).astype(np.float32)}])
    int8 = onnx.load(str(tmp_path / "int8.onnx"))
    quantize_r = [n for n in int8.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "r"]
    assert len(quantize_r) == 2 and set(scales) == {"r"}
    readers = {o: [n.op_type for n in int8.graph.node if o in n.input] for q in quantize_r for o in q.output}
    assert sorted(readers.values()) == [["DequantizeLinear"], ["DequantizeLinear"]]


def test_float_inputs_for_gemms_and_custom_ops_drops_pairs_left_unread():
    """A dedicated Q/DQ pair that only a MatMul read goes, with its scale."""
    s = numpy_helper.from_array(np.array(0.1, np.float32), "s_mm")
    s2 = numpy_helper.from_array(np.array(0.2, np.float32), "s_conv")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s_mm"], ["xq_mm"]),
        helper.make_node("DequantizeLinear", ["xq_mm", "s_mm"], ["xdq_mm"]),
        helper.make_node("QuantizeLinear", ["x", "s_conv"], ["xq_conv"]),
        helper.make_node("DequantizeLinear", ["xq_conv", "s_conv"], ["xdq_conv"]),
        helper.make_node("MatMul", ["xdq_mm", "xdq_mm"], ["y"]),
        helper.make_node("Gemm", ["xdq_conv", "x"], ["g"]),
        helper.make_node("Relu", ["xdq_conv"], ["z"]),
    ]
    model = model_of(nodes, [value("x", [2, 2])], [value("y", [2, 2]), value("g", [2, 2]), value("z", [2, 2])], [s, s2])
    assert precision.float_inputs_for_gemms_and_custom_ops(model) == 3
    assert [(n.op_type, list(n.input)) for n in model.graph.node] == [
        ("QuantizeLinear", ["x", "s_conv"]),
        ("DequantizeLinear", ["xq_conv", "s_conv"]),
        ("MatMul", ["x", "x"]),
        ("Gemm", ["x", "x"]),
        ("Relu", ["xdq_conv"]),
    ]
    assert [i.name for i in model.graph.initializer] == ["s_conv"]
    # A node of another domain (one sorting after "vidtrt" too) keeps the copy.
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s_mm"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s_mm"], ["xdq"]),
        helper.make_node("Custom", ["xdq"], ["y"], domain="zz.other"),
    ]
    model = model_of(nodes, [value("x", [2, 2])], [value("y", [2, 2])], [s])
    assert precision.float_inputs_for_gemms_and_custom_ops(model) == 0
    assert [n.op_type for n in model.graph.node] == ["QuantizeLinear", "DequantizeLinear", "Custom"]
    # A dequantised copy that is a graph output stays, with its pair.
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s_mm"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s_mm"], ["xdq"]),
        helper.make_node("MatMul", ["xdq", "xdq"], ["y"]),
    ]
    model = model_of(nodes, [value("x", [2, 2])], [value("y", [2, 2]), value("xdq", [2, 2])], [s])
    assert precision.float_inputs_for_gemms_and_custom_ops(model) == 2
    assert [(n.op_type, list(n.input)) for n in model.graph.node] == [
        ("QuantizeLinear", ["x", "s_mm"]), ("DequantizeLinear", ["xq", "s_mm"]), ("MatMul", ["x", "x"])
    ]
    # A DequantizeLinear of a weight (no QuantizeLinear before it) is not an activation's copy.
    w = numpy_helper.from_array(np.ones((2, 2), np.int8), "wq")
    nodes = [helper.make_node("DequantizeLinear", ["wq", "s_mm"], ["wdq"]), helper.make_node("MatMul", ["x", "wdq"], ["y"])]
    model = model_of(nodes, [value("x", [2, 2])], [value("y", [2, 2])], [w, s])
    assert precision.float_inputs_for_gemms_and_custom_ops(model) == 0
    assert [list(n.input) for n in model.graph.node] == [["wq", "s_mm"], ["x", "wdq"]]


def test_activation_scales_reads_initializers_and_constants_per_tensor_only():
    nodes = [
        helper.make_node("Constant", [], ["s_const"], value=numpy_helper.from_array(np.array(0.25, np.float32))),
        helper.make_node("QuantizeLinear", ["a", "s_init"], ["qa"]),
        helper.make_node("QuantizeLinear", ["b", "s_const"], ["qb"]),
        helper.make_node("QuantizeLinear", ["c", "s_channels", "zp", ], ["qc"], axis=0),
        helper.make_node("QuantizeLinear", ["d", "s_missing"], ["qd"]),
        helper.make_node("DequantizeLinear", ["qa", "s_init"], ["da"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([0.5], np.float32), "s_init"),
        numpy_helper.from_array(np.array([0.1, 0.2], np.float32), "s_channels"),
        numpy_helper.from_array(np.array([0, 0], np.int8), "zp"),
        numpy_helper.from_array(np.zeros(0, np.float32), "s_empty"),
    ]
    nodes.append(helper.make_node("QuantizeLinear", ["e", "s_empty"], ["qe"]))  # no scale at all: skipped
    graph = helper.make_graph(nodes, "g", [], [], inits)
    assert activation_scales(helper.make_model(graph)) == {"a": 0.5, "b": 0.25}


# ---------------------------------------------------------------- calibration files and bundle variants


def test_calibration_samples_round_trip_in_order(tmp_path):
    samples = [{"image": np.full((1, 2), i, np.float32), "state/in": np.arange(i, dtype=np.int64)} for i in range(12)]
    name = save_calibration(tmp_path, "key", samples)
    assert name == "calibration_key.npz"
    with np.load(tmp_path / name) as data:
        assert "00011/state/in" in data.files
    loaded = load_calibration(tmp_path / name)
    assert len(loaded) == 12
    for i, feed in enumerate(loaded):
        assert set(feed) == {"image", "state/in"}
        np.testing.assert_array_equal(feed["image"], np.full((1, 2), i))
        np.testing.assert_array_equal(feed["state/in"], np.arange(i))


class FakeBundle:
    """What write_*_variants use of a bundle: a directory, stages, their FP32 files, a manifest."""

    def __init__(self, directory: Path, stages: dict[str, onnx.ModelProto]):
        self.directory = directory
        self.stages = list(stages)
        for stage, model in stages.items():
            onnx.save(model, str(directory / f"{stage}.onnx"))
        self.manifest = SimpleNamespace(variants={})
        self.saved = 0

    def stage_file(self, stage):
        return self.directory / f"{stage}.onnx"

    def save(self):
        self.saved += 1


def test_write_fp16_variants(tmp_path):
    bundle = FakeBundle(tmp_path, {"a": mixed_graph(), "b": mixed_graph()})
    lines = []
    reports = write_fp16_variants(bundle, ["b"], log=lines.append)
    assert list(reports) == ["b"] and not (tmp_path / "fp16" / "a.onnx").exists()
    assert lines == ["  fp16 b: 3 nodes in FP16, 2 in FP32, 5 casts"]
    variant = bundle.manifest.variants["fp16"]
    assert variant["files"] == {"b": "fp16/b.onnx"} and variant["conversion"] == reports
    assert variant["fp16_ops"] == sorted(precision.FP16_OPS)
    assert bundle.saved == 1 and not list((tmp_path / "fp16").glob("*.tmp"))
    saved = onnx.load(str(tmp_path / "fp16" / "b.onnx"))
    assert saved.SerializeToString() == convert_fp16(mixed_graph())[0].SerializeToString()
    write_fp16_variants(bundle, log=lines.append)  # every stage by default
    assert bundle.manifest.variants["fp16"]["files"] == {"a": "fp16/a.onnx", "b": "fp16/b.onnx"}
    write_fp16_variants(bundle, ["a"], log=lines.append)  # again, into the directory that exists
    assert bundle.manifest.variants["fp16"]["files"] == {"a": "fp16/a.onnx"}


def test_write_int8_variants(tmp_path):
    model = conv_graph(tmp_path / "scratch.onnx")
    bundle = FakeBundle(tmp_path, {"key": model, "nonkey": model})
    feeds = lambda n, s: [{"x": rng(s + i).standard_normal((1, 2, 5, 5)).astype(np.float32)} for i in range(n)]  # noqa: E731
    samples = {"key": feeds(2, 30), "nonkey": feeds(3, 40)}
    lines = []
    counts = write_int8_variants(bundle, samples, ["clip.mp4", Path("other.mp4")], log=lines.append)
    assert counts == {"key": 2, "nonkey": 3}
    assert lines == ["  int8 key: 2 quantised activations from 2 recorded inputs", "  int8 nonkey: 2 quantised activations from 3 recorded inputs"]
    scales = json.loads((tmp_path / "int8" / "scales.json").read_text())
    assert scales["key"]["x"] == pytest.approx(symmetric_scale([f["x"] for f in samples["key"]]), rel=1e-6)
    assert scales["nonkey"]["x"] == pytest.approx(symmetric_scale([f["x"] for f in samples["nonkey"]]), rel=1e-6)
    assert scales == {stage: activation_scales(onnx.load(str(tmp_path / "int8" / f"{stage}.onnx"))) for stage in ("key", "nonkey")}
    variant = bundle.manifest.variants["int8"]
    assert variant == {
        "files": {"key": "int8/key.onnx", "nonkey": "int8/nonkey.onnx"},
        "extra_files": ["int8/calibration_key.npz", "int8/calibration_nonkey.npz", "int8/scales.json"],
        "calibration": {"sources": ["clip.mp4", "other.mp4"], "samples": {"key": 2, "nonkey": 3}, "method": "minmax"},
    }
    assert bundle.saved == 1
    for stage in ("key", "nonkey"):
        loaded = load_calibration(tmp_path / "int8" / f"calibration_{stage}.npz")
        assert [f["x"].tolist() for f in loaded] == [f["x"].tolist() for f in samples[stage]]
    # Calibrated again (other samples), into the int8/ directory that exists.
    assert write_int8_variants(bundle, {"key": feeds(1, 50), "nonkey": feeds(1, 60)}, ["clip.mp4"], log=lambda _: None) == {"key": 1, "nonkey": 1}
    assert len(load_calibration(tmp_path / "int8" / "calibration_key.npz")) == 1


def test_write_int8_variants_refuses_a_stage_without_samples(tmp_path):
    model = conv_graph(tmp_path / "scratch.onnx")
    bundle = FakeBundle(tmp_path, {"key": model, "nonkey": model})
    with pytest.raises(ValueError, match="^no calibration inputs were recorded for stage 'nonkey'; calibrate on videos long enough to reach it$"):
        write_int8_variants(bundle, {"key": [{"x": np.ones((1, 2, 5, 5), np.float32)}], "nonkey": []}, ["clip.mp4"], log=lambda _: None)
    assert "int8" not in bundle.manifest.variants and bundle.saved == 0
