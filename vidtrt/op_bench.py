"""`vidtrt selfcheck --bench`: every custom op at its paper's scale, timed as the
PyTorch reference, the fused host kernel, ONNX Runtime running the fused
kernel, and ONNX Runtime running the op's decomposition, side by side in one
run with one thread count, beside the machine's measured sgemm ceiling.

CPU timings mean something only as ratios within one run. Each ONNX Runtime
measurement runs in a child process so that its peak resident memory is its
own (the decomposition of MostSimilarRoIAlign materialises similarity
matrices; the fused kernel must not).
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from .export.onnx import export_module
from .ops import registry
from .runtime.backends import onnxruntime_fused_ops as fused_ops
from .selfcheck import _OpModule

SGEMM_SIZE = 2048


def _timed(fn, repeat: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def sgemm_ceiling(threads: int, size: int = SGEMM_SIZE, repeat: int = 5) -> dict:
    """GFLOP/s of ONNX Runtime's MatMul (MLAS sgemm) and torch.mm on size³ FP32."""
    x = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["a", "b"], ["c"])], "sgemm",
        [x("a", onnx.TensorProto.FLOAT, [size, size]), x("b", onnx.TensorProto.FLOAT, [size, size])],
        [x("c", onnx.TensorProto.FLOAT, [size, size])],
    )  # fmt: skip
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((size, size), dtype=np.float32) for _ in range(2))
    flops = 2.0 * size**3
    ort_ms = statistics.median(_timed(lambda: session.run(None, {"a": a, "b": b}), repeat))
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    torch_ms = statistics.median(_timed(lambda: torch.mm(ta, tb), repeat))
    return {
        "size": size,
        "onnxruntime_mlas_gflops": flops / (ort_ms * 1e-3) / 1e9,
        "torch_gflops": flops / (torch_ms * 1e-3) / 1e9,
    }


def _ort_worker(path: str, feeds_path: str, mode: str, threads: int, repeat: int, queue) -> None:
    """Child process: one ONNX Runtime session, its timings and peak RSS."""
    try:
        feeds = dict(np.load(feeds_path))
        session = fused_ops.create_session(path, custom_ops=mode, threads=threads)
        out = session.run(None, feeds)[0]
        times = _timed(lambda: session.run(None, feeds), repeat, warmup=0)
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
        np.save(feeds_path + f".{mode}.npy", out)
        queue.put({"times_ms": times, "peak_rss_mb": rss_mb})
    except Exception as err:  # reported in the table
        queue.put({"error": f"{type(err).__name__}: {err}"})


def _in_child(path: Path, feeds_path: Path, mode: str, threads: int, repeat: int) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_ort_worker, args=(str(path), str(feeds_path), mode, threads, repeat, queue))
    child.start()
    result = queue.get()
    child.join()
    return result


def bench_op(op: registry.CustomOp, out_dir: Path, threads: int, repeat: int, slow_repeat: int, ceiling: float, log=print) -> dict:
    tensors, attrs, work = op.paper_problem()
    shapes = " ".join("x".join(map(str, t.shape)) for t in tensors)
    row: dict = {"op": op.op_type, "inputs": shapes, "attrs": attrs, "flops": work["flops"], "bytes": work["bytes"]}
    times: dict[str, list[float]] = {}
    with torch.no_grad():
        log(f"  {op.op_type}: reference")
        reference = op.function(*tensors, **attrs, impl="reference")
        times["reference"] = _timed(lambda: op.function(*tensors, **attrs, impl="reference"), slow_repeat, warmup=0)
        log(f"  {op.op_type}: native")
        native = op.function(*tensors, **attrs, impl="native")
        times["native"] = _timed(lambda: op.function(*tensors, **attrs, impl="native"), repeat)
    path = out_dir / f"{op.op_type}_paper.onnx"
    export_module(_OpModule(op, attrs), tensors, path, op.input_names, op.output_names)
    feeds_path = out_dir / f"{op.op_type}_paper_feeds.npz"
    np.savez(feeds_path, **{name: t.numpy() for name, t in zip(op.input_names, tensors)})
    modes = [fused_ops.FUSED] if fused_ops.available() else []
    rss, deviation = {}, {}
    for mode in modes + [fused_ops.DECOMPOSED]:
        key = f"onnxruntime_{mode}"
        log(f"  {op.op_type}: {key}")
        result = _in_child(path, feeds_path, mode, threads, repeat if mode == fused_ops.FUSED else slow_repeat)
        if "error" in result:
            row[f"{key}_error"] = result["error"]
            continue
        times[key] = result["times_ms"]
        rss[key] = result["peak_rss_mb"]
        got = torch.from_numpy(np.load(str(feeds_path) + f".{mode}.npy"))
        deviation[key] = float((got.double() - reference.double()).abs().max())
    deviation["native"] = float((native.double() - reference.double()).abs().max())
    median = {k: statistics.median(v) for k, v in times.items()}
    row.update(times_ms=times, median_ms=median, peak_rss_mb=rss, max_abs_deviation_vs_reference=deviation)
    native_s = median["native"] * 1e-3
    row["native_gflops"] = work["flops"] / native_s / 1e9
    row["native_gbs"] = work["bytes"] / native_s / 1e9
    row["native_fraction_of_sgemm_ceiling"] = row["native_gflops"] / ceiling
    for key in ("onnxruntime_fused", "onnxruntime_decomposed"):
        if key in median:
            row[f"{key}_vs_native"] = median[key] / median["native"]
    return row


def run(ops: list[str] | None = None, threads: int | None = None, repeat: int = 5, slow_repeat: int = 2, log=print) -> dict:
    """The whole comparison; ``ops`` narrows it to some op types."""
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    table = registry.registered_ops()
    unknown = sorted(set(ops or []) - set(table))
    if unknown:
        raise ValueError(f"unknown op(s) {', '.join(unknown)}; choose from {', '.join(table)}")
    log(f"sgemm ceiling ({SGEMM_SIZE}³ FP32, {threads} threads)")
    ceiling = sgemm_ceiling(threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, op in table.items():
            if (ops and name not in ops) or op.paper_problem is None:
                continue
            rows.append(bench_op(op, Path(tmp), threads, repeat, slow_repeat, ceiling["onnxruntime_mlas_gflops"], log))
    return {
        "what": "custom ops at paper scale: reference / native / ONNX Runtime fused / ONNX Runtime decomposition, "
        "medians of one run; ratios only",
        "threads": threads,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "fused_ops_built": fused_ops.available(),
        "sgemm_ceiling": ceiling,
        "ops": rows,
    }


def format_table(report: dict) -> str:
    ceiling = report["sgemm_ceiling"]["onnxruntime_mlas_gflops"]
    lines = [
        f"sgemm ceiling (ONNX Runtime MLAS, {report['sgemm_ceiling']['size']}³): {ceiling:.0f} GFLOP/s; "
        f"torch: {report['sgemm_ceiling']['torch_gflops']:.0f} GFLOP/s; {report['threads']} threads",
        f"{'op':<20} {'reference':>10} {'native':>9} {'ort fused':>10} {'ort decomp':>11} {'fused/nat':>9} "
        f"{'GFLOP/s':>8} {'of ceil':>7} {'GB/s':>6} {'RSS fused':>9} {'RSS decomp':>10}",
    ]
    for r in report["ops"]:
        m, rss = r["median_ms"], r["peak_rss_mb"]
        cell = lambda k: f"{m[k]:.1f}" if k in m else "-"  # noqa: E731
        mem = lambda k: f"{rss[k]:.0f}MB" if k in rss else "-"  # noqa: E731
        ratio = f"{r['onnxruntime_fused_vs_native']:.2f}x" if "onnxruntime_fused_vs_native" in r else "-"
        lines.append(
            f"{r['op']:<20} {cell('reference'):>10} {cell('native'):>9} {cell('onnxruntime_fused'):>10} "
            f"{cell('onnxruntime_decomposed'):>11} {ratio:>9} {r['native_gflops']:>8.1f} "
            f"{r['native_fraction_of_sgemm_ceiling']:>6.1%} {r['native_gbs']:>6.1f} {mem('onnxruntime_fused'):>9} "
            f"{mem('onnxruntime_decomposed'):>10}"
        )
    lines.append("times in ms (medians); GFLOP/s, GB/s and 'of ceil' are the native kernel's")
    return "\n".join(lines)
