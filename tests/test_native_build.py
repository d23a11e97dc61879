"""The native layers build: CMake derives each op's sources from
plugins/vidtrt_ops.def, CUDA sources compile with nvcc, and the TensorRT
plugin library loads and describes its plugins correctly (C++ test)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from native_helpers import plugin_library_or_skip
from vidtrt import _native
from vidtrt.ops import registry

ROOT = Path(__file__).resolve().parents[1]
CUDA_SOURCES = sorted((ROOT / "plugins").rglob("*.cu"))
NVCC = shutil.which("nvcc")
CMAKE = shutil.which("cmake")
OP_TABLE_SCRIPT = ROOT / "plugins" / "vidtrt_ops.cmake"


# ---------------------------------------------------------------- sources from plugins/vidtrt_ops.def


def read_op_table_with_cmake(source_dir: Path) -> subprocess.CompletedProcess:
    """Runs CMakeLists.txt's reading of the op table as a script (no compiler)."""
    if CMAKE is None:
        pytest.skip("cmake not found on PATH")
    cmd = [CMAKE, f"-DVIDTRT_SOURCE_DIR={source_dir}", "-P", str(OP_TABLE_SCRIPT)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_cmake_derives_every_op_source_list_from_the_op_table():
    result = read_op_table_with_cmake(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    derived = dict(line.removeprefix("-- ").split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    ops = [entry.directory for entry in registry.read_op_table(ROOT / "plugins" / registry.OP_TABLE_NAME)]
    assert derived["VIDTRT_OPS"].split(";") == ops
    for variable, suffix in (("VIDTRT_HOST_KERNEL_SOURCES", "_host.cpp"), ("VIDTRT_CUDA_KERNEL_SOURCES", "_cuda.cu"),
                             ("VIDTRT_PLUGIN_SOURCES", "_plugin.cpp")):  # fmt: skip
        assert derived[variable].split(";") == [f"plugins/{op}/{op}{suffix}" for op in ops], variable


def copy_of_the_op_sources(root: Path, drop: str | None = None) -> Path:
    """A tree with plugins/vidtrt_ops.def and empty stand-ins for the sources
    CMake compiles, less `drop` (a path relative to the root)."""
    (root / "plugins").mkdir(parents=True)
    shutil.copy(ROOT / "plugins" / registry.OP_TABLE_NAME, root / "plugins")
    for entry in registry.read_op_table(ROOT / "plugins" / registry.OP_TABLE_NAME):
        (root / "plugins" / entry.directory).mkdir()
        for suffix in ("_host.cpp", "_cuda.cu", "_plugin.cpp"):
            path = f"plugins/{entry.directory}/{entry.directory}{suffix}"
            if path != drop:
                (root / path).touch()
    return root


@pytest.mark.parametrize("drop", ["plugins/psla/psla_host.cpp", "plugins/fixed_size_nms/fixed_size_nms_cuda.cu",
                                  "plugins/ps_roi_align/ps_roi_align_plugin.cpp"])  # fmt: skip
def test_cmake_refuses_an_op_with_a_missing_source_and_names_it(drop, tmp_path):
    assert read_op_table_with_cmake(copy_of_the_op_sources(tmp_path / "all")).returncode == 0
    result = read_op_table_with_cmake(copy_of_the_op_sources(tmp_path / "one_missing", drop=drop))
    assert result.returncode != 0
    assert "lists ops whose sources are missing" in result.stderr and drop in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('VIDTRT_OP(psla, PSLA, 1, PslaPluginCreator)', "malformed line"),
        ('VIDTRT_OP(psla, PSLA, "1", PslaPluginCreator)', "lists the op directory 'psla' twice"),
        ('VIDTRT_OP(psla2, PSLA, "2", Psla2PluginCreator)', "lists the plugin name 'PSLA' twice"),
    ],
)  # fmt: skip
def test_cmake_refuses_a_malformed_or_repeated_line(line, message, tmp_path):
    root = copy_of_the_op_sources(tmp_path)
    with open(root / "plugins" / registry.OP_TABLE_NAME, "a") as table:
        table.write(line + "\n")
    result = read_op_table_with_cmake(root)
    assert result.returncode != 0 and message in " ".join(result.stderr.split()), result.stderr


# ---------------------------------------------------------------- CUDA sources and the plugin library


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




def test_plugin_library_cpp_test():
    """Runs plugins/tests/plugin_library_test.cpp against the built library."""
    library = plugin_library_or_skip()
    binary = _native.library_dir() / "vidtrt_plugin_library_test"
    result = subprocess.run([str(binary), str(library)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1].endswith(", 0 failed"), result.stdout


def test_plugin_library_exports_only_entry_points():
    """TensorRT's two entry points and the info record vidtrt reads
    (vidtrtPluginLibraryInfo); every other function stays hidden."""
    library = plugin_library_or_skip()
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) not found: cannot list the library's dynamic symbols")
    out = subprocess.run([nm, "-D", "--defined-only", str(library)], capture_output=True, text=True).stdout
    symbols = {line.split()[-1] for line in out.splitlines() if line.split() and line.split()[-2] in {"T", "W"}}
    assert symbols == {"getCreators", "setLoggerFinder", "vidtrtPluginLibraryInfo"}
    ldd = subprocess.run(["ldd", str(library)], capture_output=True, text=True).stdout
    assert "libnvinfer" not in ldd, "the plugin library must not need libnvinfer to load"
