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
    for name in ("torch", "onnx", "onnxruntime", "host kernel library", "nvcc", "tensorrt (Python)", "GPU", "plugin library"):
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
    for name in ("detections.jsonl", "annotated.mp4", "imagenet_vid.txt", "clip.mp4", "bundle/manifest.json"):
        assert (tmp_path / name).exists(), name
