"""Access to the host kernel library (the C++ extension vidtrt._kernels)."""

from __future__ import annotations

import functools
from pathlib import Path
from types import ModuleType


class NativeLibraryMissing(ImportError):
    """The host kernel library was not built into this installation."""


@functools.cache
def kernels() -> ModuleType:
    try:
        from vidtrt import _kernels  # type: ignore[attr-defined]
    except ImportError as err:
        raise NativeLibraryMissing(
            "vidtrt's host kernel library (vidtrt._kernels) is not importable: "
            f"{err}. Build it with `pip install -e .` from the repository root."
        ) from err
    return _kernels


def available() -> bool:
    try:
        kernels()
    except NativeLibraryMissing:
        return False
    return True


def build_info() -> dict:
    """What the native build contains (CUDA kernels, plugin library, TensorRT headers)."""
    return dict(kernels().BUILD_INFO)


def library_dir() -> Path:
    """Where the build installed the plugin library and its C++ test."""
    return Path(kernels().__file__).resolve().parent / "lib"


def plugin_library_path() -> Path | None:
    """libvidtrt_plugins.so, or None when this build has no plugin library."""
    if not available() or not build_info()["plugins"]:
        return None
    path = library_dir() / "libvidtrt_plugins.so"
    return path if path.exists() else None
