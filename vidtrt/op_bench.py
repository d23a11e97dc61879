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


class Sgemm:
    """ONNX Runtime's MatMul (MLAS sgemm) on size³ FP32: the machine's practical
    FP32 ceiling, timed in the same rounds as the ops."""

    def __init__(self, threads: int, size: int = SGEMM_SIZE):
        x = onnx.helper.make_tensor_value_info
        graph = onnx.helper.make_graph(
            [onnx.helper.make_node("MatMul", ["a", "b"], ["c"])], "sgemm",
            [x("a", onnx.TensorProto.FLOAT, [size, size]), x("b", onnx.TensorProto.FLOAT, [size, size])],
            [x("c", onnx.TensorProto.FLOAT, [size, size])],
        )  # fmt: skip
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # see bench_op
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        self.feeds = {n: rng.standard_normal((size, size), dtype=np.float32) for n in ("a", "b")}
        self.size, self.flops = size, 2.0 * size**3
        self.session.run(None, self.feeds)

    def __call__(self):
        self.session.run(None, self.feeds)

    def gflops(self, ms: float) -> float:
        return self.flops / (ms * 1e-3) / 1e9


def _peak_rss_of_this_process_mb() -> float:
    """VmHWM: unlike getrusage's ru_maxrss, which Linux carries across exec
    (a spawned child would report its parent's peak), it is this address
    space's own."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_rss_worker(path: str, feeds_path: str, mode: str, threads: int, queue) -> None:
    """Child process: one ONNX Runtime session run twice; its peak RSS."""
    try:
        feeds = dict(np.load(feeds_path))
        session = fused_ops.create_session(path, custom_ops=mode, threads=threads)
        for _ in range(2):
            session.run(None, feeds)
        queue.put({"peak_rss_mb": _peak_rss_of_this_process_mb()})
    except Exception as err:  # reported in the table
        queue.put({"error": f"{type(err).__name__}: {err}"})


def _peak_rss(path: Path, feeds_path: Path, mode: str, threads: int) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_peak_rss_worker, args=(str(path), str(feeds_path), mode, threads, queue))
    child.start()
    result = queue.get()
    child.join()
    return result


def _once(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def rotated(keys: list[str], round_index: int) -> list[str]:
    """The fast paths' order in one round: each takes its turn right after the
    sgemm. The sgemm moves 48 MB and so evicts the op's inputs from the
    caches; the path timed next pays for fetching them again (about 2 ms of
    PSLA's ~7 at paper scale, measured 2026-12-04), the ones after it do not.
    A fixed order charged that to `native` alone."""
    shift = round_index % len(keys) if keys else 0
    return keys[shift:] + keys[:shift]


def bench_op(op: registry.CustomOp, out_dir: Path, threads: int, repeat: int, slow_repeat: int, sgemm: Sgemm, log=print) -> dict:
    """One op: interleaved rounds of every path (so that drifts of a shared
    machine hit all of them alike), each round also timing the sgemm."""
    tensors, attrs, work = op.paper_problem()
    shapes = " ".join("x".join(map(str, t.shape)) for t in tensors)
    row: dict = {"op": op.op_type, "inputs": shapes, "attrs": attrs, "flops": work["flops"], "bytes": work["bytes"]}
    path = out_dir / f"{op.op_type}_paper.onnx"
    export_module(_OpModule(op, attrs), tensors, path, op.input_names, op.output_names)
    feeds = {name: t.numpy() for name, t in zip(op.input_names, tensors)}
    feeds_path = out_dir / f"{op.op_type}_paper_feeds.npz"
    np.savez(feeds_path, **feeds)

    modes = ([fused_ops.FUSED] if fused_ops.available() else []) + [fused_ops.DECOMPOSED]
    # No spinning pool threads in any session: rounds are interleaved, and a
    # session's threads spinning after its run would take the cores from the
    # path timed next.
    sessions = {
        f"onnxruntime_{m}": fused_ops.create_session(path, custom_ops=m, threads=threads, spinning=False) for m in modes
    }
    kernel_tensors = op.kernel_layout(tensors) if op.kernel_layout else None
    with torch.no_grad():
        paths = {
            "reference": lambda: op.function(*tensors, **attrs, impl="reference"),
            "native": lambda: op.function(*tensors, **attrs, impl="native"),
            # The kernel alone: inputs already in its layout, no copies.
            **({"native_kernel": lambda: op.function(*kernel_tensors, **attrs, impl="native")} if kernel_tensors else {}),
            **{key: (lambda s=s: s.run(None, feeds)) for key, s in sessions.items()},
        }
        outputs = {}
        for key, fn in paths.items():  # warm-up, and the outputs compared below
            log(f"  {op.op_type}: {key}")
            out = fn()
            outputs[key] = torch.from_numpy(np.asarray(out[0])) if key.startswith("onnxruntime") else out
        fast = [k for k in ("native", "native_kernel", "onnxruntime_fused") if k in paths]
        slow = ["reference", "onnxruntime_decomposed"]
        times: dict[str, list[float]] = {k: [] for k in paths}
        ceiling_ms = []
        for r in range(max(repeat, slow_repeat)):
            ceiling_ms.append(_once(sgemm))
            for key in rotated(fast, r) if r < repeat else []:
                times[key].append(_once(paths[key]))
            for key in slow if r < slow_repeat else []:
                times[key].append(_once(paths[key]))
    reference = outputs["reference"].double()
    deviation = {k: float((o.double() - reference).abs().max()) for k, o in outputs.items() if k != "reference"}
    rss = {}
    for mode in modes:
        result = _peak_rss(path, feeds_path, mode, threads)
        if "error" in result:
            row[f"onnxruntime_{mode}_error"] = result["error"]
        else:
            rss[f"onnxruntime_{mode}"] = result["peak_rss_mb"]
    median = {k: statistics.median(v) for k, v in times.items() if v}
    ceiling = sgemm.gflops(statistics.median(ceiling_ms))
    row.update(times_ms=times, median_ms=median, peak_rss_mb=rss, max_abs_deviation_vs_reference=deviation)
    native_s = median["native"] * 1e-3
    row["sgemm_ceiling_gflops"] = ceiling
    row["native_gflops"] = work["flops"] / native_s / 1e9
    row["native_gbs"] = work["bytes"] / native_s / 1e9
    row["native_fraction_of_sgemm_ceiling"] = row["native_gflops"] / ceiling
    # The kernel on inputs in its own layout (the same as native when the op copies nothing).
    kernel_s = median.get("native_kernel", median["native"]) * 1e-3
    row["native_kernel_gflops"] = work["flops"] / kernel_s / 1e9
    row["native_kernel_gbs"] = work["bytes"] / kernel_s / 1e9
    row["native_kernel_fraction_of_sgemm_ceiling"] = row["native_kernel_gflops"] / ceiling
    for key in ("onnxruntime_fused", "onnxruntime_decomposed"):
        if key in median:
            row[f"{key}_vs_native"] = median[key] / median["native"]
    return row


def run(ops: list[str] | None = None, threads: int | None = None, repeat: int = 6, slow_repeat: int = 2, log=print) -> dict:
    """The whole comparison; ``ops`` narrows it to some op types."""
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    table = registry.registered_ops()
    unknown = sorted(set(ops or []) - set(table))
    if unknown:
        raise ValueError(f"unknown op(s) {', '.join(unknown)}; choose from {', '.join(table)}")
    sgemm = Sgemm(threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, op in table.items():
            if (ops and name not in ops) or op.paper_problem is None:
                continue
            rows.append(bench_op(op, Path(tmp), threads, repeat, slow_repeat, sgemm, log))
    return {
        "what": "custom ops at paper scale: reference / native / ONNX Runtime fused / ONNX Runtime decomposition, "
        "medians of one run; ratios only; the fast paths take turns at following the sgemm",
        "threads": threads,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "fused_ops_built": fused_ops.available(),
        "sgemm_ceiling": {"what": "ONNX Runtime MatMul (MLAS) on FP32 size³, timed in every round of every op",
                          "size": SGEMM_SIZE},
        "ops": rows,
    }


def format_table(report: dict) -> str:
    lines = [
        f"sgemm ceiling: ONNX Runtime MLAS on {report['sgemm_ceiling']['size']}³ FP32, {report['threads']} threads, "
        "timed in the same rounds as each op",
        f"{'op':<20} {'reference':>10} {'native':>9} {'ort fused':>10} {'ort decomp':>11} {'fused/nat':>9} "
        f"{'GFLOP/s':>8} {'ceiling':>8} {'of ceil':>7} {'kernel':>7} {'GB/s':>6} {'RSS fused':>9} {'RSS decomp':>10}",
    ]
    for r in report["ops"]:
        m, rss = r["median_ms"], r["peak_rss_mb"]
        cell = lambda k: f"{m[k]:.1f}" if k in m else "-"  # noqa: E731
        mem = lambda k: f"{rss[k]:.0f}MB" if k in rss else "-"  # noqa: E731
        ratio = f"{r['onnxruntime_fused_vs_native']:.2f}x" if "onnxruntime_fused_vs_native" in r else "-"
        lines.append(
            f"{r['op']:<20} {cell('reference'):>10} {cell('native'):>9} {cell('onnxruntime_fused'):>10} "
            f"{cell('onnxruntime_decomposed'):>11} {ratio:>9} {r['native_gflops']:>8.1f} {r['sgemm_ceiling_gflops']:>8.0f} "
            f"{r['native_fraction_of_sgemm_ceiling']:>6.1%} {r['native_kernel_fraction_of_sgemm_ceiling']:>6.1%} "
            f"{r['native_gbs']:>6.1f} {mem('onnxruntime_fused'):>9} "
            f"{mem('onnxruntime_decomposed'):>10}"
        )
    lines.append("times in ms (medians of interleaved rounds); GFLOP/s, GB/s and 'of ceil' are the native op's "
                 "(with its layout copies); 'kernel': the kernel alone on inputs in its layout, as a fraction of "
                 "the ceiling; RSS: peak resident memory of a process running that session")  # fmt: skip
    return "\n".join(lines)
