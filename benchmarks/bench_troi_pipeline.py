"""CPU cost of Temporal RoI Align per frame and the share of the head stage.

Runs the two stages eagerly (the torch backend's modules) as the offline
pipeline schedules them: ``frame`` once per frame, ``head`` once per frame
over T cached support frames. The head's cost does not shrink with the input
size: MS RoI Align scales with T·h·w, but the SELSA FCs run on all (T+1)·P
reference RoIs every frame.

    .venv/bin/python benchmarks/bench_troi_pipeline.py --config troi_small --frames 6
    .venv/bin/python benchmarks/bench_troi_pipeline.py --config selsa_troi_r50_dc5 --short-side 320 --frames 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from vidtrt.methods import get_method
from vidtrt.methods import troi as method
from vidtrt.methods.common import sample_image
from vidtrt.models.troi import TroiDetector
from vidtrt.methods.troi import adaptive_stride_support


@torch.no_grad()
def bench(config: str, frames: int, short_side: int | None, num_support: int | None, threads: int, op_impl: str) -> dict:
    torch.set_num_threads(threads)
    overrides = {}
    base = get_method("troi").config(config)
    if short_side:
        overrides["preprocess"] = dataclasses.replace(base.preprocess, short_side=short_side, max_long_side=round(short_side * 5 / 3))
    if num_support:
        overrides["num_support"] = num_support
    cfg = get_method("troi").config(config, overrides)
    # Timing does not need calibrated weights; seeding a full-size model on CPU takes long.
    detector = TroiDetector(cfg).eval() if cfg.depth >= 50 else method.METHOD.seeded_detector(cfg)
    detector.op_impl = op_impl  # "native": the fused host kernel of MS RoI Align
    images = [sample_image(cfg, seed=i) for i in range(frames)]
    size = torch.tensor([float(images[0].shape[2]), float(images[0].shape[3])])
    frame_ms, head_ms = [], []
    outs = []
    for image in images:
        start = time.perf_counter()
        outs.append(detector.frame(image))
        frame_ms.append((time.perf_counter() - start) * 1e3)
    chosen = adaptive_stride_support(frames, cfg.num_support)
    support = (
        torch.cat([outs[i][0] for i in chosen]),
        torch.stack([outs[i][3] for i in chosen]),
        torch.stack([outs[i][2] for i in chosen]),
        torch.ones(cfg.num_support, dtype=torch.bool),
    )
    for out in outs:
        start = time.perf_counter()
        detector.head(size, out[0], out[1], out[2], out[3], *support)
        head_ms.append((time.perf_counter() - start) * 1e3)
    frame_mean = sum(frame_ms) / len(frame_ms)
    head_mean = sum(head_ms) / len(head_ms)
    return {
        "config": config,
        "input": list(images[0].shape[2:]),
        "num_support": cfg.num_support,
        "proposals": cfg.rpn.post_nms,
        "threads": threads,
        "op_impl": op_impl,
        "frame_ms": round(frame_mean, 2),
        "head_ms": round(head_mean, 2),
        "per_frame_ms": round(frame_mean + head_mean, 2),
        "head_share": round(head_mean / (frame_mean + head_mean), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="troi_small")
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--short-side", type=int, help="reduce the input (the long side follows at 5:3)")
    parser.add_argument("--num-support", type=int, help="override T")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--op-impl", default="native", choices=["native", "reference"], help="custom-op implementation")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    result = bench(args.config, args.frames, args.short_side, args.num_support, args.threads, args.op_impl)
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
