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
