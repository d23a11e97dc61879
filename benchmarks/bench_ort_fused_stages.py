"""Stage graphs in ONNX Runtime with the custom ops fused (libvidtrt_ort_ops.so)
against the same graphs with the ops' decompositions, side by side in one run.

For each config: the bundle is exported at a reduced input, the pipeline runs
a short synthetic clip on ONNX Runtime (decomposed) recording what every stage
receives, and then each stage is timed on those recorded inputs in
interleaved rounds: fused, decomposed, fused, ... Both sessions run with
ONNX Runtime's pool-thread spinning off, so that one session's spinning threads
do not take the cores from the other's run. CPU timings mean something only as
ratios within one run.

    .venv/bin/python benchmarks/bench_ort_fused_stages.py [--configs psla_r101_rfcn] [--rounds 5]
        [--json benchmarks/results/ort_fused_stages_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch

from vidtrt.calibration.capture import RecordingBackend, fill_unscheduled
from vidtrt.core.preprocess import Preprocessor
from vidtrt.export.exporter import export_bundle
from vidtrt.methods import get_method
from vidtrt.runtime.backends import create_backend
from vidtrt.runtime.backends import onnxruntime_fused_ops as fused_ops
from vidtrt.runtime.pipelines import create_pipeline
from vidtrt.runtime.synthetic import moving_shapes_clip

METHOD_OF = {"psla_r101_rfcn": "psla", "selsa_troi_r50_dc5": "troi", "mfsa_r101": "mfsa"}


def bench_config(config: str, short_side: int, max_long_side: int, rounds: int, threads: int, work: Path, log=print) -> dict:
    method = get_method(METHOD_OF[config])
    cfg = method.configs[config]
    preprocess = type(cfg.preprocess)(**{**cfg.preprocess.__dict__, "short_side": short_side, "max_long_side": max_long_side})
    bundle = export_bundle(method.name, work / config, config_name=config, overrides={"preprocess": preprocess},
                           log=lambda m: None, verify=False)  # fmt: skip
    pre = Preprocessor.from_dict(bundle.manifest.preprocess)
    frames = [pre(f).tensor for f in moving_shapes_clip(num_frames=4, height=240, width=320)]
    sessions = {  # same threads, no spinning (see the module doc)
        mode: create_backend(
            "onnxruntime", bundle, providers=["CPUExecutionProvider"], threads=threads, custom_ops=mode, spinning=False
        )
        for mode in ("fused", "decomposed")
    }
    recorder = RecordingBackend(sessions["decomposed"], max_per_stage=1)
    stream = create_pipeline(recorder).stream()
    for i, image in enumerate(frames):
        stream.push(i, image)
    stream.flush()
    fill_unscheduled(bundle, recorder.records)
    result = {"input_hw": list(frames[0].shape[2:]), "stages": {}}
    for stage, feeds_list in recorder.records.items():
        feeds = feeds_list[0]
        times = {mode: [] for mode in sessions}
        for mode, backend in sessions.items():  # warm-up
            backend.sessions[stage].run(None, feeds)
        for _ in range(rounds):
            for mode, backend in sessions.items():
                start = time.perf_counter()
                backend.sessions[stage].run(None, feeds)
                times[mode].append((time.perf_counter() - start) * 1e3)
        median = {mode: statistics.median(t) for mode, t in times.items()}
        result["stages"][stage] = {
            "times_ms": times,
            "median_ms": median,
            "speedup_fused_vs_decomposed": median["decomposed"] / median["fused"],
        }
        log(f"  {config} {stage}: fused {median['fused']:.0f} ms, decomposed {median['decomposed']:.0f} ms, "
            f"{median['decomposed'] / median['fused']:.2f}x")  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="psla_r101_rfcn")
    parser.add_argument("--short-side", type=int, default=320)
    parser.add_argument("--max-long-side", type=int, default=432)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--json", default="benchmarks/results/ort_fused_stages_cpu.json")
    args = parser.parse_args()
    if not fused_ops.available():
        raise SystemExit("libvidtrt_ort_ops.so is not built (ONNXRUNTIME_ROOT); nothing to compare")
    torch.set_num_threads(args.threads)
    report = {
        "what": "each stage on recorded inputs, ONNX Runtime with the custom ops fused vs decomposed, "
        "interleaved rounds, medians; ratios only",
        "threads": args.threads,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "onnxruntime": ort.__version__,
        "configs": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for config in args.configs.split(","):
            print(f"{config}: export at short side {args.short_side}, long side <= {args.max_long_side}", flush=True)
            report["configs"][config] = bench_config(
                config, args.short_side, args.max_long_side, args.rounds, args.threads, Path(tmp)
            )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
