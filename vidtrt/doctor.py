"""`vidtrt doctor`: which components this installation has, and what each
missing one disables."""

from __future__ import annotations

import importlib
import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from types import SimpleNamespace

from . import __version__, _native


@dataclass
class Component:
    name: str
    found: bool
    detail: str
    disables: str  # what is unavailable when not found
    required: bool = False


def _module_version(name: str) -> str | None:
    """The installed version, from the package metadata when the module can be
    found (importing torch alone takes seconds; the doctor answers in one)."""
    from importlib import metadata, util

    try:
        if util.find_spec(name) is None:
            return None
    except (ImportError, ValueError):  # a broken install counts as missing
        return None
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        module = importlib.import_module(name)
        return getattr(module, "__version__", "unknown version")


def _nvcc() -> tuple[bool, str]:
    path = shutil.which("nvcc") or (os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc") if "CUDA_HOME" in os.environ else None)
    if not path or not os.path.exists(path):
        return False, "not on PATH"
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, f"{path} did not run: {err}"
    match = re.search(r"release ([\d.]+)", out)
    return True, f"{path} (CUDA {match.group(1) if match else '?'})"


def _gpus() -> tuple[bool, str]:
    from .tensorrt import cuda_available

    ok, detail = cuda_available()  # cuda-python: fast, no torch
    if ok:
        return True, detail
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout.strip()
            if out:
                return True, out.replace("\n", "; ")
        except (OSError, subprocess.TimeoutExpired):
            pass
    return False, "no CUDA device visible"


def _plugin_library() -> tuple[bool, str]:
    """Where libvidtrt_plugins.so is, the TensorRT it was built for and its creators, as the library records them."""
    path = _native.plugin_library_path()
    if path is None:
        return False, "not built"
    try:
        info = _native.read_plugin_library_info(path)
    except _native.PluginLibraryError as err:
        return False, str(err)
    creators = ", ".join(f"{namespace}::{name} v{version}" for name, version, namespace in info.creators)
    detail = f"{path}, built for TensorRT {info.tensorrt_version} (loads into TensorRT {info.tensorrt[0]}.x only); creators: {creators}"
    running = _module_version("tensorrt")
    if running is not None and running != "unknown version":
        from .tensorrt import PluginLibraryMismatch, check_plugin_library_tensorrt

        try:
            check_plugin_library_tensorrt(info.tensorrt, SimpleNamespace(__version__=running), path)
        except PluginLibraryMismatch as err:
            return False, f"{detail}. {err}"
    return True, detail


def components() -> list[Component]:
    found: list[Component] = []
    for name, disables in (
        ("torch", "everything (reference ops, models, export)"),
        ("onnx", "ONNX export"),
        ("onnxruntime", "the onnxruntime backend and export verification"),
    ):
        version = _module_version(name)
        found.append(Component(name, version is not None, version or "not importable", disables, required=True))

    if _native.available():
        info = _native.build_info()
        found.append(Component("host kernel library", True, str(_native.kernels().__file__), "", required=True))
        cuda_detail = f"compiled for sm {info['cuda_architectures']}" if info["cuda_kernels"] else "not compiled (no nvcc at build time)"
        found.append(Component("CUDA kernels", info["cuda_kernels"], cuda_detail, "the TensorRT plugin library"))
        trt_hdr = info["tensorrt_headers_version"]
        found.append(
            Component(
                "TensorRT headers (build)",
                bool(trt_hdr),
                f"{trt_hdr} in {info['tensorrt_include_dir']}" if trt_hdr else "not found at build time (set TENSORRT_ROOT and reinstall)",
                "the TensorRT plugin library",
            )
        )
        ort_ops = _native.ort_ops_library_path()
        found.append(
            Component(
                "ONNX Runtime custom-op library",
                ort_ops is not None,
                str(ort_ops) if ort_ops else "not built (no ONNX Runtime API headers: set ONNXRUNTIME_ROOT and reinstall)",
                "fused kernels inside ONNX Runtime (sessions run the ops' ONNX decompositions)",
            )
        )
        plugin_ok, plugin_detail = _plugin_library()
        found.append(
            Component("plugin library", plugin_ok, plugin_detail, "TensorRT engines with vidtrt plugins (graphs fall back to the ops' ONNX functions)")
        )
    else:
        found.append(Component("host kernel library", False, "vidtrt._kernels not importable; run `pip install -e .`", "impl='native' ops", required=True))

    ok, detail = _nvcc()
    found.append(Component("nvcc", ok, detail, "compiling the CUDA kernels and the plugin library"))
    from .tensorrt.flavours import FLAVOURS, available

    for flavour in FLAVOURS.values():
        ok, detail = available(flavour.name)
        if flavour.builds_without_gpu:
            role = "building engines without a GPU (--sm) and"
            path = "custom ops as ONNX functions"
        else:
            role = "building engines on a GPU and"
            path = "custom ops as vidtrt plugins when the plugin library is built for it"
        found.append(
            Component(
                f"{flavour.name} (Python)",
                ok,
                f"{detail}; {path}" if ok else f"{detail}; {flavour.install_hint}",
                f"{role} the {flavour.name} backend",
            )
        )
    ok, detail = _gpus()
    found.append(Component("GPU", ok, detail, "running TensorRT engines and GPU benchmarks"))
    return found


def report(rows: list[Component] | None = None) -> tuple[str, int]:
    rows = components() if rows is None else rows
    lines = [f"vidtrt {__version__} on Python {platform.python_version()} ({platform.machine()})"]
    width = max(len(c.name) for c in rows)
    for c in rows:
        status = "ok     " if c.found else ("MISSING" if c.required else "missing")
        line = f"  {status}  {c.name.ljust(width)}  {c.detail}"
        if not c.found:
            line += f"  -> disables: {c.disables}"
        lines.append(line)
    code = 1 if any(c.required and not c.found for c in rows) else 0
    return "\n".join(lines), code
