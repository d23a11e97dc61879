"""The plugin sources compile against every TensorRT header set found here.

One build of libvidtrt_plugins.so serves one TensorRT major, so the build
directory only ever proves one header set. This test syntax-checks the plugin
sources (each plugins/<op>/*_plugin.cpp, plugins/common/plugin_library.cpp and
the C++ library test) with the host compiler against each header set:
directories from VIDTRT_TENSORRT_HEADER_DIRS (colon-separated), else every
/opt/tensorrt-*/include. The test ids name the TensorRT version of each set.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "plugins"
CXX = os.environ.get("CXX") or shutil.which("g++")
# What CMake compiles the plugin library with, plus -Werror: a new warning
# against any supported header set fails here rather than scrolling past.
FLAGS = ["-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-Wno-deprecated-declarations"]
VERSION_LINE = re.compile(r"#define\s+(?:NV_TENSORRT|TRT)_(MAJOR|MINOR|PATCH)(?:_ENTERPRISE)?\s+(\d+)")


def plugin_sources() -> list[Path]:
    """Every source of the plugin library and its test, found by name so that
    a new op's plugin is checked without editing this file."""
    sources = sorted(PLUGINS.glob("*/*_plugin.cpp"))
    return [PLUGINS / "common" / "plugin_library.cpp", *sources, PLUGINS / "tests" / "plugin_library_test.cpp"]


def header_version(include_dir: Path) -> str | None:
    """'10.8.0' from NvInferVersion.h, which spells it NV_TENSORRT_MAJOR 10
    (10.8) or TRT_MAJOR_ENTERPRISE 10 (10.16, 11.x)."""
    try:
        text = (include_dir / "NvInferVersion.h").read_text(errors="replace")
    except OSError:
        return None
    parts: dict[str, str] = {}
    for match in VERSION_LINE.finditer(text):
        parts.setdefault(match.group(1), match.group(2))
    if "MAJOR" not in parts or "MINOR" not in parts:
        return None
    return ".".join(parts[p] for p in ("MAJOR", "MINOR", "PATCH") if p in parts)


def header_sets() -> list[tuple[str, Path]]:
    """(version, include dir) of each distinct TensorRT header set, oldest first."""
    listed = os.environ.get("VIDTRT_TENSORRT_HEADER_DIRS")
    candidates = [Path(p) for p in listed.split(":") if p] if listed else [Path(p) for p in glob.glob("/opt/tensorrt-*/include")]
    found: dict[Path, tuple[str, Path]] = {}
    for include_dir in candidates:
        version = header_version(include_dir)
        if version is not None and (include_dir / "NvInferRuntime.h").exists():
            found.setdefault(include_dir.resolve(), (version, include_dir))
    return sorted(found.values(), key=lambda item: tuple(int(p) for p in item[0].split(".")))


def cuda_include_dirs() -> list[str]:
    """The CUDA include directories nvcc itself uses (NvInferRuntimeBase.h
    includes cuda_runtime_api.h); [] without nvcc or CUDA headers."""
    nvcc = shutil.which("nvcc")
    dirs: list[str] = []
    if nvcc is not None:
        try:
            out = subprocess.run(
                [nvcc, "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull],
                capture_output=True, text=True, timeout=60,
            )
            for line in (out.stdout + out.stderr).splitlines():
                # #$ INCLUDES="-I/usr/local/cuda/targets/x86_64-linux/include"
                # #$ SYSTEM_INCLUDES="-isystem" "/usr/local/cuda/.../include/cccl"
                if re.match(r"#\$ (SYSTEM_)?INCLUDES=", line):
                    quoted = re.findall(r'"([^"]*)"', line.split("=", 1)[1])
                    dirs += [q.removeprefix("-I") for q in quoted if q.removeprefix("-I").startswith("/")]
        except (OSError, subprocess.TimeoutExpired):
            pass
    for env in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(env):
            dirs.append(os.path.join(os.environ[env], "include"))
    dirs = [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]
    return dirs if any(os.path.exists(os.path.join(d, "cuda_runtime_api.h")) for d in dirs) else []


HEADER_SETS = header_sets()
CUDA_INCLUDES = cuda_include_dirs()


def skip_reason() -> str | None:
    if CXX is None:
        return "no host C++ compiler (g++ or $CXX)"
    if not CUDA_INCLUDES:
        return "no nvcc / CUDA headers (cuda_runtime_api.h), which the TensorRT headers include"
    return None


def syntax_check(include_dir: Path) -> subprocess.CompletedProcess:
    cmd = [CXX, *FLAGS, "-isystem", str(include_dir)]
    for d in CUDA_INCLUDES:
        cmd += ["-isystem", d]
    cmd += ["-I", str(PLUGINS), *map(str, plugin_sources())]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_plugin_sources_are_found():
    names = [p.name for p in plugin_sources()]
    assert "plugin_library.cpp" in names and "psla_plugin.cpp" in names, names
    assert all(p.exists() for p in plugin_sources())


@pytest.mark.parametrize(
    ("version", "include_dir"),
    [pytest.param(v, d, id=f"TensorRT-{v}") for v, d in HEADER_SETS]
    or [pytest.param(None, None, id="none", marks=pytest.mark.skip(
        reason="no TensorRT header set found (set VIDTRT_TENSORRT_HEADER_DIRS or install to /opt/tensorrt-*/include)"))],
)
def test_plugins_compile_against_tensorrt_headers(version, include_dir):
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    result = syntax_check(include_dir)
    assert result.returncode == 0, f"TensorRT {version} ({include_dir}):\n{result.stderr[-8000:]}"
    print(f"TensorRT {version} ({include_dir}): {len(plugin_sources())} sources compile")


def test_headers_older_than_10_8_are_refused(tmp_path):
    """The same check fails, with the reason, on a header set that claims 10.5."""
    reason = skip_reason()
    if reason or not HEADER_SETS:
        pytest.skip(reason or "no TensorRT header set to derive an old one from")
    version, include_dir = HEADER_SETS[0]
    old = tmp_path / "include"
    shutil.copytree(include_dir, old)
    text = (old / "NvInferVersion.h").read_text()
    text = re.sub(r"(#define\s+(?:NV_TENSORRT|TRT)_MAJOR(?:_ENTERPRISE)?\s+)\d+", r"\g<1>10", text)
    text = re.sub(r"(#define\s+(?:NV_TENSORRT|TRT)_MINOR(?:_ENTERPRISE)?\s+)\d+", r"\g<1>5", text)
    (old / "NvInferVersion.h").write_text(text)
    assert header_version(old).startswith("10.5"), f"could not rewrite the version of the {version} headers"
    result = syntax_check(old)
    assert result.returncode != 0
    assert "need TensorRT 10.8 or newer" in result.stderr, result.stderr[-4000:]
