"""Sizes of the intermediate tensors of an ONNX graph at concrete input shapes.

What a graph materialises is what decides whether it runs where memory is
bounded — in particular the portable ONNX functions of the custom ops, which
TensorRT runs when it has no plugin for them (TensorRT-RTX always). The
analysis:

1. inlines the model-local functions (``onnx.inliner.inline_local_functions``),
   so the fallbacks' own tensors are seen;
2. fixes every graph input's dims to the given concrete values;
3. runs ONNX shape inference with data propagation (shape arithmetic such as
   Shape → Gather → Concat → Reshape resolves to numbers);
4. handles what ONNX shape inference leaves open around ``Loop``: it infers a
   Loop body without the values of the enclosing scope and never knows the
   trip count. Here the small integer values of the enclosing graph (shape
   arithmetic and constants) are evaluated, the body is inferred as a graph of
   its own with those values as constants, and the scan outputs get
   [trip count] + the body's per-iteration shape; the enclosing graph is then
   inferred again with those shapes.

Every node output is reported with its producer, shape, dtype and bytes; a
dim still unknown afterwards is reported as such (``None`` bytes), never
skipped. Tensors in a Loop body are per iteration: one iteration's exist at a
time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import onnx
import onnx.inliner
import onnx.shape_inference
from onnx import helper, numpy_helper

# Ops evaluated to propagate small integer values (shape arithmetic) into Loop bodies.
_VALUE_OPS = frozenset(
    {
        "Add", "Sub", "Mul", "Div", "Mod", "Pow", "Sqrt", "Neg", "Abs", "Floor", "Ceil", "Round", "Sign", "Clip",
        "Max", "Min", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or", "Where",
        "Cast", "Concat", "Gather", "Reshape", "Squeeze", "Unsqueeze", "Slice", "Identity", "Transpose", "Flatten",
        "Expand", "Tile", "Range", "ConstantOfShape", "ReduceProd", "ReduceSum", "ReduceMax", "ReduceMin",
    }
)  # fmt: skip
_GRAPH_TYPES = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
_VALUE_LIMIT = 4096  # elements; larger values are data, not shape arithmetic
# Values defined inside a local function are renamed "<domain>.<name>::<value>"
# before inlining, so that each tensor can be traced to the function it came from.
FUNCTION_TAG = "::"


@dataclass(frozen=True)
class TensorSize:
    name: str
    op: str  # producing node's op type
    node: str  # producing node's name ("" when unnamed)
    scope: str  # "" for the main graph, else e.g. "Loop loop_45 body (per iteration)"
    shape: tuple  # ints; an unknown dim is its symbol or "?"
    dtype: str
    bytes: int | None  # None when a dim (or the element size) is unknown

    @property
    def unknown_dims(self) -> list[int]:
        return [i for i, d in enumerate(self.shape) if not isinstance(d, int)]

    @property
    def function(self) -> str:
        """The inlined local function the tensor comes from ("domain.Name"), or ""."""
        return self.name.split(FUNCTION_TAG, 1)[0] if FUNCTION_TAG in self.name else ""

    def as_dict(self) -> dict:
        return {
            "name": self.name, "op": self.op, "node": self.node, "scope": self.scope,
            "shape": list(self.shape), "dtype": self.dtype, "bytes": self.bytes,
            "unknown_dims": self.unknown_dims, "function": self.function,
        }  # fmt: skip


def fix_input_shapes(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]]) -> None:
    """Sets every graph input's dims to the given values (in place); every
    input must be given, with its rank, and static dims must agree."""
    given = dict(input_shapes)
    for value in model.graph.input:
        if value.name not in given:
            raise ValueError(f"no concrete shape given for graph input {value.name!r}")
        dims = value.type.tensor_type.shape.dim
        shape = list(given.pop(value.name))
        if len(dims) != len(shape):
            raise ValueError(f"input {value.name!r} has rank {len(dims)}, got shape {shape}")
        if any(dim.HasField("dim_value") and dim.dim_value != size for dim, size in zip(dims, shape)):
            raise ValueError(f"input {value.name!r} has static dims {_dims(value)}, got shape {shape}")
        for dim, size in zip(dims, shape):
            dim.Clear()
            dim.dim_value = int(size)
    if given:
        raise ValueError(f"shapes given for names that are not graph inputs: {sorted(given)}")


def tensor_sizes(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]], inline: bool = True) -> list[TensorSize]:
    """Every intermediate tensor of ``model`` (node outputs, Constant nodes
    excepted) at the given input shapes, Loop bodies included, largest first;
    tensors with unknown bytes come last."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    if inline:
        for function in model.functions:
            _tag_function_values(function)
        model = onnx.inliner.inline_local_functions(model)
    fix_input_shapes(model, input_shapes)
    sizes, _ = _analyse(model, "")
    return sorted(sizes, key=lambda t: (t.bytes is None, -(t.bytes or 0), t.scope, t.name))


def _tag_function_values(function: onnx.FunctionProto) -> None:
    """Renames the values a function defines (its body and subgraphs, formal
    inputs and outputs excepted) to ``<domain>.<name>::<value>``, in place."""
    formal = set(function.input) | set(function.output)
    prefix = f"{function.domain}.{function.name}{FUNCTION_TAG}"

    def tag(name: str) -> str:
        return name if not name or name in formal else prefix + name

    def rename(nodes, graph=None):
        if graph is not None:
            for value in list(graph.input) + list(graph.output) + list(graph.value_info):
                value.name = tag(value.name)
            for init in graph.initializer:
                init.name = tag(init.name)
        for node in nodes:
            node.input[:] = [tag(n) for n in node.input]
            node.output[:] = [tag(n) for n in node.output]
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    rename(attribute.g.node, attribute.g)
                elif attribute.type == onnx.AttributeProto.GRAPHS:
                    for g in attribute.graphs:
                        rename(g.node, g)

    rename(function.node)


def _dims(value: onnx.ValueInfoProto) -> tuple | None:
    t = value.type.tensor_type
    if not t.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim)


def _itemsize(elem_type: int) -> int | None:
    if elem_type in (onnx.TensorProto.UNDEFINED, onnx.TensorProto.STRING):
        return None
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).itemsize


def _types(graph: onnx.GraphProto) -> dict[str, onnx.ValueInfoProto]:
    return {v.name: v for v in list(graph.input) + list(graph.value_info) + list(graph.output)}


def _analyse(model: onnx.ModelProto, scope: str) -> tuple[list[TensorSize], dict[str, onnx.ValueInfoProto]]:
    """Infers ``model``'s graph (resolving its Loops) and returns its node
    outputs' sizes and the inferred types by name. Modifies ``model``: nodes
    whose small values are known are replaced by Constants (ONNX's data
    propagation does not cover every op, e.g. Range), then it is inferred
    again, until nothing new is learnt."""
    produced = [(n.op_type, n.name, list(n.output), [a.name for a in n.attribute if a.type in _GRAPH_TYPES]) for n in model.graph.node]
    opsets = list(model.opset_import)
    loop_outputs: dict[str, tuple[int, tuple]] = {}
    bodies: dict[str, list[TensorSize]] = {}
    values: dict[str, np.ndarray] = {}
    for _ in range(32):
        _set_value_info(model.graph, loop_outputs)
        _fold_known_values(model.graph, values)
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
        types = _types(inferred.graph)
        known = _known_values(inferred.graph, types, opsets)
        changed = bool(set(known) - set(values))
        values = known
        for node in inferred.graph.node:
            if node.op_type != "Loop":
                continue
            body_sizes, outputs = _analyse_loop(model, node, types, values, scope)
            bodies[node.output[0]] = body_sizes
            for name, (elem_type, shape) in outputs.items():
                if loop_outputs.get(name) != (elem_type, shape):
                    loop_outputs[name] = (elem_type, shape)
                    changed = True
        if not changed:
            break

    sizes = []
    for op_type, node_name, outputs, subgraphs in produced:
        if op_type == "Constant":
            continue
        for name in outputs:
            if not name:
                continue
            value = types.get(name)
            dims = _dims(value) if value is not None else None
            elem_type = value.type.tensor_type.elem_type if value is not None else onnx.TensorProto.UNDEFINED
            shape = dims if dims is not None else ("?rank",)
            itemsize = _itemsize(elem_type)
            complete = dims is not None and itemsize is not None and all(isinstance(d, int) for d in dims)
            sizes.append(
                TensorSize(
                    name, op_type, node_name, scope, shape,
                    helper.tensor_dtype_to_string(elem_type).removeprefix("TensorProto.") if elem_type else "unknown",
                    int(np.prod(dims, dtype=np.int64)) * itemsize if complete else None,
                )  # fmt: skip
            )
        if op_type != "Loop":
            for attribute in subgraphs:
                # Not analysed: one entry of unknown size rather than silently nothing.
                sizes.append(TensorSize(f"{node_name or outputs[0]}.{attribute}", op_type, node_name, scope, ("?subgraph",), "unknown", None))
    for body in bodies.values():
        sizes.extend(body)
    return sizes, types


def _fold_known_values(graph: onnx.GraphProto, values: dict[str, np.ndarray]) -> None:
    """Replaces every node all of whose outputs have known values by Constants."""
    nodes = []
    for node in graph.node:
        outputs = [name for name in node.output if name]
        if node.op_type in ("Constant", "Loop") or not outputs or not all(name in values for name in outputs):
            nodes.append(node)
            continue
        for name in outputs:
            nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(values[name], name)))
    del graph.node[:]
    graph.node.extend(nodes)


def _set_value_info(graph: onnx.GraphProto, shapes: dict[str, tuple[int, tuple]]) -> None:
    keep = [v for v in graph.value_info if v.name not in shapes]
    del graph.value_info[:]
    graph.value_info.extend(keep)
    for name, (elem_type, shape) in shapes.items():
        graph.value_info.append(helper.make_tensor_value_info(name, elem_type, [d if isinstance(d, int) else None for d in shape]))


def _known_values(graph: onnx.GraphProto, types: dict[str, onnx.ValueInfoProto], opsets: list) -> dict[str, np.ndarray]:
    """Small integer/bool/float values computable from constants and known shapes."""
    from onnx.reference import ReferenceEvaluator

    values: dict[str, np.ndarray] = {}
    for init in graph.initializer:
        if np.prod(init.dims, dtype=np.int64) <= _VALUE_LIMIT:
            values[init.name] = numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant":
            value = _constant_value(node)
            if value is not None and value.size <= _VALUE_LIMIT:
                values[node.output[0]] = value
        elif node.op_type in ("Shape", "Size"):
            dims = _dims(types[node.input[0]]) if node.input[0] in types else None
            if dims is not None and all(isinstance(d, int) for d in dims):
                if node.op_type == "Size":
                    values[node.output[0]] = np.array(np.prod(dims, dtype=np.int64), dtype=np.int64)
                    continue
                attrs = {a.name: a.i for a in node.attribute}
                start, end = attrs.get("start", 0), attrs.get("end", len(dims))
                values[node.output[0]] = np.array(dims[slice(start, end)], dtype=np.int64)
        elif node.op_type in _VALUE_OPS and all(not name or name in values for name in node.input):
            inputs = [name for name in node.input if name]
            if any(values[name].size > _VALUE_LIMIT for name in inputs):
                continue
            single = helper.make_graph(
                [node], "value", [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(values[name].dtype), values[name].shape) for name in inputs],
                [helper.make_tensor_value_info(name, onnx.TensorProto.UNDEFINED, None) for name in node.output],
            )  # fmt: skip
            try:
                results = ReferenceEvaluator(helper.make_model(single, opset_imports=opsets)).run(None, {name: values[name] for name in inputs})
            except Exception:  # an op the reference cannot run here: the value stays unknown
                continue
            for name, result in zip(node.output, results):
                if np.asarray(result).size <= _VALUE_LIMIT:
                    values[name] = np.asarray(result)
    return values


def _constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    for attribute in node.attribute:
        if attribute.name == "value":
            return numpy_helper.to_array(attribute.t)
        if attribute.name == "value_int":
            return np.array(attribute.i, dtype=np.int64)
        if attribute.name == "value_ints":
            return np.array(list(attribute.ints), dtype=np.int64)
        if attribute.name == "value_float":
            return np.array(attribute.f, dtype=np.float32)
        if attribute.name == "value_floats":
            return np.array(list(attribute.floats), dtype=np.float32)
    return None


def _outer_references(graph: onnx.GraphProto) -> list[str]:
    """Names a (sub)graph reads but does not define, nested subgraphs included."""
    defined = {v.name for v in graph.input} | {i.name for i in graph.initializer}
    used: list[str] = []
    for node in graph.node:
        for name in node.input:
            if name and name not in defined and name not in used:
                used.append(name)
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                for name in _outer_references(attribute.g):
                    if name not in defined and name not in used:
                        used.append(name)
        defined.update(node.output)
    return used


def _analyse_loop(model, node, types, values, scope) -> tuple[list[TensorSize], dict[str, tuple[int, tuple]]]:
    """The body of Loop ``node`` as a model of its own: outer values known
    here become constants, other outer tensors inputs of their inferred
    shapes. Returns the body's tensor sizes and the Loop's output shapes."""
    body = next(a.g for a in node.attribute if a.name == "body")
    new_inputs = list(body.input)
    constants = []
    for index, (formal, actual) in enumerate(zip(body.input[2:], node.input[2:])):
        # Loop-carried values: typed as their initial value.
        if actual in types:
            new_inputs[2 + index] = helper.make_value_info(formal.name, types[actual].type)
    for name in _outer_references(body):
        if name in values:
            constants.append(numpy_helper.from_array(values[name], name))
        elif name in types:
            new_inputs.append(types[name])
        else:
            new_inputs.append(helper.make_tensor_value_info(name, onnx.TensorProto.UNDEFINED, None))
    graph = helper.make_graph(list(body.node), body.name or "body", new_inputs, list(body.output), initializer=constants)
    standalone = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    label = f"Loop {node.name or node.output[0]} body (per iteration)"
    sizes, body_types = _analyse(standalone, f"{scope} > {label}" if scope else label)

    trip = values.get(node.input[0]) if node.input and node.input[0] else None
    trip_count = int(trip.reshape(-1)[0]) if trip is not None and trip.size == 1 else "?trip_count"
    carried = len(node.input) - 2
    outputs = {}
    for index, (name, body_out) in enumerate(zip(node.output, list(body.output)[1:])):
        value = body_types.get(body_out.name)
        dims = _dims(value) if value is not None else None
        elem_type = value.type.tensor_type.elem_type if value is not None else onnx.TensorProto.UNDEFINED
        if dims is None:
            continue
        outputs[name] = (elem_type, dims if index < carried else (trip_count, *dims))
    return sizes, outputs
