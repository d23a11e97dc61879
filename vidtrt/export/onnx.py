"""The one ONNX export entry point every exporter uses.

Uses PyTorch's TorchScript-based exporter (``dynamo=False``): its symbolic
functions emit custom-domain nodes (``vidtrt::PSLA``) with typed attributes
that ONNX Runtime and TensorRT's parser accept. The torch.export-based exporter
failed on custom-domain ops in our trials (schema look-ups); see
docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import onnx
import torch

from ..ops import registry

DEFAULT_OPSET = 17


def export_module(
    module: torch.nn.Module,
    args: tuple,
    path: str | os.PathLike,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """Exports ``module(*args)`` to ``path`` and returns the checked model.

    Custom ops become ``vidtrt`` domain nodes and the model carries their
    local functions, so ONNX Runtime runs the file as is. The file appears
    only once it is complete and passes ``onnx.checker`` (full check).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = module.training
    module.eval()
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*TorchScript-based ONNX export.*")
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx\.")
            # Input checks compare shapes while tracing; they hold for the traced shapes
            # and the graph does not depend on them.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"vidtrt\.")
            torch.onnx.export(
                module,
                tuple(args),
                tmp,
                dynamo=False,
                opset_version=opset,
                input_names=list(input_names),
                output_names=list(output_names),
                # Axes of names the module does not have (a method lists every name its
                # stages can have; which exist can depend on the config) are left out.
                dynamic_axes={k: dict(v) for k, v in (dynamic_axes or {}).items() if k in {*input_names, *output_names}},
                do_constant_folding=True,
            )
        model = onnx.load(tmp)
        _materialise_shared_initializers(model)
        registry.attach_local_functions(model)
        model.producer_name = "vidtrt"
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a bundle is meant to be shared
        os.replace(tmp, path)
    finally:
        module.train(was_training)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return model


def _materialise_shared_initializers(model: onnx.ModelProto) -> None:
    """Replaces ``Identity(initializer)`` nodes with a copy of the initializer.

    The exporter deduplicates equal parameters (e.g. the all-zero biases of
    BN-folded convolutions) and re-exposes them through Identity nodes; a
    weight or bias that is not an initializer hides it from tools that fold,
    quantise or convert weights (onnxruntime.quantization, FP16 conversion).
    """
    inits = {i.name: i for i in model.graph.initializer}
    keep = []
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            model.graph.initializer.append(copy)
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)
