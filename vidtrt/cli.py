"""The `vidtrt` command line."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


# ---------------------------------------------------------------- argument checks
# Done before any heavy work: a bad path fails in one line, not after minutes.


def _writable_dir(path: str | Path, flag: str) -> Path:
    """``path`` can be used as an output directory: it is one, or can be created."""
    import os

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file, not a directory")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{flag} {path}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: no permission to write in {existing}")
    return path


def _writable_file(path: str | Path, flag: str) -> Path:
    """``path`` can be written as a file (not a directory; its folder writable or creatable)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a directory; give a file name")
    _writable_dir(path.parent if str(path.parent) else ".", flag)
    return path


def _existing_bundle_dir(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"bundle {path} does not exist")
    if not path.is_dir():
        raise ValueError(f"bundle {path} is a file, not a bundle directory")
    return path


def _write_json(path: str | Path | None, data) -> None:
    """``--json PATH``: the command's result as JSON, written atomically."""
    import json
    import os

    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    print(f"wrote {path}")


def _cmd_doctor(args) -> int:
    from dataclasses import asdict

    from . import doctor

    if args.json:
        _writable_file(args.json, "--json")
    rows = doctor.components()
    text, code = doctor.report(rows)
    print(text)
    _write_json(args.json, {"components": [asdict(c) for c in rows], "ok": code == 0})
    return code


def _cmd_selfcheck(args) -> int:
    import torch

    from . import selfcheck

    allowed = ("float32", "float16")
    names = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    bad = [d for d in names if d not in allowed]
    if bad or not names:
        raise ValueError(f"--dtypes takes {' and/or '.join(allowed)}, got {args.dtypes!r}")
    _writable_dir(args.out, "--out")
    if args.json:
        _writable_file(args.json, "--json")
    dtypes = [getattr(torch, d) for d in names]
    if args.bench:
        from . import op_bench

        ops = [o.strip() for o in args.ops.split(",") if o.strip()] if args.ops else None
        print("vidtrt selfcheck --bench: every custom op at paper scale, side by side (minutes)", flush=True)
        report = op_bench.run(ops, threads=args.threads, repeat=args.repeat, log=lambda m: print(m, flush=True))
        print(op_bench.format_table(report))
        _write_json(args.json, report)
        return 0
    print(f"vidtrt selfcheck: exporting every custom op to {args.out}/ and comparing backends", flush=True)
    rows = selfcheck.run(Path(args.out), dtypes=dtypes)
    print(selfcheck.format_table(rows))
    failed = [r for r in rows if not r.ok]
    print(f"{len(rows) - len(failed)} ok, {len(failed)} failed")
    from dataclasses import asdict

    _write_json(args.json, {"rows": [asdict(r) for r in rows], "failed": len(failed)})
    return 1 if failed else 0


def _cmd_models(args) -> int:
    from .methods import all_methods

    if args.json:
        _writable_file(args.json, "--json")
    print(f"{'config':<20} {'method':<8} {'parameters':>12}  paper")
    rows = []
    for method in all_methods():
        for name, cfg in method.configs.items():
            count = sum(p.numel() for p in method.build_detector(cfg).parameters())
            rows.append({"config": name, "method": method.name, "parameters": count, "paper": method.paper_params.get(name)})
            print(f"{name:<20} {method.name:<8} {count / 1e6:>11.1f}M  {method.paper_params.get(name, '-')}")
    _write_json(args.json, {"configs": rows})
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
    # method.option() refuses an option the method lacks, listing the ones it has.
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
    out = _writable_dir(args.out, "--out")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise FileExistsError(f"--out {out} is not empty; give --force to replace the bundle in it")
    print(f"vidtrt export: method {args.method}, config {args.config or '(from checkpoint)'} → {args.out}")
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    unknown = set(precisions) - {"fp32", "fp16"}
    if unknown or "fp32" not in precisions:
        print("vidtrt export: --precision takes fp32 and optionally fp16 (INT8 comes from `vidtrt calibrate`)", file=sys.stderr)
        return 2
    bundle = export_bundle(
        args.method, args.out, config_name=args.config, checkpoint=args.checkpoint, seed=args.seed,
        verify=not args.no_verify, schedule=schedule, progress=not args.no_progress,
    )  # fmt: skip
    if "fp16" in precisions:
        from .export.precision import write_fp16_variants

        write_fp16_variants(bundle)
    print(f"bundle written: {bundle.directory} ({', '.join(bundle.stages)}; {', '.join(bundle.precisions())})")
    return 0


def _cmd_calibrate(args) -> int:
    from .calibration.calibrate import calibrate_bundle

    import os

    sources = [int(v) if v.isdigit() else v for v in args.videos]
    bundle_dir = _existing_bundle_dir(args.bundle)
    if not os.access(bundle_dir, os.W_OK | os.X_OK):
        raise ValueError(f"bundle {bundle_dir} is read-only; calibration writes int8/ into it (copy the bundle first)")
    print(f"vidtrt calibrate: {args.bundle} on {len(sources)} video(s), up to {args.max_samples} inputs per stage")
    schedule = _bundle_schedule(args)
    counts, calls = calibrate_bundle(
        args.bundle, sources, max_samples=args.max_samples, method=args.algorithm, progress=not args.no_progress, schedule=schedule
    )
    print("int8 graphs written; calibration inputs per stage: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def _precisions(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in names if p not in ("fp32", "fp16", "int8")]
    if bad or not names:
        raise ValueError(f"--precision takes a comma-separated list of fp32, fp16, int8; got {text!r}")
    return names


def _bounded(kind: type, low: float, high: float | None = None, what: str = "a whole number"):
    """An argparse type: ``kind(text)`` within [low, high], else a usage error."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {what} in [{low}, {high if high is not None else '∞'}], got {value}")
        return value

    return parse


_positive_int = _bounded(int, 1)
_non_negative_int = _bounded(int, 0)
_score = _bounded(float, 0.0, 1.0, "a score")
_learning_rate = _bounded(float, 1e-8, 10.0, "a learning rate")


def _size_range(text: str) -> tuple[float, float]:
    """"0.16,0.32" → (0.16, 0.32): 0 < min <= max <= 1."""
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX (two fractions), got {text!r}") from None
    if not 0.0 < low <= high <= 1.0:
        raise argparse.ArgumentTypeError(f"expected 0 < MIN <= MAX <= 1, got {text!r}")
    return low, high


def _parse_frame_size(text: str) -> tuple[int, int]:
    """"1280x720" (width x height, as video tools print it) → (height, width)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 1280x720, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"frame size must be positive, got {text!r}")
    return h, w


def _host_port(text: str) -> str:
    """"HOST:PORT" of a server, checked (the port a number in 1..65535)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT such as 127.0.0.1:8001, got {text!r}")
    return text


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
    precisions = _precisions(args.precision)
    if args.json:
        _writable_file(args.json, "--json")
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
    missing = [p for p in precisions if p not in bundle.precisions()]
    if missing:
        raise ValueError(
            f"bundle {args.bundle} has no {', '.join(missing)} graphs (it has {', '.join(bundle.precisions())}); "
            "FP16 comes from `vidtrt export`, INT8 from `vidtrt calibrate`"
        )
    print(
        f"vidtrt build: {args.bundle}, {runtime} for {target}, {','.join(precisions)}, image profile min {profile.min} "
        f"opt {profile.opt} max {profile.max}, workspace {args.workspace} MB"
    )
    sets = {}
    for precision in precisions:
        result = build_engines(
            bundle, precision, timing_cache=args.timing_cache, workspace_mb=args.workspace, profile=profile,
            runtime=runtime, compute_capabilities=sms, stages=stages, progress=not args.no_progress,
        )  # fmt: skip
        sets.update(result if runtime == "tensorrt-rtx" else {precision: result})
    for key, entry in sets.items():
        total = sum(s["bytes"] for s in entry["stages"].values())
        seconds = sum(s["build_seconds"] for s in entry["stages"].values())
        print(f"{key}: {len(entry['files'])} engines, {total / 2**20:.1f} MB, built in {seconds:.1f} s")
    _write_json(args.json, {"bundle": str(args.bundle), "engine_sets": sets})
    return 0


def _cmd_bench(args) -> int:

    from .bench import bench_bundle, format_report

    from .core.bundle import load_bundle

    source = int(args.video) if args.video.isdigit() else args.video
    if args.json:
        _writable_file(args.json, "--json")  # before the benchmark, not after it
    schedule = _bundle_schedule(args)
    bundle = load_bundle(args.bundle)
    precisions = _precisions(args.precision) if args.precision else bundle.precisions()
    if args.backend == "torch" and precisions != ["fp32"]:
        raise ValueError("the torch backend runs the FP32 checkpoint eagerly; compare precisions with --backend onnxruntime")
    report = bench_bundle(
        bundle, precisions, source, backend=args.backend, warmup=args.warmup, schedule=schedule, progress=not args.no_progress,
        ground_truth=args.gt, split=args.gt_split,
    )
    print(format_report(report))
    _write_json(args.json, report)
    return 0


def _cmd_run(args) -> int:
    from .runtime.runner import OUTPUT_FILES, run_video

    source = int(args.video) if args.video.isdigit() else args.video
    outputs = [o for o in args.outputs.split(",") if o]
    unknown = sorted(set(outputs) - set(OUTPUT_FILES))
    if unknown:
        raise ValueError(f"--outputs: unknown {', '.join(unknown)}; choose from {', '.join(OUTPUT_FILES)}")
    if args.backend == "torch" and args.precision != "fp32":
        raise ValueError(
            f"the torch backend runs the FP32 checkpoint eagerly; --precision {args.precision} needs "
            "--backend onnxruntime, tensorrt or tensorrt-rtx"
        )
    out_dir = _writable_dir(args.out, "--out")
    if args.json:
        _writable_file(args.json, "--json")
    schedule = _bundle_schedule(args)
    detector = None
    if args.server:
        from .serving.client import RemoteDetector

        # The flags describe the run wanted: the server must be running just that.
        detector = RemoteDetector(
            args.bundle, args.server, model=args.model, timeout_s=args.server_timeout,
            expect={"backend": args.backend, "precision": args.precision, "schedule": schedule},
        )  # fmt: skip
    created = not out_dir.exists()
    try:
        summary = run_video(
            args.bundle,
            source,
            backend=args.backend,
            out_dir=args.out,
            outputs=outputs,
            pipeline_options=schedule,
            backend_options={} if args.precision == "fp32" else {"precision": args.precision},
            progress=not args.no_progress,
            score_threshold=args.score_thr,
            vid_frame_offset=args.vid_frame_offset,
            allow_mixed_sizes=args.allow_mixed_sizes,
            detector=detector,
        )
    except BaseException:
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()  # a failed run leaves no empty output directory behind
        raise
    print(summary.format())
    _write_json(args.json, summary.as_dict())
    if summary.interrupted:
        print("vidtrt run: interrupted; the outputs hold the frames completed before it", file=sys.stderr)
        return 130
    if summary.partial:
        print(f"vidtrt run: error: {summary.partial} (the outputs hold the frames before it)", file=sys.stderr)
        return 1
    return 0


def _serving_settings(args) -> dict:
    """triton-repo / serve: the repository's settings, checked before any work."""
    return {
        "backend": args.backend, "precision": args.precision, "instances": args.instances,
        "idle_timeout_s": args.idle_timeout, "max_streams": args.max_streams, "name": args.name,
        "schedule": _bundle_schedule(args), "threads": args.threads,
    }  # fmt: skip


def _cmd_triton_repo(args) -> int:
    from .serving.repository import write_repository

    _existing_bundle_dir(args.bundle)
    out = _writable_dir(args.out, "OUT")
    stage_repo = _writable_dir(args.stage_models, "--stage-models") if args.stage_models else None  # checked before any work
    model_dir = write_repository(args.bundle, out, force=args.force, **_serving_settings(args))
    print(f"wrote Triton model repository {out} (model {model_dir.name}: sequence-batched Python backend, "
          f"{args.instances} instance(s), {args.backend} {args.precision}, streams idle for {args.idle_timeout:g} s expire)")
    print(f"start it with: tritonserver --model-repository={out}  (or: vidtrt serve {args.bundle} --repo {out})")
    if stage_repo is not None:
        from .serving.repository import write_stage_models

        models = write_stage_models(args.bundle, stage_repo, precision=args.precision, idle_timeout_s=args.idle_timeout, force=args.force)
        print(f"wrote {len(models)} plain per-stage models to {stage_repo} (for Triton's own onnxruntime/tensorrt backends; docs/SERVING.md)")
    return 0


def _cmd_serve(args) -> int:
    import subprocess
    import tempfile

    from .serving.repository import write_repository
    from .serving.server import TritonServer, find_tritonserver

    _existing_bundle_dir(args.bundle)
    find_tritonserver()  # before writing anything: say what is missing first
    settings = _serving_settings(args)
    with tempfile.TemporaryDirectory(prefix="vidtrt-serve-") as scratch:
        repo = Path(args.repo) if args.repo else Path(scratch) / "repository"
        if args.repo:
            _writable_dir(repo, "--repo")
        model_dir = write_repository(args.bundle, repo, force=True, **settings)
        server = TritonServer(
            repo, Path(scratch), address=args.address, http_port=args.port, grpc_port=args.grpc_port,
            metrics_port=args.metrics_port,
        )  # fmt: skip
        print(
            f"vidtrt serve: model {model_dir.name} from {repo}; gRPC {args.address}:{server.grpc_port}, "
            f"HTTP {args.address}:{server.http_port}, metrics {server.metrics_url}",
            flush=True,
        )
        print(f"  stream a video: vidtrt run {args.bundle} VIDEO --server {server.grpc_url}", flush=True)
        process = server.start(foreground=True)
        try:
            # Waiting in short steps: a blocking wait is restarted after a
            # signal (see _run), and Ctrl-C / SIGTERM would only land once the
            # server had exited by itself.
            while True:
                try:
                    code = process.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    pass
        finally:  # Ctrl-C / SIGTERM too: the server and its stubs go with us
            server.stop()
    if code != 0:
        raise RuntimeError(f"tritonserver exited with status {code} (its messages are above)")
    return 0


def _cmd_synth_vid(args) -> int:
    from .eval.synth_vid import SynthConfig, write_synth_vid

    cfg = SynthConfig(
        videos=args.videos, frames=args.frames, width=args.size[1], height=args.size[0], classes=args.classes,
        max_objects=args.max_objects, seed=args.seed, split=args.split, degraded_fraction=args.degraded,
        min_size=args.object_size[0], max_size=args.object_size[1],
    )  # fmt: skip
    out = _writable_dir(args.out, "--out")
    split_file = out / "ImageSets" / "VID" / f"{cfg.split}.txt"
    if split_file.exists() and not args.force:
        raise ValueError(f"{split_file} exists; give --force to overwrite that split, or another --out / --split")
    summary = write_synth_vid(out, cfg, progress=not args.no_progress)
    print(
        f"wrote {summary['frames']} frames of {summary['snippets']} snippets ({summary['boxes']} boxes, "
        f"{sum(len(v) for v in summary['degraded'].values())} degraded frames) to {out} (split {cfg.split}); "
        f"classes: {', '.join(summary['classes'])}"
    )
    return 0


def _cmd_eval(args) -> int:
    from .eval.vid import evaluate, load_detections, load_ground_truth

    if args.json:
        _writable_file(args.json, "--json")
    frames = load_ground_truth(args.data, args.split)
    result = evaluate(frames, load_detections(args.detections, frames), iou_rule=args.iou_rule)
    rule = "devkit (small objects: min(0.5, wh/((w+10)(h+10))))" if args.iou_rule == "devkit" else "IoU 0.5"
    print(f"ImageNet VID mAP@0.5 over {result.num_frames} frames, {result.num_boxes} boxes ({args.split}; {rule})")
    for name, value in result.map.items():
        print(f"  {name:<7} {value:.4f}" if value == value else f"  {name:<7} -  (no boxes in this motion bin)")
    print("  per class:")
    for name, value in result.per_class.items():
        print(f"    {name:<14} {value:.4f}")
    _write_json(args.json, result.as_dict())
    return 0


def _cmd_train(args) -> int:
    from .methods import get_method
    from .training import TrainingError, TrainingSettings, train

    m = get_method(args.method)
    config = args.config or m.small_config
    m.config(config)  # an unknown config is one line, before any data is read
    out = _writable_file(args.out or f"{config}.pt", "--out")
    if out.exists() and not args.force:
        raise ValueError(f"{out} exists; give --force to replace it, or another --out")
    settings = TrainingSettings(
        steps=args.steps, lr=args.lr, optimizer=args.optimizer, seed=args.seed, flip=not args.no_flip, init=args.init
    )
    command = shlex.join([
        "vidtrt", "train", "--method", m.name, "--config", config, "--data", str(args.data), "--split", args.split,
        "--out", str(out), "--steps", str(args.steps), "--lr", str(args.lr), "--seed", str(args.seed),
    ] + (["--optimizer", args.optimizer] if args.optimizer != "sgd" else [])
      + (["--init", str(args.init)] if args.init else []) + (["--no-flip"] if args.no_flip else []))  # fmt: skip
    try:
        train(m.name, config, args.data, out, settings, split=args.split, command=command, progress=not args.no_progress)
    except NotImplementedError as err:
        raise ValueError(str(err)) from None
    except TrainingError as err:
        raise ValueError(str(err)) from None
    return 0


def _cmd_demo(args) -> int:
    from .demo import run_demo
    from .methods import get_method

    schedule = _schedule_options(args, get_method(args.method))
    _writable_dir(args.out, "--out")
    report = run_demo(args.out, num_frames=args.frames, method=args.method, schedule=schedule)
    return 0 if report["frames_not_matching_reference"] == 0 else 1


# Commands whose parser lists the methods' schedule options (which imports the
# methods, and so torch): built only when that command is the one given, so
# `vidtrt --help`, `doctor` and `build` start without importing torch.
_SCHEDULE_COMMANDS = ("demo", "export", "calibrate", "bench", "run", "triton-repo", "serve")


def _command_of(argv: list[str] | None) -> str | None:
    argv = sys.argv[1:] if argv is None else argv
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: list[str] | None = None, all_commands: bool | None = None) -> argparse.ArgumentParser:
    """The parser; schedule flags are added to the command in ``argv`` only
    (to every command when ``all_commands`` or when argv is not given)."""
    from . import __version__
    from .methods import method_names

    parser = argparse.ArgumentParser(
        prog="vidtrt",
        description="TensorRT deployment toolkit for video object detectors (PSLA, Impression Network, MEGA, "
        "Temporal RoI Align, MFSA).",
    )
    parser.add_argument("--version", action="version", version=f"vidtrt {__version__}")
    # Shared by every command (Polygraphy-style argument groups): output volume.
    common = argparse.ArgumentParser(add_help=False)
    volume = common.add_argument_group("output")
    volume.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    volume.add_argument("-v", "--verbose", action="store_true", help="also show third-party log output (OpenCV, ONNX Runtime, TensorRT)")
    long_work = argparse.ArgumentParser(add_help=False)
    long_work.add_argument("--no-progress", action="store_true", help="no progress bars")
    onnxruntime_flags = argparse.ArgumentParser(add_help=False)
    ort = onnxruntime_flags.add_argument_group("onnxruntime backend")
    ort.add_argument(
        "--ort-custom-ops", choices=["auto", "fused", "decomposed"], default=None,
        help="run vidtrt's custom ops with their fused host kernels (fused, needs a build with libvidtrt_ort_ops.so) "
        "or as their ONNX decompositions (decomposed); auto: fused on the CPU provider when built "
        "(default: auto, or $VIDTRT_ORT_CUSTOM_OPS)",
    )  # fmt: skip
    with_json = argparse.ArgumentParser(add_help=False)
    with_json.add_argument("--json", metavar="FILE", help="also write the result as JSON to FILE")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if all_commands is None:
        all_commands = argv is None
    command = _command_of(argv)

    def schedule_flags(p, name: str, at_run: bool) -> None:
        if all_commands or command == name:
            _add_schedule_arguments(p, at_run=at_run)

    p = sub.add_parser("demo", parents=[common, long_work], help="export a method's small model, run a generated clip, report speed and fidelity")
    p.add_argument("--method", default="psla", choices=method_names(), help="which method (default: %(default)s)")
    p.add_argument("--out", default="vidtrt-demo", help="output directory (default: %(default)s)")
    p.add_argument("--frames", type=_positive_int, default=40, help="length of the generated clip (default: %(default)s)")
    schedule_flags(p, "demo", at_run=False)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("export", parents=[common, long_work], help="export a detector to a bundle of ONNX stage graphs")
    p.add_argument("--method", choices=method_names(), help="the method (default: the --config's)")
    p.add_argument("--config", help="named model config (see `vidtrt models`)")
    p.add_argument("--checkpoint", help="native checkpoint (its config travels with it); troi and impression also read mmtracking (SELSA+TRoI, DFF) checkpoints, mega mega.pytorch ones")
    p.add_argument("--out", required=True, help="bundle directory")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights when no checkpoint is given")
    p.add_argument("--no-verify", action="store_true", help="skip running each graph in ONNX Runtime against PyTorch")
    p.add_argument(
        "--precision", "--precisions", dest="precision", default="fp32,fp16",
        help="graph precisions to write: fp32[,fp16] (default: %(default)s)",
    )
    p.add_argument("--force", action="store_true", help="replace the bundle in a non-empty --out directory")
    schedule_flags(p, "export", at_run=False)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("calibrate", parents=[common, long_work], help="INT8 graphs calibrated on what the FP32 pipeline feeds each stage")
    p.add_argument("bundle")
    p.add_argument("videos", nargs="+", help="calibration videos (files or camera indices)")
    p.add_argument("--max-samples", type=_positive_int, default=32, help="recorded inputs per stage (default: %(default)s)")
    p.add_argument(
        "--algorithm", default="minmax", choices=["minmax", "entropy", "percentile"],
        help="how activation ranges are calibrated (default: %(default)s)",
    )
    schedule_flags(p, "calibrate", at_run=True)
    p.set_defaults(func=_cmd_calibrate)

    p = sub.add_parser(
        "build", parents=[common, long_work, with_json],
        help="build TensorRT engines for every stage of a bundle (TensorRT 10.8+/11 on a GPU, or TensorRT-RTX without one)",
    )
    p.add_argument("bundle")
    p.add_argument("--precision", default="fp32", help="which graphs to build from: fp32, fp16, int8 or a comma-separated list (default: %(default)s)")
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

    p = sub.add_parser("bench", parents=[common, long_work, with_json, onnxruntime_flags], help="each precision against FP32 per stage and end to end, with timings")
    p.add_argument("bundle")
    p.add_argument("video", help="video file (or camera index) to measure on")
    p.add_argument("--precision", help="comma-separated fp32,fp16,int8 (default: every precision the bundle has)")
    p.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "torch", "tensorrt", "tensorrt-rtx"])
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per stage (default: %(default)s)")
    p.add_argument(
        "--gt", metavar="DIR",
        help="ImageNet VID devkit root holding the video's snippet (named like it): also report each precision's "
        "VID mAP against the annotations, overall and slow/medium/fast",
    )
    p.add_argument("--gt-split", default="val", help="the split file of --gt (default: %(default)s)")
    schedule_flags(p, "bench", at_run=True)
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("run", parents=[common, long_work, with_json, onnxruntime_flags], help="run a video through a bundle")
    p.add_argument("bundle")
    p.add_argument(
        "video",
        help="video file, folder of images, printf pattern (frames/%%06d.JPEG), glob ('frames/*.png'), "
        "network stream (rtsp://, http://, udp://) or camera index",
    )
    p.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "torch", "tensorrt", "tensorrt-rtx"])
    p.add_argument("--out", default="vidtrt-out", help="output directory (default: %(default)s)")
    p.add_argument("--allow-mixed-sizes", action="store_true", help="image sequences: resize images of another size to the first one's")
    p.add_argument("--outputs", default="jsonl,video,vid", help="any of jsonl,video,vid,coco (default: %(default)s)")
    p.add_argument(
        "--score-thr", type=_score, default=0.0, metavar="S",
        help="drop detections scoring below S from every output, drawn and written (default: %(default)s)",
    )
    p.add_argument(
        "--vid-frame-offset", type=_non_negative_int, default=0, metavar="N",
        help="ImageNet VID txt: frames of val.txt before this snippet, so per-snippet files concatenate (default: 0)",
    )
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"], help="graph/engine precision (onnxruntime, tensorrt)")
    served = p.add_argument_group("through a server (vidtrt serve / triton-repo; needs the serve extra)")
    served.add_argument(
        "--server", metavar="HOST:PORT", type=_host_port,
        help="stream the video to the Triton server's gRPC endpoint instead of running it here; it must run this "
        "bundle with the --backend, --precision and schedule given; the outputs are the same",
    )
    served.add_argument("--model", help="the server's model name (default: the bundle's config name)")
    served.add_argument(
        "--server-timeout", type=_bounded(float, 0.1, None, "seconds"), default=60.0, metavar="S",
        help="give up on a request the server has not answered in S seconds (default: %(default)s)",
    )
    schedule_flags(p, "run", at_run=True)
    p.set_defaults(func=_cmd_run)

    def serving_flags(p, name: str) -> None:
        p.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "tensorrt", "tensorrt-rtx"],
                       help="the vidtrt backend the model runs (default: %(default)s)")
        p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"], help="graph/engine precision (default: %(default)s)")
        p.add_argument("--instances", type=_positive_int, default=1, help="model instances (processes), each with its own streams (default: %(default)s)")
        p.add_argument(
            "--idle-timeout", type=_bounded(float, 0.001, None, "seconds"), default=60.0, metavar="S",
            help="free a stream's state after S seconds without a request (client gone) (default: %(default)s)",
        )
        p.add_argument("--max-streams", type=_positive_int, default=64, metavar="N",
                       help="streams each instance holds at once; more wait in Triton's backlog (default: %(default)s)")
        p.add_argument("--name", help="model name (default: the bundle's config name)")
        p.add_argument("--threads", type=_non_negative_int, default=0,
                       help="onnxruntime intra-op threads per instance, 0 = its default (default: %(default)s)")
        schedule_flags(p, name, at_run=True)

    p = sub.add_parser("triton-repo", parents=[common], help="write a Triton model repository serving a bundle to many video streams")
    p.add_argument("bundle")
    p.add_argument("out", help="the repository directory (the model is written in OUT/NAME)")
    p.add_argument("--force", action="store_true", help="replace the model's directory when it exists")
    p.add_argument(
        "--stage-models", metavar="DIR",
        help="also write every stage as a plain model (ONNX, or TensorRT plan where the bundle has engines) into the "
        "repository DIR, for Triton's own backends on a GPU server (see docs/SERVING.md)",
    )
    serving_flags(p, "triton-repo")
    p.set_defaults(func=_cmd_triton_repo)

    p = sub.add_parser("serve", parents=[common, onnxruntime_flags], help="serve a bundle to many video streams with Triton Inference Server (foreground)")
    p.add_argument("bundle")
    p.add_argument("--repo", metavar="DIR", help="write the repository here and keep it (default: a temporary directory)")
    p.add_argument("--address", default="127.0.0.1", help="address to listen on; 0.0.0.0 for every interface (default: %(default)s)")
    p.add_argument("--port", type=_bounded(int, 1, 65535, "a port"), default=8000, help="HTTP port (default: %(default)s)")
    p.add_argument("--grpc-port", type=_bounded(int, 1, 65535, "a port"), default=8001, help="gRPC port (default: %(default)s)")
    p.add_argument("--metrics-port", type=_bounded(int, 1, 65535, "a port"), default=8002, help="Prometheus metrics port (default: %(default)s)")
    serving_flags(p, "serve")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("synth-vid", parents=[common, long_work], help="write a labelled synthetic video set in the ImageNet VID devkit layout")
    p.add_argument("--out", required=True, help="dataset directory (Data/, Annotations/, ImageSets/ are written in it)")
    p.add_argument("--split", default="val", help="split name (default: %(default)s)")
    p.add_argument("--videos", type=_positive_int, default=8, help="snippets (default: %(default)s)")
    p.add_argument("--frames", type=_positive_int, default=40, help="frames per snippet (default: %(default)s)")
    p.add_argument("--size", type=_parse_frame_size, default="256x192", metavar="WxH", help="frame size (default: %(default)s)")
    p.add_argument("--classes", type=_positive_int, default=5, help="shape classes, at most 8 (default: %(default)s)")
    p.add_argument("--max-objects", type=_positive_int, default=3, help="tracks per snippet, at most (default: %(default)s)")
    p.add_argument("--degraded", type=_score, default=0.25, metavar="F", help="fraction of frames blurred or defocused (default: %(default)s)")
    p.add_argument(
        "--object-size", type=_size_range, default="0.16,0.32", metavar="MIN,MAX",
        help="object sizes, fractions of the frame's shorter side (default: %(default)s)",
    )
    p.add_argument("--seed", type=_non_negative_int, default=0, help="the set follows from it (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="overwrite an existing split")
    p.set_defaults(func=_cmd_synth_vid)

    p = sub.add_parser("eval", parents=[common, with_json], help="ImageNet VID mAP of detections against devkit-layout ground truth")
    p.add_argument("detections", help="the devkit's result txt (vidtrt run --outputs vid) or vidtrt run's JSON lines (.jsonl)")
    p.add_argument("--data", required=True, help="dataset root in the devkit layout (ImageSets/VID, Annotations/VID)")
    p.add_argument("--split", default="val", help="split file ImageSets/VID/<split>.txt (default: %(default)s)")
    p.add_argument(
        "--iou-rule", default="devkit", choices=["devkit", "plain"],
        help="devkit: min(0.5, wh/((w+10)(h+10))) per box, as the ImageNet devkit; plain: 0.5, as mmtracking (default: %(default)s)",
    )
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("train", parents=[common, long_work], help="train a method's config on a devkit-layout video set (vidtrt synth-vid), on the CPU")
    p.add_argument("--method", default="psla", choices=method_names(), help="which method (default: %(default)s)")
    p.add_argument("--config", help="named model config (default: the method's small config)")
    p.add_argument("--data", required=True, help="dataset root in the ImageNet VID devkit layout")
    p.add_argument("--split", default="train", help="split file ImageSets/VID/<split>.txt (default: %(default)s)")
    p.add_argument("--out", help="checkpoint to write, and its record beside it as <out>.json (default: <config>.pt)")
    p.add_argument("--steps", type=_positive_int, default=1500, help="SGD steps, one sample each (default: %(default)s)")
    p.add_argument("--lr", type=_learning_rate, default=0.02, help="peak learning rate (default: %(default)s)")
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adamw"],
                   help="SGD with momentum 0.9, or AdamW (then an lr around 1e-4) (default: %(default)s)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="initial weights and sampling follow from it (default: %(default)s)")
    p.add_argument(
        "--init", metavar="CHECKPOINT",
        help="start the ResNet weights from this native checkpoint of any method (as the papers start from an "
        "ImageNet-trained backbone); the rest starts from the seed",
    )
    p.add_argument("--no-flip", action="store_true", help="no horizontal flips of the training samples")
    p.add_argument("--force", action="store_true", help="replace an existing checkpoint")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("models", parents=[common, with_json], help="list the model configs with their parameter counts")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("doctor", parents=[common, with_json], help="list the components found or missing, and what each missing one disables")
    p.set_defaults(func=_cmd_doctor)

    p = sub.add_parser(
        "selfcheck", parents=[common, with_json],
        help="export every custom op to ONNX, run it in ONNX Runtime, compare with its reference and native kernel",
    )
    p.add_argument("--out", default="vidtrt-selfcheck", help="directory for the exported graphs (default: %(default)s)")
    p.add_argument("--dtypes", default="float32,float16", help="comma-separated dtypes (default: %(default)s)")
    p.add_argument(
        "--bench", action="store_true",
        help="time every op at paper scale instead: reference, native, ONNX Runtime fused and decomposed, beside the "
        "measured sgemm ceiling (minutes; use --json FILE to keep it)",
    )  # fmt: skip
    p.add_argument("--ops", help="with --bench: comma-separated op types (default: all)")
    p.add_argument(
        "--repeat", type=_positive_int, default=6,
        help="with --bench: timed runs of the fast paths, which take turns at following the sgemm (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--threads", type=_non_negative_int, default=0, help="with --bench: threads, 0 = every core (default: %(default)s)")
    p.set_defaults(func=_cmd_selfcheck)
    return parser


def _quiet_third_party(verbose: bool) -> None:
    """OpenCV/FFmpeg decoder chatter ("moov atom not found", v4l), ONNX
    Runtime's and the quantiser's log lines: errors only, unless -v. vidtrt's
    own errors are reported by vidtrt."""
    import logging
    import os

    if verbose:
        return
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    os.environ.setdefault("ORT_LOGGING_LEVEL", "3")
    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime.quantization logs to the root logger
    try:
        import onnxruntime

        onnxruntime.set_default_logger_severity(3)
    except Exception:  # noqa: BLE001 - the doctor reports a broken onnxruntime; quieting it is optional
        pass


def _sigterm_as_interrupt(signum, frame):
    # SIGTERM unwinds like Ctrl-C, so writers publish or delete their
    # temporary files and a run keeps the frames it completed.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    _quiet_third_party(args.verbose)
    if getattr(args, "ort_custom_ops", None):
        # Through the environment: every session this process (and a server
        # it starts) creates follows it (onnxruntime_fused_ops.MODE_ENV).
        import os

        os.environ["VIDTRT_ORT_CUSTOM_OPS"] = args.ort_custom_ops
    if args.quiet:
        return _run_quietly(args)
    return _run(args)


def _run_quietly(args) -> int:
    import contextlib
    import os

    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        return _run(args)


def _run(args) -> int:
    import signal
    import threading

    from .runtime.interrupts import install_handler

    previous = None
    if threading.current_thread() is threading.main_thread():
        # install_handler keeps system calls restarting (see its docstring).
        previous = install_handler(signal.SIGTERM, _sigterm_as_interrupt)
        signal.siginterrupt(signal.SIGINT, False)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"vidtrt {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as err:
        # Input problems (bad video, bundle, checkpoint, arguments, paths) end with
        # one clear line. OSError covers FileNotFoundError, PermissionError and
        # the other path errors; FileExistsError is one too.
        print(f"vidtrt {args.command}: error: {err}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            install_handler(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
