"""Fixed-size NMS benchmark at an RPN's scale: 3840 proposals (the detectors'
constant pre-NMS count) on a 600×1000 image, IoU 0.7, 300 survivors.

Times the PyTorch reference (greedy walk, stops at max_output kept), the fused
host kernel (bitmask NMS: the whole K×K mask, then the scan, see
plugins/fixed_size_nms/fixed_size_nms_kernel.h), the ONNX graph in ONNX
Runtime ([K, K] matrices and the fixed-point Loop) and torchvision.ops.nms
(which always finds every survivor) side by side in one run, with the same
thread count for all. All four must give the same indices. CPU timings are
only meaningful as ratios within one run.

    .venv/bin/python benchmarks/bench_fixed_size_nms.py [--repeat 10] [--onnx-repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx.inliner
import onnxruntime as ort
import torch
import torchvision

from _timing import OpModule, timed

from vidtrt.export.onnx import export_module
from vidtrt.ops import fixed_size_nms
from vidtrt.ops.fixed_size_nms import LOOP_ITERATIONS


def proposals(count: int, seed: int = 0):
    """Boxes of 16..400 px centred anywhere on a 600×1000 image, distinct scores."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(0, 1, (count, 2)) * [1000, 600]
    size = rng.uniform(16, 400, (count, 2))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1).astype(np.float32)
    return torch.from_numpy(boxes), torch.from_numpy(rng.random(count).astype(np.float32))


def loop_passes(path: Path, feeds: dict) -> int:
    """The ONNX function's Loop pass count, read from an inlined copy of the graph."""
    model = onnx.inliner.inline_local_functions(onnx.load(str(path)))
    loop = next(n for n in model.graph.node if n.op_type == "Loop")
    assert loop.output[1].startswith(LOOP_ITERATIONS)
    model.graph.output.append(onnx.helper.make_tensor_value_info(loop.output[1], onnx.TensorProto.INT64, []))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return int(session.run(None, feeds)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=3840)
    parser.add_argument("--iou", type=float, default=0.7)
    parser.add_argument("--max-output", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--onnx-repeat", type=int, default=3, help="the [K, K] graph is slower; fewer runs")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--json", default="benchmarks/results/fixed_size_nms_cpu.json")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    boxes, scores = proposals(args.count)
    attrs = {"iou_threshold": args.iou, "max_output": args.max_output}
    outputs, results = {}, {}
    results["reference"] = timed(lambda: fixed_size_nms(boxes, scores, **attrs), args.repeat)
    outputs["reference"] = fixed_size_nms(boxes, scores, **attrs)
    results["native"] = timed(lambda: fixed_size_nms(boxes, scores, **attrs, impl="native"), args.repeat)
    outputs["native"] = fixed_size_nms(boxes, scores, **attrs, impl="native")
    results["torchvision"] = timed(lambda: torchvision.ops.nms(boxes, scores, args.iou), args.repeat)
    outputs["torchvision"] = torchvision.ops.nms(boxes, scores, args.iou)[: args.max_output].int()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fixed_size_nms.onnx"
        export_module(OpModule("FixedSizeNMS", **attrs), (boxes, scores), path, ["boxes", "scores"], ["keep"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feeds = {"boxes": boxes.numpy(), "scores": scores.numpy()}
        results["onnxruntime"] = timed(lambda: session.run(None, feeds), args.onnx_repeat)
        outputs["onnxruntime"] = torch.from_numpy(session.run(None, feeds)[0])
        passes = loop_passes(path, feeds)

    kept = int((outputs["reference"] >= 0).sum())
    same = {name: bool(torch.equal(out[:kept], outputs["reference"][:kept])) for name, out in outputs.items()}
    median = {k: statistics.median(v) for k, v in results.items()}
    print(f"FixedSizeNMS K={args.count} IoU {args.iou} max_output {args.max_output}, {args.threads} threads, "
          f"{platform.processor() or platform.machine()}")  # fmt: skip
    print(f"{'impl':<12} {'median ms':>10} {'vs native':>10}  same indices")
    for name, ms in median.items():
        print(f"{name:<12} {ms:>10.1f} {ms / median['native']:>9.1f}x  {same[name]}")
    print(f"{kept} kept; the ONNX Loop ran {passes} passes")
    if not all(same.values()):
        print("WARNING: the implementations disagree")

    report = {
        "op": "FixedSizeNMS",
        "shape": {"K": args.count, "max_output": args.max_output, "iou_threshold": args.iou},
        "threads": args.threads,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "onnxruntime": ort.__version__,
        "times_ms": results,
        "median_ms": median,
        "kept": kept,
        "loop_passes": passes,
        "same_indices_as_reference": same,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
