"""The `vidtrt` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_doctor(args) -> int:
    from . import doctor

    text, code = doctor.report()
    print(text)
    return code


def _cmd_selfcheck(args) -> int:
    import torch

    from . import selfcheck

    dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    print(f"vidtrt selfcheck: exporting every custom op to {args.out}/ and comparing backends", flush=True)
    rows = selfcheck.run(Path(args.out), dtypes=dtypes)
    print(selfcheck.format_table(rows))
    failed = [r for r in rows if not r.ok]
    print(f"{len(rows) - len(failed)} ok, {len(failed)} failed")
    return 1 if failed else 0


def _cmd_models(args) -> int:
    from .methods import all_methods

    print(f"{'config':<20} {'method':<8} {'parameters':>12}  paper")
    for method in all_methods():
        for name, cfg in method.configs.items():
            count = sum(p.numel() for p in method.build_detector(cfg).parameters())
            print(f"{name:<20} {method.name:<8} {count / 1e6:>11.1f}M  {method.paper_params.get(name, '-')}")
    return 0


# ---------------------------------------------------------------- schedule options
# Every method's schedule options become flags (one per name; the help says
# which methods take it). The bundle's, or the --method's, method validates
# the values: an option it does not have is an error naming the ones it has.


def _add_schedule_arguments(parser: argparse.ArgumentParser, at_run: bool) -> None:
    from .methods import all_methods

    group = parser.add_argument_group(
        "schedule options (per method; unset = the bundle's value)"
        if at_run
        else "schedule options (per method; unset = the config's value; written into the bundle)"
    )
    seen: dict[str, list[str]] = {}
    for method in all_methods():
        for option in method.schedule_options:
            text = f"{method.name}: {option.describe()}"
            if option.at_export and at_run:
                text += " (must equal the bundle's)"
            seen.setdefault(option.name, []).append(text)
    for name, texts in seen.items():
        group.add_argument(
            "--" + name.replace("_", "-"), dest=f"schedule__{name}", metavar="VALUE", default=None, help="; ".join(texts)
        )


def _schedule_options(args, method) -> dict:
    """The schedule flags given on the command line, checked against ``method``."""
    given = {k.removeprefix("schedule__"): v for k, v in vars(args).items() if k.startswith("schedule__") and v is not None}
    for name, value in given.items():
        method.option(name).parse(value, method.name)  # an unknown option lists the method's
    return {name: method.option(name).parse(value, method.name) for name, value in given.items()}


def _bundle_schedule(args) -> dict:
    """Schedule flags for a command on a bundle: checked against the bundle's method and schedule."""
    from .core.bundle import load_bundle
    from .methods import get_method

    bundle = load_bundle(args.bundle)
    method = get_method(bundle.manifest.method)
    options = _schedule_options(args, method)
    method.resolve_schedule(bundle.manifest.schedule, options)  # fail before any video is read
    return options


def _cmd_export(args) -> int:
    from .export.exporter import export_bundle
    from .methods import get_method, method_of_config

    if args.config is None and args.checkpoint is None:
        print("vidtrt export: give --config NAME, --checkpoint FILE, or both", file=sys.stderr)
        return 2
    if args.method is None:
        if args.config is None:
            print("vidtrt export: give --method with --checkpoint (or --config)", file=sys.stderr)
            return 2
        args.method = method_of_config(args.config).name
    elif args.config is not None and method_of_config(args.config).name != args.method:
        raise ValueError(f"config {args.config!r} belongs to method {method_of_config(args.config).name}, not {args.method}")
    schedule = _schedule_options(args, get_method(args.method))
    print(f"vidtrt export: method {args.method}, config {args.config or '(from checkpoint)'} → {args.out}")
    precisions = args.precisions.split(",")
    unknown = set(precisions) - {"fp32", "fp16"}
    if unknown or "fp32" not in precisions:
        print("vidtrt export: --precisions takes fp32 and optionally fp16 (INT8 comes from `vidtrt calibrate`)", file=sys.stderr)
        return 2
    bundle = export_bundle(
        args.method, args.out, config_name=args.config, checkpoint=args.checkpoint, seed=args.seed,
        verify=not args.no_verify, schedule=schedule,
    )  # fmt: skip
    if "fp16" in precisions:
        from .export.precision import write_fp16_variants

        write_fp16_variants(bundle)
    print(f"bundle written: {bundle.directory} ({', '.join(bundle.stages)}; {', '.join(bundle.precisions())})")
    return 0


def _cmd_calibrate(args) -> int:
    from .calibration.calibrate import calibrate_bundle

    sources = [int(v) if v.isdigit() else v for v in args.videos]
    print(f"vidtrt calibrate: {args.bundle} on {len(sources)} video(s), up to {args.max_samples} inputs per stage")
    schedule = _bundle_schedule(args)
    counts, calls = calibrate_bundle(
        args.bundle, sources, max_samples=args.max_samples, method=args.method, progress=not args.no_progress, schedule=schedule
    )
    print("int8 graphs written; calibration inputs per stage: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _parse_frame_size(text: str) -> tuple[int, int]:
    """"1280x720" (width x height, as video tools print it) → (height, width)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 1280x720, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"frame size must be positive, got {text!r}")
    return h, w


def _default_runtime() -> str:
    """Standard TensorRT when importable, else TensorRT-RTX when importable."""
    from .tensorrt.flavours import available

    return "tensorrt" if available("tensorrt")[0] or not available("tensorrt-rtx")[0] else "tensorrt-rtx"


def _cmd_build(args) -> int:
    from .core.bundle import load_bundle
    from .tensorrt.build import build_engines, image_profile, minimum_image_side
    from .tensorrt.flavours import parse_compute_capabilities, require

    runtime = args.runtime or _default_runtime()
    sms = parse_compute_capabilities(args.sm) if args.sm else None
    if runtime == "tensorrt-rtx" and not sms:
        raise ValueError("TensorRT-RTX builds ahead of time for chosen GPUs: give --sm, e.g. --sm 75,86,89")
    if runtime == "tensorrt" and sms:
        raise ValueError("--sm is for --runtime tensorrt-rtx; standard TensorRT builds for the GPU it runs on")
    require(runtime, "vidtrt build")  # before loading anything: say what is missing first
    bundle = load_bundle(args.bundle)
    stages = [s for s in args.stages.split(",") if s] if args.stages else None
    unknown = sorted(set(stages or []) - set(bundle.stages))
    if unknown:
        raise ValueError(f"bundle {args.bundle} has no stage {', '.join(unknown)}; it has {', '.join(bundle.stages)}")
    profile = image_profile(
        bundle.manifest.preprocess, opt_frame=args.frame_size, min_side=minimum_image_side(bundle.manifest)
    )
    target = f"SM {', '.join(sms)}" if sms else "this GPU"
    print(
        f"vidtrt build: {args.bundle}, {runtime} for {target}, {args.precision}, image profile min {profile.min} "
        f"opt {profile.opt} max {profile.max}, workspace {args.workspace} MB"
    )
    result = build_engines(
        bundle, args.precision, timing_cache=args.timing_cache, workspace_mb=args.workspace, profile=profile,
        runtime=runtime, compute_capabilities=sms, stages=stages,
    )  # fmt: skip
    if runtime == "tensorrt-rtx":
        for key, entry in result.items():
            total = sum(s["bytes"] for s in entry["stages"].values())
            seconds = sum(s["build_seconds"] for s in entry["stages"].values())
            print(f"{key}: {len(entry['files'])} engines, {total / 2**20:.1f} MB, built in {seconds:.1f} s")
    return 0


def _cmd_bench(args) -> int:
    import json

    from .bench import bench_bundle, format_report

    source = int(args.video) if args.video.isdigit() else args.video
    schedule = _bundle_schedule(args)
    report = bench_bundle(args.bundle, args.precision.split(","), source, backend=args.backend, warmup=args.warmup, schedule=schedule)
    print(format_report(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def _cmd_run(args) -> int:
    from .runtime.runner import run_video

    source = int(args.video) if args.video.isdigit() else args.video
    outputs = [o for o in args.outputs.split(",") if o]
    summary = run_video(
        args.bundle,
        source,
        backend=args.backend,
        out_dir=args.out,
        outputs=outputs,
        pipeline_options=_bundle_schedule(args),
        backend_options={} if args.precision == "fp32" else {"precision": args.precision},
        progress=not args.no_progress,
    )
    print(summary.format())
    return 0


def _cmd_demo(args) -> int:
    from .demo import run_demo

    from .methods import get_method

    report = run_demo(args.out, num_frames=args.frames, method=args.method, schedule=_schedule_options(args, get_method(args.method)))
    return 0 if report["frames_not_matching_reference"] == 0 else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidtrt",
        description="TensorRT deployment toolkit for video object detectors (PSLA, Impression Network, MEGA, "
        "Temporal RoI Align, MFSA).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from .methods import method_names

    p = sub.add_parser("demo", help="export a method's small model, run a generated clip, report speed and fidelity")
    p.add_argument("--method", default="psla", choices=method_names(), help="which method (default: %(default)s)")
    p.add_argument("--out", default="vidtrt-demo", help="output directory (default: %(default)s)")
    p.add_argument("--frames", type=_positive_int, default=40, help="length of the generated clip (default: %(default)s)")
    _add_schedule_arguments(p, at_run=False)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("export", help="export a detector to a bundle of ONNX stage graphs")
    p.add_argument("--method", choices=method_names(), help="the method (default: the --config's)")
    p.add_argument("--config", help="named model config (see `vidtrt models`)")
    p.add_argument("--checkpoint", help="native checkpoint (its config travels with it); troi also reads mmtracking checkpoints")
    p.add_argument("--out", required=True, help="bundle directory")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights when no checkpoint is given")
    p.add_argument("--no-verify", action="store_true", help="skip running each graph in ONNX Runtime against PyTorch")
    p.add_argument("--precisions", default="fp32,fp16", help="graph precisions to write: fp32[,fp16] (default: %(default)s)")
    _add_schedule_arguments(p, at_run=False)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("calibrate", help="INT8 graphs calibrated on what the FP32 pipeline feeds each stage")
    p.add_argument("bundle")
    p.add_argument("videos", nargs="+", help="calibration videos (files or camera indices)")
    p.add_argument("--max-samples", type=int, default=32, help="recorded inputs per stage (default: %(default)s)")
    p.add_argument("--method", default="minmax", choices=["minmax", "entropy", "percentile"], help="calibration method (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true")
    _add_schedule_arguments(p, at_run=True)
    p.set_defaults(func=_cmd_calibrate)

    p = sub.add_parser(
        "build",
        help="build TensorRT engines for every stage of a bundle (TensorRT 10.8+/11 on a GPU, or TensorRT-RTX without one)",
    )
    p.add_argument("bundle")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"], help="which graphs to build from (default: %(default)s)")
    p.add_argument(
        "--runtime", choices=["tensorrt", "tensorrt-rtx"],
        help="TensorRT flavour (default: tensorrt when importable, else tensorrt-rtx)",
    )
    p.add_argument(
        "--sm", metavar="CC[,CC...]",
        help="tensorrt-rtx: compute capabilities to build for, e.g. 75,86,89 (one engine set each; no GPU needed)",
    )
    p.add_argument("--stages", metavar="STAGE[,STAGE...]", help="build only these stages (default: all)")
    p.add_argument("--timing-cache", help="TensorRT timing cache file, read if present and written back")
    p.add_argument("--workspace", type=int, default=2048, help="builder workspace limit in MB (default: %(default)s)")
    p.add_argument(
        "--frame-size", type=_parse_frame_size, default=(720, 1280), metavar="WxH",
        help="source video size the engines are tuned for (default: 1280x720); any size still runs",
    )
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser("bench", help="each precision against FP32 per stage and end to end, with timings")
    p.add_argument("bundle")
    p.add_argument("video", help="video file (or camera index) to measure on")
    p.add_argument("--precision", default="fp32,fp16,int8", help="comma-separated (default: %(default)s)")
    p.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "torch", "tensorrt", "tensorrt-rtx"])
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per stage (default: %(default)s)")
    p.add_argument("--json", help="also write the report as JSON")
    _add_schedule_arguments(p, at_run=True)
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("run", help="run a video through a bundle")
    p.add_argument("bundle")
    p.add_argument("video", help="video file, or a camera index")
    p.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "torch", "tensorrt", "tensorrt-rtx"])
    p.add_argument("--out", default="vidtrt-out", help="output directory (default: %(default)s)")
    p.add_argument("--outputs", default="jsonl,video,vid", help="any of jsonl,video,vid (default: %(default)s)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"], help="graph/engine precision (onnxruntime, tensorrt)")
    p.add_argument("--no-progress", action="store_true")
    _add_schedule_arguments(p, at_run=True)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("models", help="list the model configs with their parameter counts")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("doctor", help="list the components found or missing, and what each missing one disables")
    p.set_defaults(func=_cmd_doctor)

    p = sub.add_parser(
        "selfcheck",
        help="export every custom op to ONNX, run it in ONNX Runtime, compare with its reference and native kernel",
    )
    p.add_argument("--out", default="vidtrt-selfcheck", help="directory for the exported graphs (default: %(default)s)")
    p.add_argument("--dtypes", default="float32,float16", help="comma-separated dtypes (default: %(default)s)")
    p.set_defaults(func=_cmd_selfcheck)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as err:
        # Input problems (bad video, bundle, checkpoint, arguments) end with one clear line.
        print(f"vidtrt {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
