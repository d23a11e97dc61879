"""Largest intermediate tensors of every stage graph at the paper's scale.

For each method's paper config, every stage is exported at the input a
600×1000 frame becomes (Preprocessor.plan: 608×1008 after padding), with
random weights (shapes do not depend on them). The vidtrt local functions
are inlined — the fallbacks TensorRT-RTX runs, having no plugins — and ONNX
shape inference with data propagation runs at the concrete input shapes
(vidtrt/export/memory.py, which also resolves Loop bodies). Reported per
stage: the largest intermediate tensor (name, producing op, shape, dtype,
bytes), the top 5, the largest inside each inlined function, everything over
1 GiB, and every tensor whose shape stayed unknown (named, never skipped).

    .venv/bin/python benchmarks/bench_stage_memory.py
    .venv/bin/python benchmarks/bench_stage_memory.py --configs psla_small troi_small --frame 240x320

Exporting the full-size models takes minutes and a few GB of memory.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
import tempfile
import time
from pathlib import Path

import onnx
import torch

from vidtrt.export.memory import TensorSize, tensor_sizes
from vidtrt.export.onnx import export_module
from vidtrt.methods import method_of_config
from vidtrt.core.preprocess import Preprocessor

PAPER_CONFIGS = ("psla_r101_rfcn", "selsa_troi_r50_dc5", "mfsa_r101")
GIB = 1 << 30
RESULTS = Path(__file__).parent / "results" / "stage_memory.json"


def _mb(n: int | None) -> str:
    return "unknown" if n is None else f"{n / 1e6:.1f} MB"


def _entry(t: TensorSize) -> dict:
    return {**t.as_dict(), "megabytes": None if t.bytes is None else round(t.bytes / 1e6, 3)}


@torch.no_grad()
def measure(config_name: str, frame_hw: tuple[int, int], seed: int, top: int, log=print) -> dict:
    method = method_of_config(config_name)
    cfg = method.config(config_name)
    preprocess = Preprocessor(**dataclasses.asdict(cfg.preprocess))
    _, resized, padded = preprocess.plan(*frame_hw)
    torch.manual_seed(seed)
    detector = method.build_detector(cfg)  # random weights: no shape depends on them
    samples = method.stage_samples(detector, seed, *padded)
    export_detector = copy.deepcopy(detector).fold_bn().eval()  # as `vidtrt export` does
    stages = {}
    with tempfile.TemporaryDirectory() as directory:
        for stage, module in method.stage_modules(export_detector).items():
            sample = samples[stage]
            start = time.perf_counter()
            model = export_module(
                module, sample, Path(directory) / f"{stage}.onnx", module.input_names, module.output_names,
                method.dynamic_axes(stage),
            )  # fmt: skip
            exported = time.perf_counter() - start
            input_shapes = {name: list(t.shape) for name, t in zip(module.input_names, sample)}
            start = time.perf_counter()
            sizes = tensor_sizes(model, input_shapes)
            analysed = time.perf_counter() - start
            known = [t for t in sizes if t.bytes is not None]
            unknown = [t for t in sizes if t.bytes is None]
            per_function: dict[str, TensorSize] = {}
            for t in known:  # largest first
                if t.function and t.function not in per_function:
                    per_function[t.function] = t
            stages[stage] = {
                "input_shapes": input_shapes,
                "functions_inlined": sorted(f"{f.domain}.{f.name}" for f in model.functions),
                "tensors": len(sizes),
                "largest": _entry(known[0]) if known else None,
                "top": [_entry(t) for t in known[:top]],
                "largest_per_function": {name: _entry(t) for name, t in sorted(per_function.items())},
                "over_1_gib": [_entry(t) for t in known if t.bytes > GIB],
                "unknown": [_entry(t) for t in unknown],
                "export_s": round(exported, 1),
                "analysis_s": round(analysed, 1),
            }
            log(
                f"  {config_name}/{stage}: largest {known[0].op} {list(known[0].shape)} {_mb(known[0].bytes)}"
                f"{f', {len(unknown)} tensors of unknown size' if unknown else ''} (export {exported:.0f} s)"
            )
    return {
        "config": config_name,
        "frame_hw": list(frame_hw),
        "resized_hw": list(resized),
        "input_hw": list(padded),
        "stages": stages,
    }


def markdown(results: list[dict]) -> str:
    lines = [
        "| config | stage | largest tensor (op, shape, dtype) | size | 2nd–5th | largest in a function fallback | unknown |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for stage, s in r["stages"].items():
            big = s["largest"]
            rest = ", ".join(f"{t['op']} {_mb(t['bytes'])}" for t in s["top"][1:])
            fallback = "; ".join(
                f"{name.removeprefix('vidtrt.')}: {t['op']} {t['shape']} {_mb(t['bytes'])}"
                for name, t in s["largest_per_function"].items()
            ) or "—"
            unknown = ", ".join(f"{t['op']} {t['shape']}" for t in s["unknown"]) or "none"
            lines.append(
                f"| {r['config']} | {stage} | {big['op']} {big['shape']} {big['dtype'].lower()} | {_mb(big['bytes'])} "
                f"| {rest} | {fallback} | {unknown} |"
            )
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=list(PAPER_CONFIGS))
    p.add_argument("--frame", default="600x1000", help="frame size HxW before preprocessing (default 600x1000)")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    frame_hw = tuple(int(v) for v in args.frame.lower().split("x"))
    results = [measure(name, frame_hw, args.seed, args.top) for name in args.configs]
    over = [(r["config"], stage, t) for r in results for stage, s in r["stages"].items() for t in s["over_1_gib"]]
    unknown = [(r["config"], stage, t) for r in results for stage, s in r["stages"].items() for t in s["unknown"]]
    report = {
        "benchmark": "largest intermediate tensors of the stage graphs, local functions inlined, ONNX shape inference",
        "versions": {"onnx": onnx.__version__, "torch": torch.__version__, "python": platform.python_version()},
        "limit_bytes": GIB,
        "results": results,
        "over_1_gib": [{"config": c, "stage": s, **t} for c, s, t in over],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(markdown(results))
    print()
    for c, s, t in over:
        print(f"OVER 1 GiB: {c}/{s}: {t['name']} ({t['op']}) {t['shape']} {t['dtype']} {_mb(t['bytes'])}")
    for c, s, t in unknown:
        print(f"UNKNOWN SIZE: {c}/{s}: {t['name']} ({t['op']}) {t['shape']}: dims {t['unknown_dims']} not inferred")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
