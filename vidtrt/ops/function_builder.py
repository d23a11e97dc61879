"""A small builder for the ONNX function bodies of custom ops.

Keeps the decompositions readable: ``b.op("Add", x, y)`` returns the name of
the new value; constants and attribute references are one call each.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .registry import DOMAIN


class FunctionBuilder:
    def __init__(
        self, name: str, inputs: Sequence[str], outputs: Sequence[str], attributes: Sequence[str], opset: int,
        prefix: str = "",
    ):  # fmt: skip
        self.name = name
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.attributes = list(attributes)
        self.opset = opset
        # Prefixed names keep a subgraph's (Loop/Scan body) values apart from the enclosing scope's.
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self._count = 0

    def _fresh(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}{hint}_{self._count}"

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs) -> str:
        out = out or self._fresh(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def const(self, value, dtype=np.int64, hint: str = "const") -> str:
        out = self._fresh(hint)
        tensor = numpy_helper.from_array(np.asarray(value, dtype=dtype), name=out)
        self.nodes.append(helper.make_node("Constant", [], [out], value=tensor))
        return out

    def attr_int(self, attribute: str) -> str:
        """An int64 scalar holding the value of the function attribute ``attribute``."""
        out = self._fresh(attribute)
        node = helper.make_node("Constant", [], [out])
        ref = onnx.AttributeProto(name="value_int", ref_attr_name=attribute, type=onnx.AttributeProto.INT)
        node.attribute.append(ref)
        self.nodes.append(node)
        return out

    def attr_float(self, attribute: str) -> str:
        """A float32 scalar holding the value of the function attribute ``attribute``."""
        out = self._fresh(attribute)
        node = helper.make_node("Constant", [], [out])
        ref = onnx.AttributeProto(name="value_float", ref_attr_name=attribute, type=onnx.AttributeProto.FLOAT)
        node.attribute.append(ref)
        self.nodes.append(node)
        return out

    def unsqueeze(self, x: str, axes: Sequence[int]) -> str:
        return self.op("Unsqueeze", x, self.const(list(axes)))

    def reshape(self, x: str, shape: str | Sequence[int]) -> str:
        shape_name = shape if isinstance(shape, str) else self.const(list(shape))
        return self.op("Reshape", x, shape_name)

    def reduce_sum(self, x: str, axes: Sequence[int], keepdims: int = 0) -> str:
        return self.op("ReduceSum", x, self.const(list(axes)), keepdims=keepdims)

    def build_graph(self, input_types: Sequence[tuple], output_types: Sequence[tuple]) -> onnx.GraphProto:
        """The nodes as a subgraph (a Loop or Scan body); inputs and outputs
        typed by (element type, shape or None) pairs in order."""
        return helper.make_graph(
            self.nodes,
            self.name,
            [helper.make_tensor_value_info(n, *t) for n, t in zip(self.inputs, input_types)],
            [helper.make_tensor_value_info(n, *t) for n, t in zip(self.outputs, output_types)],
        )

    def build(self, doc: str = "") -> onnx.FunctionProto:
        return helper.make_function(
            DOMAIN,
            self.name,
            self.inputs,
            self.outputs,
            self.nodes,
            opset_imports=[helper.make_opsetid("", self.opset)],
            attributes=self.attributes,
            doc_string=doc,
        )
