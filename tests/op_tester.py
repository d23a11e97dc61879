"""The shared base of the custom-op tests, in the way torchvision's RoIOpTester
serves its RoI ops.

tests/test_<op>.py holds one class, ``Test<Op>(OpTester)``, which says what is
particular to its op: the naive oracle, the tolerances per dtype, the inputs
the ONNX graph is exported with, the graph it expects and the bad inputs the
op refuses. The base gives it

- the three layers behind one call, ``self.run(impl, *inputs, directory=...,
  **attrs)`` for impl in IMPLS: the reference and the fused host kernel
  through the op's public function, and ONNX Runtime on a graph holding the op
  alone (exported once per attributes and input dtypes, then cached);
- ``self.check(...)``: one case on one layer against the oracle, with the
  output dtype and shape, at the tolerance of the output's dtype (an FP16 case
  is compared with the oracle evaluated on the same FP16-rounded inputs);
- the tests every op has: the exported graph's structure
  (test_onnx_graph_structure), the bad inputs it refuses on the reference and
  the native layer (test_bad_input), an unknown impl and the native
  layer's dtype rule (test_bad_impl_and_native_dtype), and the native layer's
  refusal of inputs that require grad (test_native_refuses_gradients);
- small helpers the op tests share (binding calls with defaults, thread-count
  invariance, walking a graph's subgraphs).

Op-specific cases (edge cases, layouts, gradients) stay in the op's class and
use the same calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from vidtrt import _native
from vidtrt.export.onnx import DEFAULT_OPSET, export_module
from vidtrt.ops import registry

from vidtrt.runtime.backends import onnxruntime_fused_ops as fused_ops

# "onnx-fused": the same graph in ONNX Runtime with libvidtrt_ort_ops.so, whose
# kernels run the op (in builds that have it; tests/test_ort_fused_ops.py says
# when they don't).
IMPLS = ("reference", "native", "onnx") + (("onnx-fused",) if fused_ops.available() else ())
EAGER_IMPLS = ("reference", "native")  # the layers a Python caller reaches, which validate their inputs

# Exports and sessions are shared by every test of a run (pytest makes a new
# instance of the class per test): key -> path / session.
_EXPORTS: dict[tuple, Path] = {}
_SESSIONS: dict[tuple, ort.InferenceSession] = {}


class OneOpModule(torch.nn.Module):
    """The op alone, with its attributes fixed: what the graph tests export."""

    def __init__(self, function: Callable, attrs: dict):
        super().__init__()
        self.function, self.attrs = function, attrs

    def forward(self, *inputs):
        return self.function(*inputs, **self.attrs)


def dtype_name(dtype: torch.dtype | None) -> str:
    return "absent" if dtype is None else str(dtype).removeprefix("torch.")


def all_nodes(nodes):
    """The nodes and, recursively, those of their subgraphs (Loop bodies)."""
    for node in nodes:
        yield node
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from all_nodes(attribute.g.node)


def attribute_type(value: Any) -> int:
    """The ONNX attribute type a Python value of the expected attributes stands for."""
    if isinstance(value, int):  # bool included
        return onnx.AttributeProto.INT
    if isinstance(value, float):
        return onnx.AttributeProto.FLOAT
    if isinstance(value, bytes):
        return onnx.AttributeProto.STRING
    raise TypeError(f"no ONNX attribute type for {type(value).__name__}")


class OpTester:
    """Base class of the op test classes; see the module docstring."""

    # ---- what a subclass states
    op_type: ClassVar[str]  # the registry key (ONNX op_type, plugin name)
    # Per output dtype: keyword arguments of np.testing.assert_allclose.
    TOLERANCE: ClassVar[dict[torch.dtype, dict]]
    # Dynamic axes of the exported one-op graph, by input / output name.
    DYNAMIC_AXES: ClassVar[dict[str, dict[int, str]]]
    # The export test_onnx_graph_structure inspects: input dtypes and attributes.
    GRAPH_DTYPES: ClassVar[tuple]
    GRAPH_ATTRS: ClassVar[dict]
    # The node's attributes besides plugin_version / plugin_namespace, as
    # onnx.helper.get_attribute_value reads them; the function's attributes
    # are these names in this order.
    GRAPH_NODE_ATTRIBUTES: ClassVar[dict]
    GRAPH_OUTPUT_DIMS: ClassVar[list | None] = None  # dim_param or dim_value of output 0; None: not checked
    # Keyword arguments of a valid call of the op's public function, and
    # (change, message regex) pairs that make it invalid.
    GOOD: ClassVar[dict]
    BAD_INPUTS: ClassVar[list[tuple[dict, str]]]
    # The message impl="native" gives for float64 in the inputs named by
    # FLOAT64_INPUTS (None: the op refuses float64 on every layer, in BAD_INPUTS).
    NATIVE_FLOAT64_MESSAGE: ClassVar[str | None] = None
    FLOAT64_INPUTS: ClassVar[tuple[str, ...]] = ()
    # The inputs the reference differentiates (its output requires grad when
    # one of them does); the native layer refuses exactly these when they
    # require grad. Every op states it, () included.
    DIFFERENTIABLE_INPUTS: ClassVar[tuple[str, ...]]
    # Whether the native layer's device check can be shown with "meta" tensors
    # (False where the input checks first read values, which a meta tensor has
    # not; a GPU tensor has them, and then meets the same check).
    META_STANDS_IN_FOR_A_GPU: ClassVar[bool] = True

    def oracle(self, *inputs, **attrs):
        """The naive loop the layers are compared with (float64 numpy)."""
        raise NotImplementedError

    def export_inputs(self, dtypes: tuple, attrs: dict) -> tuple:
        """Inputs to export the one-op graph with, one per op input, of these
        dtypes (None: leave that optional input out). Their shapes need not
        be those of the cases run later: the graph's axes are dynamic."""
        raise NotImplementedError

    # ---- the op
    @property
    def op(self) -> registry.CustomOp:
        return registry.registered_ops()[self.op_type]

    @property
    def function(self) -> Callable:
        return self.op.function

    # ---- ONNX export and ONNX Runtime
    def _input_names(self, dtypes: tuple) -> list[str]:
        return [name for name, dtype in zip(self.op.input_names, dtypes) if dtype is not None]

    def _export_key(self, directory, dtypes: tuple, attrs: dict) -> tuple:
        return (self.op_type, str(directory), tuple(dtypes), tuple(sorted(attrs.items())))

    def export_path(self, directory, dtypes: tuple, attrs: dict) -> Path:
        """The one-op graph for these input dtypes and attributes (exported on first use)."""
        key = self._export_key(directory, dtypes, attrs)
        if key not in _EXPORTS:
            label = "_".join([f"{name}{value}" for name, value in attrs.items()] + [dtype_name(d) for d in dtypes])
            path = Path(directory) / f"{self.op_type}_{label}.onnx"
            inputs = tuple(t for t in self.export_inputs(tuple(dtypes), attrs) if t is not None)
            names = self._input_names(dtypes)
            assert len(inputs) == len(names), (names, len(inputs))
            axes = {k: v for k, v in self.DYNAMIC_AXES.items() if k in names or k in self.op.output_names}
            export_module(OneOpModule(self.function, attrs), inputs, path, names, list(self.op.output_names), axes)
            _EXPORTS[key] = path
        return _EXPORTS[key]

    def exported_model(self, directory, dtypes: tuple, attrs: dict) -> onnx.ModelProto:
        return onnx.load(self.export_path(directory, dtypes, attrs))

    def session(self, directory, dtypes: tuple, attrs: dict, fused: bool = False) -> ort.InferenceSession:
        key = self._export_key(directory, dtypes, attrs) + (fused,)
        if key not in _SESSIONS:
            path = self.export_path(directory, dtypes, attrs)
            if fused:
                _SESSIONS[key] = fused_ops.create_session(path, custom_ops=fused_ops.FUSED)
            else:  # the decomposition: no custom-op library registered
                _SESSIONS[key] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return _SESSIONS[key]

    def run_onnx(self, *inputs, directory, fused: bool = False, **attrs) -> torch.Tensor:
        """The op's graph in ONNX Runtime (its decomposition, or the fused
        kernels' library); None inputs are optional ones left out."""
        dtypes = tuple(None if t is None else t.dtype for t in inputs)
        session = self.session(directory, dtypes, attrs, fused)
        feeds = {name: t.numpy() for name, t in zip(self._input_names(dtypes), (t for t in inputs if t is not None))}
        return torch.from_numpy(session.run(None, feeds)[0])

    def run(self, impl: str, *inputs, directory, **attrs) -> torch.Tensor:
        """One of IMPLS: the public function with impl="reference" or
        "native", "onnx" (ONNX Runtime, the graph exported to `directory`, its
        decomposition) or "onnx-fused" (the same graph on the fused kernels)."""
        if impl in ("onnx", "onnx-fused"):
            return self.run_onnx(*inputs, directory=directory, fused=impl == "onnx-fused", **attrs)
        return self.function(*inputs, **attrs, impl=impl)

    # ---- comparison with the oracle
    def output_dtype(self, inputs: tuple) -> torch.dtype:
        """The dtype the op returns for these inputs: that of its first input."""
        return inputs[0].dtype

    def compare(self, got: torch.Tensor, inputs: tuple, attrs: dict, tolerance: dict) -> None:
        """Asserts `got` is the oracle's output; a subclass whose oracle says
        more (near-ties, exact indices) compares its own way."""
        expected = self.oracle(*inputs, **attrs)
        assert tuple(got.shape) == expected.shape
        np.testing.assert_allclose(got.float().numpy(), expected, **tolerance)

    def check(self, impl: str, *inputs, directory, tolerance: dict | None = None, **attrs) -> torch.Tensor:
        """Runs one case on one layer, checks the output's dtype and compares
        it with the oracle at the tolerance of that dtype (or `tolerance`);
        returns the output for further checks."""
        got = self.run(impl, *inputs, directory=directory, **attrs)
        assert got.dtype == self.output_dtype(inputs), (got.dtype, impl)
        self.compare(got, inputs, attrs, self.TOLERANCE[got.dtype] if tolerance is None else tolerance)
        return got

    # ---- helpers
    @staticmethod
    def binding(name: str, **defaults) -> Callable:
        """vidtrt._kernels.<name> with keyword defaults: call(**overrides)."""
        function = getattr(_native.kernels(), name)
        return lambda **overrides: function(**{**defaults, **overrides})

    @staticmethod
    def assert_thread_count_invariant(native: Callable, *args, threads=(1, 2), **kwargs) -> None:
        """The fused kernel gives the same bits whatever its thread count."""
        outputs = [native(*args, **kwargs, num_threads=count) for count in threads]
        for count, out in zip(threads[1:], outputs[1:]):
            torch.testing.assert_close(out, outputs[0], rtol=0, atol=0, msg=lambda m: f"{count} threads: {m}")

    # ---- parametrisation of the shared tests from the subclass's data
    def pytest_generate_tests(self, metafunc):
        # pytest calls a test class's pytest_generate_tests for each of its tests.
        if metafunc.function.__name__ == "test_bad_input":
            metafunc.parametrize(("change", "message"), self.BAD_INPUTS)

    # ---- the tests every op has
    def test_onnx_graph_structure(self, onnx_dir):
        """One node in the vidtrt domain with the op's attributes (typed) and
        its plugin identity, the model-local function attached with the same
        attributes and standard ops only (subgraphs included), the opset
        imports and the output's dims; the full checker passes."""
        model = self.exported_model(onnx_dir, self.GRAPH_DTYPES, self.GRAPH_ATTRS)
        nodes = [n for n in model.graph.node if n.domain == registry.DOMAIN]
        assert [n.op_type for n in nodes] == [self.op_type]
        node = nodes[0]
        attributes = {a.name: a for a in node.attribute}
        expected = {
            **self.GRAPH_NODE_ATTRIBUTES,
            "plugin_version": self.op.plugin_version.encode(),
            "plugin_namespace": registry.DOMAIN.encode(),
        }
        assert {name: onnx.helper.get_attribute_value(a) for name, a in attributes.items()} == expected
        for name, value in expected.items():
            assert attributes[name].type == attribute_type(value), name
        functions = {(f.domain, f.name): f for f in model.functions}
        function = functions[registry.DOMAIN, self.op_type]
        assert list(function.attribute) == list(self.GRAPH_NODE_ATTRIBUTES) == list(self.op.attributes)
        assert all(n.domain == "" for n in all_nodes(function.node))  # standard ops only
        opsets = {i.domain: i.version for i in model.opset_import}
        assert opsets == {"": DEFAULT_OPSET, registry.DOMAIN: registry.DOMAIN_VERSION}
        if self.GRAPH_OUTPUT_DIMS is not None:
            dims = [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
            assert dims == self.GRAPH_OUTPUT_DIMS
        self.check_graph(model, node, function)
        onnx.checker.check_model(model, full_check=True)

    def check_graph(self, model: onnx.ModelProto, node: onnx.NodeProto, function: onnx.FunctionProto) -> None:
        """What test_onnx_graph_structure checks besides the common structure."""

    @pytest.mark.parametrize("impl", EAGER_IMPLS)
    def test_bad_input(self, change, message, impl):
        """Parametrised with BAD_INPUTS; every message names the op first."""
        with pytest.raises(ValueError, match=message) as err:
            self.function(**{**self.GOOD, **change}, impl=impl)
        assert str(err.value).startswith(f"{self.function.__name__}: ")

    def test_bad_impl_and_native_dtype(self):
        # Names sorting before, between and after "native" and "reference": an
        # ordering comparison in place of == would let one of them through.
        for impl in ("cuda", "onnx", "triton"):
            with pytest.raises(ValueError, match="impl must be one of"):
                self.function(**self.GOOD, impl=impl)
        if self.NATIVE_FLOAT64_MESSAGE is not None:
            doubles = {name: self.GOOD[name].double() for name in self.FLOAT64_INPUTS}
            with pytest.raises(ValueError, match=self.NATIVE_FLOAT64_MESSAGE):
                self.function(**{**self.GOOD, **doubles}, impl="native")

    def test_impl_compared_by_value_and_native_on_the_cpu_only(self):
        """``impl`` strings built at run time, as read from a config, are equal
        to the layer names but not the same objects: they select the same
        layers. The fused kernel refuses any device but the CPU ("meta" stands
        in for a GPU), in one line naming the op."""
        want = self.function(**self.GOOD, impl="reference")
        for name in EAGER_IMPLS:
            impl = "".join(list(name))
            assert impl == name and impl is not name
            torch.testing.assert_close(self.function(**self.GOOD, impl=impl), want)
        if not self.META_STANDS_IN_FOR_A_GPU:
            return
        on_meta = {k: v.to("meta") if isinstance(v, torch.Tensor) else v for k, v in self.GOOD.items()}
        with pytest.raises(ValueError, match=rf"^{self.function.__name__}: impl='native' runs on the CPU, got tensors on meta$"):
            self.function(**on_meta, impl="native")

    def test_native_refuses_gradients(self):
        """The fused kernels have no backward. With grad mode on, an input the
        reference differentiates that requires grad makes impl="native" raise
        (naming the op and the inputs, pointing to impl="reference"), and the
        reference does give that input a gradient; an input the reference does
        not differentiate, or any input under torch.no_grad(), runs and
        agrees with the reference."""
        name = self.function.__name__
        float_inputs = [k for k, v in self.GOOD.items() if isinstance(v, torch.Tensor) and v.is_floating_point()]
        assert set(self.DIFFERENTIABLE_INPUTS) <= set(float_inputs)
        cases = [(k,) for k in float_inputs]
        if len(self.DIFFERENTIABLE_INPUTS) > 1:
            cases.append(tuple(self.DIFFERENTIABLE_INPUTS))
        for requiring in cases:
            call = {**self.GOOD, **{k: self.GOOD[k].clone().requires_grad_() for k in requiring}}
            reference = self.function(**call, impl="reference")
            differentiable = [k for k in requiring if k in self.DIFFERENTIABLE_INPUTS]
            assert reference.requires_grad == bool(differentiable), requiring
            if differentiable:
                reference.float().sum().backward()
                assert all(call[k].grad is not None for k in differentiable), requiring
                verb = "requires" if len(differentiable) == 1 else "require"
                message = (
                    rf"^{name}: impl='native' has no backward pass, but {', '.join(differentiable)} {verb} grad; "
                    r"use impl='reference' for gradients"
                )
                with pytest.raises(ValueError, match=message):
                    self.function(**call, impl="native")
                with torch.no_grad():
                    native = self.function(**call, impl="native")
            else:
                native = self.function(**call, impl="native")
            assert not native.requires_grad
            torch.testing.assert_close(native.double(), reference.detach().double(), rtol=1e-5, atol=1e-5)
