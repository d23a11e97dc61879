"""The command line under bad input: one clear line, a non-zero exit, no
traceback, nothing left behind that looks complete — and runs that stop
early (Ctrl-C, SIGTERM, a truncated video) keep the frames they finished,
in valid files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from vidtrt import cli
from vidtrt.core.bundle import load_bundle
from vidtrt.export.exporter import export_bundle
from vidtrt.runtime.outputs import AnnotatedVideoWriter
from vidtrt.runtime.runner import run_video
from vidtrt.runtime.synthetic import moving_shapes_clip, write_clip

CONFIG = "psla_small"


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return export_bundle("psla", tmp_path_factory.mktemp("robust") / "bundle", config_name=CONFIG, log=lambda _: None).directory


@pytest.fixture(autouse=True)
def ctrl_c_raises_keyboard_interrupt():
    """Python's own Ctrl-C handler for every test here, as in a terminal. A
    process started in the background by a non-interactive shell (`cmd &`)
    inherits SIGINT ignored, and Python then installs no handler: the
    simulated Ctrl-C would be dropped and these tests would fail for that
    reason alone."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(moving_shapes_clip(num_frames=8, height=96, width=128), tmp_path_factory.mktemp("clip") / "clip.mp4")


def _fails_in_one_line(capsys, argv, *needles, code=None) -> str:
    result = cli.main(argv)
    captured = capsys.readouterr()
    assert result != 0 if code is None else result == code, (argv, result, captured.err)
    err = captured.err.strip()
    assert "Traceback" not in captured.err and "Traceback" not in captured.out, captured.err
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def _hidden_partials(directory: Path) -> list[Path]:
    return [p for p in directory.rglob(".*partial*")]


def _copy_bundle(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _as_if_read_only(monkeypatch, *paths: Path) -> None:
    """os.access says "not writable" for ``paths`` — what a non-root user sees
    on a read-only folder (the suite runs as root in CI, where chmod stops nothing)."""
    real = os.access
    blocked = {Path(p).resolve() for p in paths}
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p).resolve() in blocked and mode & os.W_OK else real(p, mode, **kw))


def test_bad_paths_and_arguments(bundle_dir, clip, tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    ro_bundle = _copy_bundle(bundle_dir, tmp_path / "ro_bundle")
    _as_if_read_only(monkeypatch, read_only, ro_bundle)
    # run --out: a file, an unwritable folder; bundle missing / a file; outputs unknown
    _fails_in_one_line(capsys, ["run", str(bundle_dir), str(clip), "--out", str(a_file), "--no-progress"], "is a file")
    _fails_in_one_line(capsys, ["run", str(bundle_dir), str(clip), "--out", str(read_only / "o"), "--no-progress"], "no permission")
    _fails_in_one_line(capsys, ["export", "--config", CONFIG, "--out", str(read_only / "b")], "no permission")
    _fails_in_one_line(capsys, ["run", str(tmp_path / "nope"), str(clip), "--out", str(tmp_path / "o1")], "nope")
    _fails_in_one_line(capsys, ["run", str(bundle_dir), str(clip), "--out", str(tmp_path / "o2"), "--outputs", "jsonl,gif"], "gif")
    _fails_in_one_line(
        capsys, ["run", str(bundle_dir), str(clip), "--out", str(tmp_path / "o3"), "--backend", "torch", "--precision", "fp16"],
        "torch backend runs the FP32 checkpoint",
    )
    _fails_in_one_line(capsys, ["run", str(bundle_dir), str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o4"), "--no-progress"], "missing.mp4")
    for name in ("o1", "o2", "o3", "o4"):
        assert not (tmp_path / name).exists(), f"a failed run left {name}/ behind"
    # export --out: a file; a non-empty directory without --force
    _fails_in_one_line(capsys, ["export", "--config", CONFIG, "--out", str(a_file)], "is a file")
    _fails_in_one_line(capsys, ["export", "--config", CONFIG, "--out", str(bundle_dir)], "--force")
    # bench --json naming a directory fails before the benchmark runs
    started = time.perf_counter()
    _fails_in_one_line(capsys, ["bench", str(bundle_dir), str(clip), "--json", str(tmp_path)], "is a directory")
    assert time.perf_counter() - started < 20
    _fails_in_one_line(capsys, ["bench", str(bundle_dir), str(clip), "--precision", "fp8"], "--precision")
    _fails_in_one_line(capsys, ["bench", str(bundle_dir), str(clip), "--precision", "int8"], "no int8 graphs")
    # by default bench takes the precisions the bundle has (fp32 only here)
    assert cli.main(["bench", str(bundle_dir), str(clip), "--no-progress", "--json", str(tmp_path / "bench.json")]) == 0
    assert set(json.loads((tmp_path / "bench.json").read_text())["end_to_end"]) == {"fp32"}
    # selfcheck dtypes
    _fails_in_one_line(capsys, ["selfcheck", "--dtypes", "bfloat16", "--out", str(tmp_path / "s")], "--dtypes")
    _fails_in_one_line(capsys, ["selfcheck", "--dtypes", "foo", "--out", str(tmp_path / "s")], "--dtypes")
    # calibrate: a read-only bundle says so
    _fails_in_one_line(capsys, ["calibrate", str(ro_bundle), str(clip)], "read-only")
    assert not (ro_bundle / "int8").exists()


@pytest.mark.parametrize("argv", [["calibrate", "B", "V", "--max-samples", "0"], ["demo", "--frames", "0"], ["calibrate", "B", "V", "--method", "minmax"]])
def test_argument_errors_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error:" in err


def test_tampered_manifests_fail_when_opened(bundle_dir, clip, tmp_path, capsys):
    renamed = _copy_bundle(bundle_dir, tmp_path / "renamed")
    manifest = json.loads((renamed / "manifest.json").read_text())
    manifest["stages"]["keyframe"] = manifest["stages"].pop("key")
    manifest["stages"]["keyframe"]["name"] = "keyframe"
    (renamed / "manifest.json").write_text(json.dumps(manifest))
    _fails_in_one_line(capsys, ["run", str(renamed), str(clip), "--out", str(tmp_path / "r"), "--no-progress"], "no stage key")

    other_method = _copy_bundle(bundle_dir, tmp_path / "other_method")
    manifest = json.loads((other_method / "manifest.json").read_text())
    manifest["method"] = "mfsa"
    (other_method / "manifest.json").write_text(json.dumps(manifest))
    _fails_in_one_line(capsys, ["run", str(other_method), str(clip), "--out", str(tmp_path / "m"), "--no-progress"], "mfsa")


def test_export_force_replaces_another_methods_bundle(tmp_path, capsys):
    out = tmp_path / "b"
    assert cli.main(["export", "--config", "troi_small", "--out", str(out), "--precisions", "fp32"]) == 0
    assert (out / "head.onnx").exists()
    assert cli.main(["export", "--config", CONFIG, "--out", str(out), "--precisions", "fp32", "--force"]) == 0
    assert not (out / "head.onnx").exists() and not (out / "frame.onnx").exists()  # the old method's graphs are gone
    assert load_bundle(out).manifest.method == "psla"
    capsys.readouterr()


def _frames_then(exc, frames):
    """An iterable source that yields ``frames`` and then raises ``exc``."""
    yield from frames
    raise exc


def _check_outputs(out: Path, frames: int) -> None:
    lines = (out / "detections.jsonl").read_text().splitlines()
    assert [json.loads(line)["frame"] for line in lines] == list(range(frames))
    capture = cv2.VideoCapture(str(out / "annotated.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == frames
    capture.release()
    assert (out / "imagenet_vid.txt").exists()
    assert _hidden_partials(out) == []


def test_interrupted_run_keeps_completed_frames(bundle_dir, tmp_path):
    frames = moving_shapes_clip(num_frames=6, height=96, width=128)
    out = tmp_path / "out"
    summary = run_video(bundle_dir, _frames_then(KeyboardInterrupt(), list(frames)), out_dir=out, progress=False)
    assert summary.interrupted and summary.partial == "interrupted" and summary.frames == 6
    assert "PARTIAL RUN" in summary.format()
    _check_outputs(out, 6)


def _ctrl_c_inside_video_write(monkeypatch, at_frames, on_signal):
    """The annotated video's write of each frame in ``at_frames`` calls
    ``on_signal(index)`` and sends this process SIGINT before it draws:
    unheld, KeyboardInterrupt is raised right there, after the JSON lines took
    the frame and before the video did."""
    original = AnnotatedVideoWriter._write

    def write(self, index, detections, frame):
        if index in at_frames:
            on_signal(index)
            signal.raise_signal(signal.SIGINT)
        original(self, index, detections, frame)

    monkeypatch.setattr(AnnotatedVideoWriter, "_write", write)


def test_ctrl_c_inside_one_writer_lands_after_the_frame_is_in_every_output(bundle_dir, tmp_path, monkeypatch):
    signalled: list[int] = []
    _ctrl_c_inside_video_write(monkeypatch, {3}, signalled.append)
    out = tmp_path / "out"
    frames = list(moving_shapes_clip(num_frames=12, height=96, width=128))
    summary = run_video(bundle_dir, frames, out_dir=out, progress=False)
    assert signalled == [3]
    assert summary.interrupted and summary.frames == 4
    _check_outputs(out, 4)
    # the handler is back: Ctrl-C outside a run raises at once
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)


def test_second_ctrl_c_while_finishing_waiting_frames_keeps_the_outputs(bundle_dir, tmp_path, monkeypatch):
    """Ctrl-C, then another while the frames still waiting for their middle key
    frame are finished: the outputs keep every frame written, valid."""
    source_ended: list[bool] = []

    def source():
        yield from moving_shapes_clip(num_frames=6, height=96, width=128)
        source_ended.append(True)
        raise KeyboardInterrupt

    signalled: list[int] = []
    ended_before_frame_4: list[bool] = []

    def on_signal(index):
        signalled.append(index)
        ended_before_frame_4.append(bool(source_ended))

    _ctrl_c_inside_video_write(monkeypatch, {4}, on_signal)
    out = tmp_path / "out"
    summary = run_video(
        bundle_dir, source(), out_dir=out, progress=False, pipeline_options={"key_interval": 4, "key_placement": "middle"}
    )
    assert ended_before_frame_4 == [True]  # frame 4 came out of the flush, not a push
    assert signalled == [4] and summary.interrupted and summary.frames == 5
    _check_outputs(out, 5)


def test_truncated_video_keeps_completed_frames(bundle_dir, tmp_path, capsys):
    clip = write_clip(moving_shapes_clip(num_frames=24, height=96, width=128), tmp_path / "clip.mp4")
    data = bytearray(clip.read_bytes())
    start, end = data.find(b"mdat"), data.find(b"moov")
    middle = (start + end) // 2
    data[middle : end - 8] = bytes(end - 8 - middle)
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    out = tmp_path / "out"
    code = cli.main(["run", str(bundle_dir), str(damaged), "--out", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1 and "corrupt or truncated" in captured.err and "Traceback" not in captured.err
    done = len((out / "detections.jsonl").read_text().splitlines())
    assert 0 < done < 24
    assert "PARTIAL RUN" in captured.out
    _check_outputs(out, done)


def test_sigterm_keeps_completed_frames_and_leaves_no_partial_files(bundle_dir, tmp_path):
    clip = write_clip(moving_shapes_clip(num_frames=400, height=96, width=128), tmp_path / "long.mp4")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vidtrt.cli", "run", str(bundle_dir), str(clip), "--out", str(out), "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and not (out.exists() and _hidden_partials(out)):
        time.sleep(0.1)
    time.sleep(1.5)  # some frames get done
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    done = len((out / "detections.jsonl").read_text().splitlines())
    assert 0 < done < 400
    _check_outputs(out, done)


def test_help_and_doctor_start_without_importing_torch():
    """`vidtrt --help` and `vidtrt doctor` answer within a second: they import
    neither torch nor the methods (measured here: about 0.1 s and 0.3 s)."""
    code = (
        "import sys, time; t = time.perf_counter(); from vidtrt import cli; "
        "import contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n        cli.main(sys.argv[1:])\n    except SystemExit:\n        pass\n"
        "print(round(time.perf_counter() - t, 3), 'torch' in sys.modules)"
    )
    for argv in (["--help"], ["doctor"], ["build", "--help"]):
        out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60).stdout.split()
        seconds, torch_loaded = float(out[0]), out[1] == "True"
        assert not torch_loaded, argv
        assert seconds < 2.0, (argv, seconds)


def test_json_version_quiet_and_precision_lists(bundle_dir, clip, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("vidtrt ")

    doctor_json = tmp_path / "doctor.json"
    cli.main(["doctor", "--json", str(doctor_json)])
    assert {c["name"] for c in json.loads(doctor_json.read_text())["components"]} >= {"torch", "onnxruntime", "GPU"}
    models_json = tmp_path / "models.json"
    assert cli.main(["models", "--json", str(models_json)]) == 0
    configs = {row["config"]: row for row in json.loads(models_json.read_text())["configs"]}
    assert configs["psla_small"]["method"] == "psla" and configs["psla_small"]["parameters"] > 0

    run_json = tmp_path / "run.json"
    capsys.readouterr()
    code = cli.main(["run", str(bundle_dir), str(clip), "--out", str(tmp_path / "o"), "--outputs", "jsonl", "--no-progress", "-q", "--json", str(run_json)])
    assert code == 0 and capsys.readouterr().out == ""  # -q: nothing but errors
    summary = json.loads(run_json.read_text())
    assert summary["frames"] == 8 and summary["backend"] == "onnxruntime" and summary["precision"] == "fp32" and summary["partial"] is None

    # export takes --precision (a list); --precisions stays as its old spelling
    out = tmp_path / "fp32only"
    assert cli.main(["export", "--config", CONFIG, "--out", str(out), "--precision", "fp32", "--no-progress"]) == 0
    assert load_bundle(out).precisions() == ["fp32"]
    capsys.readouterr()
    _fails_in_one_line(capsys, ["build", str(out), "--runtime", "tensorrt-rtx", "--sm", "86", "--precision", "fp32,fp16"], "no fp16 graphs")


def test_run_score_threshold_coco_and_vid_offset_flags(bundle_dir, clip, tmp_path, capsys):
    out = tmp_path / "o"
    argv = ["run", str(bundle_dir), str(clip), "--out", str(out), "--outputs", "jsonl,coco,vid", "--no-progress"]
    assert cli.main(argv + ["--score-thr", "0.5", "--vid-frame-offset", "100"]) == 0
    scores = [d["score"] for line in (out / "detections.jsonl").read_text().splitlines() for d in json.loads(line)["detections"]]
    coco = json.loads((out / "detections_coco.json").read_text())
    assert all(s >= 0.5 for s in scores) and sorted(s["score"] for s in coco) == pytest.approx(sorted(scores), abs=1e-5)
    frame_ids = [int(line.split()[0]) for line in (out / "imagenet_vid.txt").read_text().splitlines()]
    assert not frame_ids or min(frame_ids) >= 101
    capsys.readouterr()
    for bad in (["--score-thr", "1.5"], ["--score-thr", "x"], ["--vid-frame-offset", "-1"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv + bad)
        assert exc.value.code == 2


def test_more_commands_under_bad_input(bundle_dir, clip, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    missing = tmp_path / "missing"
    _fails_in_one_line(capsys, ["build", str(missing), "--runtime", "tensorrt-rtx", "--sm", "86"], "missing")
    _fails_in_one_line(capsys, ["build", str(bundle_dir), "--runtime", "tensorrt-rtx", "--sm", "70"], "cannot target compute capability")
    _fails_in_one_line(capsys, ["build", str(bundle_dir), "--runtime", "tensorrt-rtx", "--sm", "86", "--precision", "fp64"], "--precision")
    _fails_in_one_line(capsys, ["build", str(bundle_dir), "--runtime", "tensorrt-rtx", "--sm", "86", "--json", str(tmp_path)], "is a directory")
    _fails_in_one_line(capsys, ["calibrate", str(missing), str(clip)], "does not exist")
    _fails_in_one_line(capsys, ["calibrate", str(a_file), str(clip)], "is a file")
    _fails_in_one_line(capsys, ["demo", "--out", str(a_file), "--frames", "2"], "is a file")
    _fails_in_one_line(capsys, ["doctor", "--json", str(tmp_path)], "is a directory")
    _fails_in_one_line(capsys, ["models", "--json", str(tmp_path)], "is a directory")
    _fails_in_one_line(capsys, ["export", "--config", "no_such_config", "--out", str(tmp_path / "e")], "no_such_config")
    _fails_in_one_line(capsys, ["export", "--method", "troi", "--checkpoint", str(a_file), "--out", str(tmp_path / "e2")], "a_file")
    _fails_in_one_line(capsys, ["bench", str(bundle_dir), str(missing / "v.mp4")], "v.mp4")


def test_decoder_noise_is_quiet_unless_verbose(bundle_dir, tmp_path):
    """FFmpeg's own messages ("moov atom not found") go to the process's
    stderr, past Python: the CLI turns them off; -v lets them through."""
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(4000))
    argv = [sys.executable, "-m", "vidtrt.cli", "run", str(bundle_dir), str(corrupt), "--out", str(tmp_path / "o"), "--no-progress"]
    # In-process CLI calls of other tests set these in this process; the child must start without them.
    env = {k: v for k, v in os.environ.items() if k not in ("OPENCV_LOG_LEVEL", "OPENCV_FFMPEG_LOGLEVEL", "ORT_LOGGING_LEVEL")}
    quiet = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert quiet.returncode == 1
    assert quiet.stderr.strip().splitlines() == [line for line in quiet.stderr.strip().splitlines() if line.startswith("vidtrt run: error:")]
    assert len(quiet.stderr.strip().splitlines()) == 1, quiet.stderr
    loud = subprocess.run(argv + ["-v"], capture_output=True, text=True, timeout=120, env=env)
    assert loud.returncode == 1 and len(loud.stderr.strip().splitlines()) > 1  # the decoder's own lines, now shown
