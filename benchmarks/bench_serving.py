"""Serving load on loopback: how throughput and per-frame latency change as
concurrent video streams grow, with Triton Inference Server running the
sequence-batched vidtrt model (psla_small, onnxruntime, CPU).

Each level starts N client threads at once; every thread streams its own
synthetic clip (START ... END) over gRPC, one request per frame, sending the
next frame when the previous answer is back (a client pacing itself on the
server, not a fixed frame rate). Reported per level: frames/s over all
streams (frames answered / wall time of the level), frames/s per stream, and
the p50 / p99 of the round trip of one frame's request (what a client waits
per frame; a frame whose detections are held back by the schedule, PSLA's
middle key frame, comes out in a later answer, which this does not add).

Bounded: levels 1, 2, 4, 8, 16 streams × --frames frames each (default 16),
one server, one model instance unless --instances. Numbers are for the
machine it ran on (recorded with the results), not for a GPU server.

    .venv/bin/python benchmarks/bench_serving.py [--frames 16] [--levels 1,2,4,8,16] [--instances 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from vidtrt.export.exporter import export_bundle
from vidtrt.runtime.synthetic import moving_shapes_clip
from vidtrt.serving.client import RemoteDetector
from vidtrt.serving.repository import write_repository
from vidtrt.serving.server import TritonServer

RESULTS = Path(__file__).resolve().parent / "results"


def percentile(values, q):
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def run_level(bundle_dir: Path, url: str, streams: int, clips: list) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(streams + 1)

    def client(k: int) -> None:
        try:
            stream = RemoteDetector(bundle_dir, url, timeout_s=120).stream()
            barrier.wait()
            own = []
            for frame in clips[k % len(clips)]:
                start = time.perf_counter()
                stream.push(frame)
                own.append((time.perf_counter() - start) * 1e3)
            stream.flush()
            with lock:
                latencies.extend(own)
        except Exception as err:  # noqa: BLE001 - reported in the results
            with lock:
                errors.append(f"{type(err).__name__}: {err}")
            barrier.abort()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(streams)]
    for t in threads:
        t.start()
    try:
        barrier.wait()  # every client connected: the level starts now
    except threading.BrokenBarrierError:
        pass
    start = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    frames = len(latencies)
    return {
        "streams": streams,
        "frames": frames,
        "seconds": seconds,
        "frames_per_s": frames / seconds if seconds > 0 else float("nan"),
        "frames_per_s_per_stream": frames / seconds / streams if seconds > 0 else float("nan"),
        "latency_ms_p50": percentile(latencies, 50),
        "latency_ms_p99": percentile(latencies, 99),
        "latency_ms_mean": statistics.fmean(latencies) if latencies else float("nan"),
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=16, help="frames per stream per level (default: %(default)s)")
    parser.add_argument("--levels", default="1,2,4,8,16", help="concurrent streams per level (default: %(default)s)")
    parser.add_argument("--instances", type=int, default=1, help="model instances (default: %(default)s)")
    parser.add_argument("--size", default="320x240", help="frame size WxH (default: %(default)s)")
    parser.add_argument("--note", default="", help="a remark stored with the results (e.g. what else the machine ran)")
    parser.add_argument("--out", default=str(RESULTS / "serving_load"), help="results path without suffix")
    args = parser.parse_args()
    levels = [int(v) for v in args.levels.split(",") if v]
    width, height = (int(v) for v in args.size.lower().split("x"))
    clips = [moving_shapes_clip(num_frames=args.frames, height=height, width=width, seed=seed) for seed in range(4)]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="vidtrt-bench-serving-") as scratch:
        scratch = Path(scratch)
        bundle = export_bundle("psla", scratch / "psla_small", config_name="psla_small", verify=False, log=lambda _: None)
        write_repository(bundle, scratch / "repository", instances=args.instances, max_streams=max(levels), idle_timeout_s=30)
        server = TritonServer(scratch / "repository", scratch)
        server.start()
        try:
            server.wait_ready(timeout_s=180)
            run_level(bundle.directory, server.grpc_url, 1, clips)  # warm-up: first calls of every stage
            rows = []
            for streams in levels:
                row = run_level(bundle.directory, server.grpc_url, streams, clips)
                rows.append(row)
                print(
                    f"{streams:>3} streams: {row['frames_per_s']:6.1f} frames/s ({row['frames_per_s_per_stream']:5.1f} per stream), "
                    f"latency p50 {row['latency_ms_p50']:7.1f} ms, p99 {row['latency_ms_p99']:7.1f} ms"
                    + (f", {len(row['errors'])} errors" if row["errors"] else ""),
                    flush=True,
                )
        finally:
            server.stop()
    result = {
        "benchmark": "serving_load",
        "model": "psla_small (onnxruntime fp32, CPU), sequence-batched Triton Python-backend model",
        "instances": args.instances,
        "frame_size": [height, width],
        "frames_per_stream": args.frames,
        "schedule": dict(bundle.manifest.schedule),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
        },
        "note": args.note,
        "levels": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Serving load on loopback (psla_small, onnxruntime CPU, Triton Python backend)",
        "",
        f"{args.instances} model instance(s); {args.frames} frames of {width}x{height} per stream; each client sends its next "
        "frame when the previous answer is back. Latency: one frame's request round trip.",
        f"Machine: {os.cpu_count()} CPUs, load average before {result['machine']['load_average_before'][0]}, "
        f"after {result['machine']['load_average_after'][0]}. {args.note}",
        "",
        "| streams | frames/s (all) | frames/s per stream | p50 latency ms | p99 latency ms | errors |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['streams']} | {row['frames_per_s']:.1f} | {row['frames_per_s_per_stream']:.1f} | "
            f"{row['latency_ms_p50']:.1f} | {row['latency_ms_p99']:.1f} | {len(row['errors'])} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
