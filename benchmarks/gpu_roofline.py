"""A roofline lower bound on GPU time per frame for each method's paper config:
computed from counts, never measured.

For every stage of each paper config at a 600×1000 frame (the input it
becomes after preprocessing), with random weights (no count depends on them):

- FLOPs: torch's FlopCounterMode over the stage's forward (convolutions,
  matrix products), plus, for vidtrt's custom ops, the fused kernel's work
  (`CustomOp.work`: e.g. relation propagation's 2·N²·(d+D) products, not the
  literal equations' N³), the custom ops running with their host kernels;
- bytes, least traffic: every weight the stage's forward reads, read once,
  and the stage's inputs and outputs crossing memory once. No engine moves less. Beside it, the
  unfused activation traffic: every intermediate tensor written once and read
  once, which an engine that fuses nothing would move.

The bound of a stage on a GPU is max(FLOPs / peak compute, least bytes /
memory bandwidth). FP32 uses the FP32 peak and 4-byte tensors. FP16 uses the
FP16 tensor-core peak and 2-byte tensors. A frame's bound follows the
schedule: key/non-key at interval l, MFSA's batch stage once per B frames,
the other stages once per frame. The GPU figures are published peak
specifications (GPUS below). Real engines reach a fraction of them, so the
bound says how fast the engines can at best run. It is not an estimate of how
fast they will run.

    .venv/bin/python benchmarks/gpu_roofline.py [--configs psla_r101_rfcn,...]
        [--json benchmarks/results/gpu_roofline.json] [--markdown docs/GPU_ROOFLINE.md table]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from vidtrt.core.preprocess import Preprocessor
from vidtrt.methods import method_of_config
from vidtrt.ops import registry

# Published peak specifications (dense, no sparsity), boost clocks of the
# reference boards, from NVIDIA's architecture whitepapers (Turing TU102,
# Ampere GA102, Ada AD102). FP16: tensor cores with FP16 accumulation, the
# highest figure, as a lower bound on time must assume the fastest path;
# FP32 accumulation is half of it on these GeForce boards (kept beside it).
GPUS = {
    "RTX 2080 Ti": {"fp32_tflops": 13.4, "fp16_tensor_tflops": 107.6, "fp16_tensor_fp32_acc_tflops": 53.8, "bandwidth_gbs": 616.0},
    "RTX 3090": {"fp32_tflops": 35.6, "fp16_tensor_tflops": 142.0, "fp16_tensor_fp32_acc_tflops": 71.0, "bandwidth_gbs": 936.0},
    "RTX 4090": {"fp32_tflops": 82.6, "fp16_tensor_tflops": 330.3, "fp16_tensor_fp32_acc_tflops": 165.2, "bandwidth_gbs": 1008.0},
}

# What each paper reports (shared/reference/FACTS.md), for the table.
PAPER_SPEED = {
    "psla_r101_rfcn": "30.8 fps Titan V (PSLA+RFU+DenseFT), 42.0 fps (PSLA only)",
    "impression_r101": "50 ms (20 fps) GTX 1060",
    "mega_r101": "114.5 ms (8.7 fps) RTX 2080 Ti",
    "selsa_troi_r50_dc5": "not given (mmtracking SELSA R50: 7.2 fps)",
    "mfsa_r101": "66.2 ms (15.1 fps) RTX 2080 Ti",
}
CONFIGS = tuple(PAPER_SPEED)


def calls_per_frame(method_name: str, schedule: dict) -> dict[str, float]:
    """How often each stage runs per frame under the config's default schedule
    (checked against call counts of the real pipelines in the tests of this
    script's helpers: key 1/l and non-key (l-1)/l; MFSA's batch 1/B)."""
    if method_name in ("psla", "impression"):
        interval = schedule["key_interval"]
        return {"key": 1 / interval, "nonkey": (interval - 1) / interval}
    if method_name == "mfsa":
        return {"frame": 1.0, "batch": 1 / schedule["batch_frames"]}
    return {"frame": 1.0, "head": 1.0}  # troi, mega: a frame stage and a head per frame


class _ActivationBytes(TorchDispatchMode):
    """Sums the bytes of every tensor an aten op produces, and notes the
    storage of every tensor an op reads (to tell the weights a stage really
    uses from the rest of the detector it holds)."""

    def __init__(self):
        super().__init__()
        self.bytes = 0
        self.read: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        for a in list(args) + list((kwargs or {}).values()):
            for t in a if isinstance(a, (tuple, list)) else (a,):
                if isinstance(t, torch.Tensor) and t.device.type != "meta":
                    self.read.add(t.untyped_storage().data_ptr())
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.bytes += t.numel() * t.element_size()
        return out


class _CustomOpWork:
    """Makes every custom op called through a vidtrt module run its host
    kernel and adds up the fused kernel's counted work."""

    def __init__(self):
        self.flops = 0.0
        self.bytes = 0.0
        self._patched: list[tuple[object, str, object]] = []

    def __enter__(self):
        ops = {id(op.function): op for op in registry.registered_ops().values()}
        for module in [m for name, m in sys.modules.items() if name.startswith("vidtrt.") and m is not None]:
            for attr, value in list(vars(module).items()):
                if id(value) in ops and callable(value):
                    self._patched.append((module, attr, value))
                    setattr(module, attr, self._wrap(ops[id(value)]))
        return self

    def _wrap(self, op):
        def counted(*args, **kwargs):
            kwargs.pop("impl", None)
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            attrs = {k: v for k, v in kwargs.items() if k in op.attributes}
            names = [n for n in op.attributes if n not in attrs]
            attrs.update(zip(names, [a for a in args if not isinstance(a, torch.Tensor)]))
            work = op.work(tensors, attrs)
            self.flops += work["flops"]
            self.bytes += work["bytes"]
            return op.function(*args, **kwargs, impl="native")

        return counted

    def __exit__(self, *exc):
        for module, attr, value in reversed(self._patched):
            setattr(module, attr, value)


def _tensor_bytes(values) -> int:
    total = 0
    for v in values if isinstance(values, (tuple, list)) else (values,):
        if isinstance(v, torch.Tensor):
            total += v.numel() * v.element_size()
        elif isinstance(v, (tuple, list)):
            total += _tensor_bytes(v)
    return total


@torch.no_grad()
def count_config(config_name: str, frame_hw=(600, 1000), seed: int = 0, log=print) -> dict:
    method = method_of_config(config_name)
    cfg = method.config(config_name)
    _, _, padded = Preprocessor(**dataclasses.asdict(cfg.preprocess)).plan(*frame_hw)
    torch.manual_seed(seed)
    detector = method.build_detector(cfg)
    samples = method.stage_samples(detector, seed, *padded)
    detector = copy.deepcopy(detector).fold_bn().eval()  # the graphs hold folded batch norms, as exported
    schedule = method.default_schedule(cfg)
    per_frame = calls_per_frame(method.name, schedule)
    stages = {}
    for stage, module in method.stage_modules(detector).items():
        sample = samples[stage]
        start = time.perf_counter()
        with _CustomOpWork() as custom, FlopCounterMode(display=False) as flops, _ActivationBytes() as activations:
            out = module(*sample)
        # The weights the forward read (a stage module may hold the whole detector).
        seen, weight_bytes = set(), 0
        for t in list(module.parameters()) + list(module.buffers()):
            ptr = t.untyped_storage().data_ptr()
            if ptr not in seen and ptr in activations.read:
                seen.add(ptr)
                weight_bytes += t.numel() * 4  # FP32
        io_bytes = _tensor_bytes(sample) + _tensor_bytes(out)
        total_flops = float(flops.get_total_flops()) + custom.flops
        stages[stage] = {
            "calls_per_frame": per_frame.get(stage, 0.0),
            "gflops": total_flops / 1e9,
            "custom_op_gflops": custom.flops / 1e9,
            "weights_mb_fp32": weight_bytes / 1e6,
            "io_mb_fp32": io_bytes / 1e6,
            "least_mb_fp32": (weight_bytes + io_bytes) / 1e6,
            "unfused_activation_mb_fp32": 2 * activations.bytes / 1e6,
            "count_s": round(time.perf_counter() - start, 1),
        }
        log(f"  {config_name}/{stage}: {total_flops / 1e9:.1f} GFLOP, weights {weight_bytes / 1e6:.0f} MB, "
            f"I/O {io_bytes / 1e6:.0f} MB ({time.perf_counter() - start:.0f} s)")  # fmt: skip
    return {"config": config_name, "method": method.name, "frame_hw": list(frame_hw), "input_hw": list(padded),
            "schedule": schedule, "stages": stages}  # fmt: skip


def bounds(result: dict) -> dict:
    """ms lower bounds per stage and per frame, per GPU and precision."""
    out = {}
    for gpu, spec in GPUS.items():
        for precision, tflops, scale in (("fp32", spec["fp32_tflops"], 1.0), ("fp16", spec["fp16_tensor_tflops"], 0.5)):
            per_stage = {}
            for stage, s in result["stages"].items():
                compute_ms = s["gflops"] / (tflops * 1e3) * 1e3
                memory_ms = s["least_mb_fp32"] * scale / (spec["bandwidth_gbs"] * 1e3) * 1e3
                per_stage[stage] = {"ms": max(compute_ms, memory_ms), "bound_by": "compute" if compute_ms >= memory_ms else "memory"}
            frame_ms = sum(per_stage[st]["ms"] * s["calls_per_frame"] for st, s in result["stages"].items())
            out[f"{gpu} {precision}"] = {"stages": per_stage, "frame_ms": frame_ms, "fps": 1e3 / frame_ms}
    return out


def markdown(results: list[dict]) -> str:
    gpus = list(GPUS)
    head = "| config | stage (runs per frame) | GFLOP | least MB (FP32) | " + " | ".join(
        f"{g} FP32 / FP16 ms" for g in gpus) + " |"  # fmt: skip
    lines = [head, "|" + "---|" * (4 + len(gpus))]
    for r in results:
        b = r["bounds"]
        for stage, s in r["stages"].items():
            cells = [f"{b[f'{g} fp32']['stages'][stage]['ms']:.2f} / {b[f'{g} fp16']['stages'][stage]['ms']:.2f}" for g in gpus]
            lines.append(f"| {r['config']} | {stage} ({s['calls_per_frame']:.2g}) | {s['gflops']:.1f} | {s['least_mb_fp32']:.0f} | "
                         + " | ".join(cells) + " |")  # fmt: skip
        cells = [f"**{b[f'{g} fp32']['frame_ms']:.2f} / {b[f'{g} fp16']['frame_ms']:.2f}**" for g in gpus]
        lines.append(f"| {r['config']} | **per frame** | | | " + " | ".join(cells) + " |")
    lines += ["", "| config | the paper's measured speed | bound in fps, FP32 / FP16 |", "|---|---|---|"]
    for r in results:
        b = r["bounds"]
        fps = "; ".join(f"{g}: {b[f'{g} fp32']['fps']:.0f} / {b[f'{g} fp16']['fps']:.0f}" for g in gpus)
        paper = PAPER_SPEED.get(r["config"], "-")
        lines.append(f"| {r['config']} | {paper} | {fps} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--frame", default="600x1000")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default="benchmarks/results/gpu_roofline.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    frame_hw = tuple(int(v) for v in args.frame.lower().split("x"))
    results = []
    for name in args.configs.split(","):
        print(f"{name}: counting at {frame_hw[0]}x{frame_hw[1]}", flush=True)
        r = count_config(name, frame_hw)
        r["bounds"] = bounds(r)
        results.append(r)
    report = {
        "what": "roofline lower bounds on GPU ms/frame computed from FLOP and byte counts; NOT measurements",
        "gpus": GPUS,
        "assumptions": __doc__.split("\n\n")[1:4],
        "torch": torch.__version__,
        "machine": platform.machine(),
        "results": results,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(results))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
