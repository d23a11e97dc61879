"""The native layers build: CUDA sources compile with nvcc, and the TensorRT
plugin library loads and describes its plugins correctly (C++ test)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from vidtrt import _native

ROOT = Path(__file__).resolve().parents[1]
CUDA_SOURCES = sorted((ROOT / "plugins").rglob("*.cu"))
NVCC = shutil.which("nvcc")


def test_there_are_cuda_sources():
    assert CUDA_SOURCES, "no .cu files under plugins/"


@pytest.mark.skipif(NVCC is None, reason="nvcc not found on PATH: the CUDA sources cannot be compiled here")
@pytest.mark.parametrize("source", CUDA_SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_cuda_source_compiles(source, tmp_path):
    cmd = [NVCC, "-std=c++17", "-arch=sm_75", "-Werror=all-warnings", "-c", str(source), "-o", str(tmp_path / "k.o")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stdout}\n{result.stderr}"


def test_build_reports_its_contents():
    info = _native.build_info()
    assert set(info) >= {"cuda_kernels", "plugins", "cuda_architectures", "tensorrt_headers_version"}
    if info["plugins"]:
        assert info["cuda_kernels"] and info["tensorrt_headers_version"]


def _plugin_library_or_skip() -> Path:
    info = _native.build_info()
    if not info["plugins"]:
        why = "no nvcc" if not info["cuda_kernels"] else "TensorRT headers not found (set TENSORRT_ROOT and reinstall)"
        pytest.skip(f"the plugin library was not built: {why}")
    path = _native.plugin_library_path()
    assert path is not None, "the build says it has the plugin library, but libvidtrt_plugins.so is not installed"
    return path


def test_plugin_library_cpp_test():
    """Runs plugins/tests/plugin_library_test.cpp against the built library."""
    library = _plugin_library_or_skip()
    binary = _native.library_dir() / "vidtrt_plugin_library_test"
    result = subprocess.run([str(binary), str(library)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1].endswith(", 0 failed"), result.stdout


def test_plugin_library_exports_only_entry_points():
    """TensorRT's two entry points and the info record vidtrt reads
    (vidtrtPluginLibraryInfo); every other function stays hidden."""
    library = _plugin_library_or_skip()
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) not found: cannot list the library's dynamic symbols")
    out = subprocess.run([nm, "-D", "--defined-only", str(library)], capture_output=True, text=True).stdout
    symbols = {line.split()[-1] for line in out.splitlines() if line.split() and line.split()[-2] in {"T", "W"}}
    assert symbols == {"getCreators", "setLoggerFinder", "vidtrtPluginLibraryInfo"}
    ldd = subprocess.run(["ldd", str(library)], capture_output=True, text=True).stdout
    assert "libnvinfer" not in ldd, "the plugin library must not need libnvinfer to load"
