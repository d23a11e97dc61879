"""CPU cost of Temporal RoI Align per frame, the head stage's share, and what
caching the support side of SELSA saves.

Runs the two stages eagerly (the torch backend's modules) as the offline
pipeline schedules them: ``frame`` once per frame, ``head`` once per frame
over T cached support frames. The frame stage also computes the frame's SELSA
reference projections (three shared FCs, then each aggregator's key and
value FCs on its P RoIs), which the head reads for every support frame
instead of recomputing them on all (T+1)·P reference RoIs for every target.

The same run also times, for every target and interleaved with the cached
head, the uncached one: the T support frames' projections recomputed from
their RoI features, then the same head (what the head stage did before, and
what ``detect_video_reference`` still does). Its outputs are checked equal to
the cached head's, bit for bit.

    .venv/bin/python benchmarks/bench_troi_pipeline.py --config troi_small --frames 6
    .venv/bin/python benchmarks/bench_troi_pipeline.py --config selsa_troi_r50_dc5 --short-side 600 --frames 3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
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
    bbox_head = detector.roi_head.bbox_head
    frame_ms, projection_ms, cached_ms, uncached_ms = [], [], [], []
    outs = []
    for image in images:
        start = time.perf_counter()
        outs.append(detector.frame(image))
        frame_ms.append((time.perf_counter() - start) * 1e3)
        start = time.perf_counter()
        bbox_head.reference_projections(outs[-1][3])  # the share of the frame stage that SELSA's references are
        projection_ms.append((time.perf_counter() - start) * 1e3)
    chosen = adaptive_stride_support(frames, cfg.num_support)
    features = torch.cat([outs[i][0] for i in chosen])
    pvalid = torch.stack([outs[i][2] for i in chosen])
    valid = torch.ones(cfg.num_support, dtype=torch.bool)
    cached_support = (features, torch.stack([outs[i][4] for i in chosen]), torch.stack([outs[i][5] for i in chosen]), pvalid, valid)

    def uncached(out):
        projections = [bbox_head.reference_projections(outs[i][3]) for i in chosen]
        support = (features, torch.stack([k for k, _ in projections]), torch.stack([v for _, v in projections]), pvalid, valid)
        return detector.head(size, *out, *support)

    for out in outs:  # interleaved: uncached, cached, per target
        start = time.perf_counter()
        want = uncached(out)
        uncached_ms.append((time.perf_counter() - start) * 1e3)
        start = time.perf_counter()
        got = detector.head(size, *out, *cached_support)
        cached_ms.append((time.perf_counter() - start) * 1e3)
        if not all(torch.equal(a, b) for a, b in zip(want, got)):
            raise SystemExit("the cached head's detections differ from the uncached head's")
    frame = statistics.median(frame_ms)
    own = statistics.median(projection_ms)
    head, head_uncached = statistics.median(cached_ms), statistics.median(uncached_ms)
    return {
        "config": config,
        "input": list(images[0].shape[2:]),
        "num_support": cfg.num_support,
        "proposals": cfg.rpn.post_nms,
        "threads": threads,
        "op_impl": op_impl,
        "frames": frames,
        "statistic": "median over the frames; uncached and cached heads interleaved per target",
        "frame_ms": round(frame, 2),
        "frame_projection_ms": round(own, 2),
        "head_ms": round(head, 2),
        "head_uncached_ms": round(head_uncached, 2),
        "per_frame_ms": round(frame + head, 2),
        "head_share": round(head / (frame + head), 3),
        # The old head also projected the target's own RoIs, which the frame stage now does.
        "head_speedup_with_caching": round((head_uncached + own) / (head + own), 3),
        "per_frame_speedup_with_caching": round((frame + head_uncached) / (frame + head), 3),
        "outputs_bit_identical": True,
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
