"""Precision variants of stage graphs.

TensorRT 11 builds strongly typed networks only: the FP16 and INT8 builder
flags and the INT8 calibrators are gone, so precision is a property of the
ONNX graph. That also means every variant runs, and is measured, in ONNX
Runtime on the CPU.

FP16 (``convert_fp16``): a node computes in FP16 when its op type is in
``FP16_OPS`` (or it is a custom op whose registry entry allows FP16) and every
non-constant float tensor it reads or writes has rank ≥ 3 — feature maps and
pooled RoI features. That keeps FP32 for everything of rank ≤ 2: boxes,
anchors and their decoding, scores, class logits, NMS and TopK inputs — and
for ops never in the list: Softmax (its logits), Exp, TopK,
FixedSizeNMS, Range, Resize and shape arithmetic. Casts are inserted at
every FP32↔FP16 boundary; stage inputs and outputs stay FP32.

GEMMs are the exception to the rank rule: MatMul and Gemm run in FP16 in FP16
graphs whatever the rank of their operands (fully connected layers on [N, D]
included), and so do the MatMuls inside the custom ops' model-local ONNX
functions (``half_function_gemms``). TensorRT-RTX has no FP32 GEMM on Turing
(SM75), so an FP16 graph with one FP32 GEMM would not build there.

INT8 (``quantize_int8``): explicit QuantizeLinear/DequantizeLinear pairs from
onnxruntime.quantization (QDQ format, symmetric INT8 activations per tensor
and weights per output channel, as TensorRT expects), on convolutions only,
calibrated on recorded stage inputs; custom-op nodes stay in float.
Biases stay float: TensorRT rejects the INT32 DequantizeLinear that
onnxruntime writes for a quantised bias, and folds a float bias into the INT8
convolution itself. MatMul/Gemm (fully connected layers, relation modules,
the GEMMs inside the custom ops' functions) run in FP16: TensorRT-RTX has no
INT8 GEMM on Turing and no FP32 GEMM there either, and one INT8 graph serves
every target. The convolutions hold almost all of the detectors' FLOPs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..ops import registry

FP16_OPS = frozenset(
    {
        "Conv", "ConvTranspose", "MatMul", "Gemm", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "MaxPool",
        "AveragePool", "GlobalAveragePool", "Add", "Sub", "Mul", "Div", "Concat", "Slice", "Reshape",
        "Transpose", "Squeeze", "Unsqueeze", "Split", "Pad", "Identity", "Where", "ReduceMean", "Flatten",
    }
)  # fmt: skip
# Compute in FP16 in FP16 graphs whatever their operands' rank, and in INT8
# graphs (see above).
GEMM_OPS = frozenset({"MatMul", "Gemm"})
# What INT8 graphs quantise.
INT8_OPS = ("Conv",)
FLOAT = TensorProto.FLOAT
HALF = TensorProto.FLOAT16


def _tensor_types(model: onnx.ModelProto) -> dict[str, tuple[int, int | None]]:
    """name → (element type, rank or None) for every typed value in the graph."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        t = vi.type.tensor_type
        types[vi.name] = (t.elem_type, len(t.shape.dim) if t.HasField("shape") else None)
    for init in g.initializer:
        types[init.name] = (init.data_type, len(init.dims))
    return types


def convert_fp16(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    """Returns the FP16 variant of an FP32 stage graph and a report
    (nodes in FP16 / FP32 by op type, casts inserted)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    types = _tensor_types(model)
    constants: dict[str, np.ndarray] = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    custom_fp16 = {name for name, op in registry.registered_ops().items() if op.fp16}

    def is_float(name: str) -> bool:
        return bool(name) and types.get(name, (None,))[0] == FLOAT

    def eligible(node) -> bool:
        allowed = node.op_type in FP16_OPS if node.domain in ("", "ai.onnx") else (
            node.domain == registry.DOMAIN and node.op_type in custom_fp16
        )
        if not allowed:
            return False
        names = [n for n in list(node.input) + list(node.output) if n]
        # A value shape inference could not type (an op of a domain it does
        # not know) may be FP32: nothing to cast it from, so the node stays.
        if any(n not in types for n in names):
            return False
        floats = [n for n in names if is_float(n)]
        if not floats:
            return False
        if node.domain in ("", "ai.onnx") and node.op_type in GEMM_OPS:
            return True
        for name in floats:
            if name in constants:
                continue
            rank = types.get(name, (None, None))[1]
            if rank is None or rank < 3:
                return False
        return True

    nodes = list(graph.node)  # one wrapper per node: protobuf hands out new wrappers on every access
    half = [eligible(n) for n in nodes]
    half_tensors = {o for n, h in zip(nodes, half) if h for o in n.output if is_float(o)}

    # Graph outputs computed in FP16 get an internal name; a final Cast restores the FP32 output.
    # In the outputs' order, so that the file is the same from run to run
    # (a set's order changes with the interpreter's string hashing).
    renamed = {o.name: f"{o.name}__fp16" for o in graph.output if o.name in half_tensors}
    for node in nodes:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
        for i, name in enumerate(node.output):
            if name in renamed:
                node.output[i] = renamed[name]
    half_tensors = {renamed.get(t, t) for t in half_tensors}

    new_nodes: list[onnx.NodeProto] = []
    casts: dict[tuple[str, int], str] = {}
    half_constants: dict[str, str] = {}
    new_initializers: list[onnx.TensorProto] = []

    def cast(name: str, to: int) -> str:
        key = (name, to)
        if key not in casts:
            out = f"{name}__to_{'fp16' if to == HALF else 'fp32'}"
            new_nodes.append(helper.make_node("Cast", [name], [out], to=to, name=f"{out}_cast"))
            casts[key] = out
        return casts[key]

    def half_constant(name: str) -> str:
        if name not in half_constants:
            out = f"{name}__fp16"
            new_initializers.append(numpy_helper.from_array(constants[name].astype(np.float16), out))
            half_constants[name] = out
        return half_constants[name]

    counts: dict[str, dict[str, int]] = {"fp16": {}, "fp32": {}}
    for node, in_half in zip(nodes, half):
        bucket = counts["fp16" if in_half else "fp32"]
        bucket[node.op_type] = bucket.get(node.op_type, 0) + 1
        if in_half:
            for i, name in enumerate(node.input):
                # Already FP16 (renamed graph outputs included), or not a float tensor.
                if name in half_tensors or not is_float(name):
                    continue
                node.input[i] = half_constant(name) if name in constants else cast(name, HALF)
        else:
            for i, name in enumerate(node.input):
                if name in half_tensors:
                    node.input[i] = cast(name, FLOAT)
        new_nodes.append(node)
    for original, internal in renamed.items():
        new_nodes.append(helper.make_node("Cast", [internal], [original], to=FLOAT, name=f"{original}_output_cast"))

    del graph.node[:]
    graph.node.extend(new_nodes)
    graph.initializer.extend(new_initializers)
    _prune_unused(graph)
    function_gemms = half_function_gemms(model)
    del graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model, full_check=True)

    report = {
        "fp16_nodes": sum(counts["fp16"].values()),
        "fp32_nodes": sum(counts["fp32"].values()),
        "casts_inserted": len(casts) + len(renamed),
        "fp16_op_types": counts["fp16"],
        "fp32_op_types": {k: v for k, v in counts["fp32"].items() if k != "Constant"},
        "function_gemms_in_fp16": function_gemms,
    }
    return model, report


def half_function_gemms(model: onnx.ModelProto) -> dict[str, int]:
    """Makes every MatMul/Gemm inside the model's local functions — including
    those in the functions' subgraphs (a Loop body) — compute in FP16, in
    place: operands are cast to FP16 and the product cast back to the type of
    the first operand (CastLike, since function bodies are not typed).
    Returns the count per function.

    The functions are what TensorRT runs when our plugins are not loaded
    (always, on TensorRT-RTX); one function per op serves every call site in
    the graph, so this is a property of the whole (FP16 or INT8) graph."""
    counts: dict[str, int] = {}
    for function in model.functions:
        count = _half_gemms_in(function.node, f"{function.name}__gemm")
        if count:
            counts[function.name] = count
    return counts


def _half_gemms_in(container, prefix: str) -> int:
    """Rewrites the GEMMs of a repeated NodeProto field (a function's or a
    subgraph's nodes) and recurses into subgraph attributes; returns how many."""
    count = 0
    rewritten: list[onnx.NodeProto] = []
    for node in list(container):
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                count += _half_gemms_in(attr.g.node, f"{prefix}{count}_")
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    count += _half_gemms_in(g.node, f"{prefix}{count}_")
        if node.op_type not in GEMM_OPS or node.domain not in ("", "ai.onnx"):
            rewritten.append(node)
            continue
        tag = f"{prefix}{count}"
        halves = []
        for i, name in enumerate(node.input):
            if not name:
                halves.append(name)
                continue
            rewritten.append(helper.make_node("Cast", [name], [f"{tag}_in{i}_fp16"], to=HALF))
            halves.append(f"{tag}_in{i}_fp16")
        gemm = onnx.NodeProto()
        gemm.CopyFrom(node)
        del gemm.input[:]
        gemm.input.extend(halves)
        gemm.output[0] = f"{tag}_out_fp16"
        rewritten.append(gemm)
        rewritten.append(helper.make_node("CastLike", [gemm.output[0], node.input[0]], [node.output[0]]))
        count += 1
    del container[:]
    container.extend(rewritten)
    return count


def half_unquantized_gemms(model: onnx.ModelProto) -> int:
    """In a QDQ graph, makes every main-graph MatMul/Gemm that reads no
    DequantizeLinear output compute in FP16 (casts around it); returns how
    many. Quantised GEMMs are INT8 in TensorRT and stay as they are."""
    graph = model.graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    constants = {init.name: init for init in graph.initializer}
    nodes = list(graph.node)
    rewritten: list[onnx.NodeProto] = []
    count = 0
    for node in nodes:
        if node.op_type not in GEMM_OPS or node.domain not in ("", "ai.onnx") or any(i in dequantized for i in node.input):
            rewritten.append(node)
            continue
        halves = []
        for i, name in enumerate(node.input):
            if not name:
                halves.append(name)
            elif name in constants and constants[name].data_type == FLOAT:
                half = numpy_helper.from_array(numpy_helper.to_array(constants[name]).astype(np.float16), f"{name}__fp16")
                if half.name not in constants:
                    constants[half.name] = half
                    graph.initializer.append(half)
                halves.append(half.name)
            else:
                out = f"{name}__{node.name or count}_fp16_{i}"
                rewritten.append(helper.make_node("Cast", [name], [out], to=HALF))
                halves.append(out)
        product = f"{node.output[0]}__fp16"
        gemm = onnx.NodeProto()
        gemm.CopyFrom(node)
        del gemm.input[:]
        gemm.input.extend(halves)
        gemm.output[0] = product
        rewritten.append(gemm)
        rewritten.append(helper.make_node("Cast", [product], [node.output[0]], to=FLOAT))
        count += 1
    del graph.node[:]
    graph.node.extend(rewritten)
    _prune_unused(graph)
    return count


def _prune_unused(graph: onnx.GraphProto) -> None:
    """Drops FP32 constants and initializers whose only readers now use FP16 copies."""
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if n.op_type == "Constant" and n.output[0] not in used]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def quantize_int8(fp32_path: Path, out_path: Path, samples: list[dict[str, np.ndarray]], method: str = "minmax") -> dict:
    """Writes an INT8 QDQ variant of a stage graph calibrated on ``samples``
    (each a feed dict of the stage's inputs); returns the activation scales."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not samples:
        raise ValueError(f"no calibration samples for {fp32_path.name}")
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise ValueError(f"calibration method must be one of {sorted(methods)}, got {method!r}")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(samples)

        def get_next(self):
            return next(self._it, None)

    tmp = out_path.with_name(out_path.name + ".tmp")
    quantize_static(
        str(fp32_path),
        str(tmp),
        Reader(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(INT8_OPS),
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=methods[method],
        # Q/DQ go on the inputs of the quantised ops only (TensorRT's placement):
        # no output quantisation, and one pair per quantised reader. GEMMs and
        # custom ops that read the same tensor get the float tensor back
        # (float_inputs_for_gemms_and_custom_ops).
        extra_options={
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "DedicatedQDQPair": True,
            "OpTypesToExcludeOutputQuantization": list(INT8_OPS),
            # TensorRT rejects DequantizeLinear of INT32 (a quantised bias).
            "QuantizeBias": False,
        },
    )
    model = onnx.load(str(tmp))
    float_inputs_for_gemms_and_custom_ops(model)
    half_unquantized_gemms(model)
    half_function_gemms(model)
    del model.graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(tmp))
    os.replace(tmp, out_path)
    return activation_scales(model)


def float_inputs_for_gemms_and_custom_ops(model: onnx.ModelProto) -> int:
    """Gives every GEMM and vidtrt custom op that reads a quantised activation
    the float tensor instead of its DequantizeLinear output, in place; returns
    how many inputs were rewired.

    onnxruntime's quantiser hands every reader of a tensor it quantises for a
    Conv the dequantised copy. TensorRT then runs a GEMM with one Q/DQ operand
    and one float weight in FP32, which Turing cannot build, and a custom op
    (its plugin or function) would compute on rounded values. Other readers
    (Add, Concat, Shape, ...) keep the copy: TensorRT propagates Q/DQ through
    them as it places them. Pairs nobody reads any more are dropped."""
    graph = model.graph
    quantized = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    original = {n.output[0]: quantized[n.input[0]] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in quantized}
    count = 0
    for node in graph.node:
        gemm = node.domain in ("", "ai.onnx") and node.op_type in GEMM_OPS
        if gemm or node.domain == registry.DOMAIN:
            for i, name in enumerate(node.input):
                if name in original:
                    node.input[i] = original[name]
                    count += 1
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.output[0] not in used]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    _prune_unused(graph)  # their scales and zero points
    return count


def activation_scales(model: onnx.ModelProto) -> dict[str, float]:
    """Per-tensor scales of the QuantizeLinear nodes (what TensorRT will use)."""
    inits = {i.name: i for i in model.graph.initializer}
    consts = {n.output[0]: n.attribute[0].t for n in model.graph.node if n.op_type == "Constant" and n.attribute}
    scales = {}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear":
            tensor = inits.get(node.input[1]) or consts.get(node.input[1])
            if tensor is not None:
                value = numpy_helper.to_array(tensor)
                if value.size == 1:
                    scales[node.input[0]] = float(value.reshape(-1)[0])
    return scales


def write_fp16_variants(bundle, stages: Iterable[str] | None = None, log=print) -> dict:
    """Adds fp16/<stage>.onnx for every stage to the bundle and records them in its manifest."""
    directory = bundle.directory / "fp16"
    directory.mkdir(exist_ok=True)
    files, reports = {}, {}
    for stage in stages or bundle.stages:
        model, report = convert_fp16(onnx.load(str(bundle.stage_file(stage))))
        path = directory / f"{stage}.onnx"
        tmp = path.with_name(path.name + ".tmp")
        onnx.save(model, str(tmp))
        os.replace(tmp, path)
        files[stage] = f"fp16/{stage}.onnx"
        reports[stage] = report
        log(f"  fp16 {stage}: {report['fp16_nodes']} nodes in FP16, {report['fp32_nodes']} in FP32, {report['casts_inserted']} casts")
    bundle.manifest.variants["fp16"] = {"files": files, "conversion": reports, "fp16_ops": sorted(FP16_OPS)}
    bundle.save()
    return reports


def save_calibration(directory: Path, stage: str, samples: list[dict[str, np.ndarray]]) -> str:
    """Stores a stage's calibration inputs (sample i, input name → array) as one .npz."""
    path = directory / f"calibration_{stage}.npz"
    arrays = {f"{i:05d}/{name}": value for i, feed in enumerate(samples) for name, value in feed.items()}
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path.name


def load_calibration(path: Path) -> list[dict[str, np.ndarray]]:
    with np.load(path) as data:
        samples: dict[int, dict[str, np.ndarray]] = {}
        for key in data.files:
            index, name = key.split("/", 1)
            samples.setdefault(int(index), {})[name] = data[key]
    return [samples[i] for i in sorted(samples)]


def write_int8_variants(bundle, samples: dict[str, list[dict[str, np.ndarray]]], sources: list[str], method="minmax", log=print) -> dict:
    """Quantises every stage on its recorded inputs; saves graphs, calibration data and scales."""
    directory = bundle.directory / "int8"
    directory.mkdir(exist_ok=True)
    files, extra, scales, counts = {}, [], {}, {}
    for stage in bundle.stages:
        stage_samples = samples.get(stage, [])
        if not stage_samples:
            raise ValueError(
                f"no calibration inputs were recorded for stage {stage!r}; calibrate on videos long enough to reach it"
            )
        path = directory / f"{stage}.onnx"
        scales[stage] = quantize_int8(bundle.stage_file(stage), path, stage_samples, method)
        files[stage] = f"int8/{stage}.onnx"
        extra.append(f"int8/{save_calibration(directory, stage, stage_samples)}")
        counts[stage] = len(stage_samples)
        log(f"  int8 {stage}: {len(scales[stage])} quantised activations from {len(stage_samples)} recorded inputs")
    (directory / "scales.json").write_text(json.dumps(scales, indent=2) + "\n")
    extra.append("int8/scales.json")
    bundle.manifest.variants["int8"] = {
        "files": files,
        "extra_files": extra,
        "calibration": {"sources": [str(s) for s in sources], "samples": counts, "method": method},
    }
    bundle.save()
    return counts
