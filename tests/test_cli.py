import subprocess
import sys

import pytest

from vidtrt import cli, doctor


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "doctor" in out and "selfcheck" in out


def test_doctor_reports_every_component(capsys):
    code = cli.main(["doctor"])
    out = capsys.readouterr().out
    for name in ("torch", "onnx", "onnxruntime", "host kernel library", "nvcc", "tensorrt (Python)", "GPU", "plugin library",
                 "ONNX Runtime custom-op library"):
        assert name in out
    # every missing component says what it disables
    for line in out.splitlines():
        if "missing" in line.lower():
            assert "disables:" in line, line
    assert code == 0  # required components are present in the test environment
    names = [c.name for c in doctor.components()]
    assert len(names) == len(set(names))


def test_selfcheck_runs_and_passes(tmp_path, capsys):
    code = cli.main(["selfcheck", "--out", str(tmp_path), "--dtypes", "float32"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "PSLA" in out and "onnxruntime" in out and "native" in out
    assert (tmp_path / "PSLA_float32.onnx").exists()


def test_console_script_entry_point():
    result = subprocess.run([sys.executable, "-m", "vidtrt.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "selfcheck" in result.stdout


def test_export_run_and_models_commands(tmp_path, capsys):
    from vidtrt.runtime.synthetic import moving_shapes_clip, write_clip

    bundle = tmp_path / "bundle"
    assert cli.main(["export", "--method", "psla", "--config", "psla_small", "--out", str(bundle)]) == 0
    clip = write_clip(moving_shapes_clip(num_frames=6, height=96, width=128), tmp_path / "clip.mp4")
    out = tmp_path / "out"
    code = cli.main(["run", str(bundle), str(clip), "--out", str(out), "--outputs", "jsonl,vid", "--key-interval", "3", "--no-progress"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "6 frames" in text and "key" in text and "nonkey" in text
    assert len((out / "detections.jsonl").read_text().splitlines()) == 6
    assert not (out / "annotated.mp4").exists()

    # Bad input ends with one clear line and a non-zero status.
    assert cli.main(["run", str(bundle), str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o2"), "--no-progress"]) == 1
    assert "missing.mp4" in capsys.readouterr().err
    assert cli.main(["export", "--method", "psla", "--out", str(tmp_path / "x")]) == 2

    assert cli.main(["models"]) == 0
    text = capsys.readouterr().out
    assert "psla_r101_rfcn" in text and "63.7M" in text


def test_demo_command(tmp_path, capsys):
    code = cli.main(["demo", "--out", str(tmp_path), "--frames", "12"])
    text = capsys.readouterr().out
    assert code == 0, text
    for phrase in ("key stage", "non-key stage", "per-frame N_f", "pipeline", "fps", "max deviation from the whole-video reference"):
        assert phrase in text
    assert "0 of 12 frames with unmatched detections" in text
    # The shipped trained psla_small on a held-out labelled clip: real detections, measured.
    assert "trained weights psla_small.pt" in text
    line = next(l for l in text.splitlines() if "mAP@0.5 vs the clip's annotations" in l)
    assert float(line.split("all ")[1].split(",")[0]) > 0.3, line
    for name in ("detections.jsonl", "annotated.mp4", "imagenet_vid.txt", "clip.mp4", "bundle/manifest.json"):
        assert (tmp_path / name).exists(), name


def test_schedule_options_come_from_the_registry(tmp_path, capsys):
    """Every method's schedule options are flags, listed per method in --help;
    each is validated against the bundle's (or --method's) method."""
    from vidtrt.methods import all_methods

    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    text = capsys.readouterr().out
    for method in all_methods():
        for option in method.schedule_options:
            assert option.flag in text and f"{method.name}: {option.help}"[:40] in " ".join(text.split())

    bundle = tmp_path / "mfsa"
    # Options fixed at export are set there: K = 2 instead of the config's 4.
    assert cli.main(["export", "--config", "mfsa_small", "--out", str(bundle), "--batch-frames", "2", "--precisions", "fp32"]) == 0
    import json

    assert json.loads((bundle / "manifest.json").read_text())["schedule"]["batch_frames"] == 2
    capsys.readouterr()
    clip = tmp_path / "clip.mp4"
    from vidtrt.runtime.synthetic import moving_shapes_clip, write_clip

    write_clip(moving_shapes_clip(num_frames=5, height=96, width=128), clip)
    out = str(tmp_path / "out")
    cases = [
        (["--key-interval", "3"], "mfsa has no schedule option 'key_interval'; it has mode, batch_frames"),
        (["--batch-frames", "4"], "batch_frames is fixed at export and the graphs were exported for K = 2"),
        (["--batch-frames", "0"], "batch_frames must be >= 1, got 0"),
        (["--batch-frames", "-3"], "batch_frames must be >= 1, got -3"),
        (["--mode", "online"], "mode must be one of multi, single"),
    ]
    for flags, message in cases:
        assert cli.main(["run", str(bundle), str(clip), "--out", out, "--no-progress", *flags]) == 1, flags
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()  # refused before anything ran
    assert cli.main(["run", str(bundle), str(clip), "--out", out, "--no-progress", "--mode", "single", "--outputs", "jsonl"]) == 0
    # --method is the --config's; a mismatch is refused.
    assert cli.main(["export", "--method", "psla", "--config", "mfsa_small", "--out", str(tmp_path / "y")]) == 1
    assert "belongs to method mfsa" in capsys.readouterr().err
