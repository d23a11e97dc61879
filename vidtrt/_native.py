"""Access to the host kernel library (the C++ extension vidtrt._kernels) and
to what the TensorRT plugin library (libvidtrt_plugins.so) says about itself."""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path
from types import ModuleType
from typing import NamedTuple


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


def ort_ops_library_path() -> Path | None:
    """libvidtrt_ort_ops.so (the custom ops as ONNX Runtime kernels), or None
    when this build has none (no ONNX Runtime API headers at build time)."""
    if not available() or not build_info().get("ort_ops"):
        return None
    path = library_dir() / "libvidtrt_ort_ops.so"
    return path if path.exists() else None


# ---------------------------------------------------------------- plugin library info
#
# libvidtrt_plugins.so exports vidtrtPluginLibraryInfo(), a static C string
# written from the same creator table as getCreators():
#   "tensorrt=<major>.<minor>;creators=<name>:<version>:<namespace>,..."
# It is read with ctypes, so knowing which TensorRT the library was built for
# and which creators it holds needs neither TensorRT nor a GPU. Loading the
# library this way registers nothing: the library does no work at load time.

PLUGIN_LIBRARY_INFO_SYMBOL = "vidtrtPluginLibraryInfo"


class PluginLibraryError(RuntimeError):
    """The plugin library cannot be read, or describes itself in a way this vidtrt does not understand."""


class PluginLibraryInfo(NamedTuple):
    tensorrt: tuple[int, int]  # major, minor of the TensorRT headers it was compiled against
    creators: tuple[tuple[str, str, str], ...]  # (name, version, namespace), in getCreators() order

    @property
    def tensorrt_version(self) -> str:
        return f"{self.tensorrt[0]}.{self.tensorrt[1]}"


def parse_plugin_library_info(text: str) -> PluginLibraryInfo:
    """Parses vidtrtPluginLibraryInfo()'s string. Keys other than ``tensorrt``
    and ``creators`` are ignored, so a newer library may add some."""
    fields: dict[str, str] = {}
    for section in text.split(";"):
        key, sep, value = section.partition("=")
        if not sep or not key:
            raise PluginLibraryError(f"malformed plugin library info {text!r}: section {section!r} is not key=value")
        if key in fields:
            raise PluginLibraryError(f"malformed plugin library info {text!r}: {key!r} appears twice")
        fields[key] = value
    missing = {"tensorrt", "creators"} - fields.keys()
    if missing:
        raise PluginLibraryError(f"plugin library info {text!r} lacks {', '.join(sorted(missing))}")
    version = fields["tensorrt"].split(".")
    if len(version) != 2 or not all(part.isdigit() for part in version):
        raise PluginLibraryError(f"plugin library info {text!r}: tensorrt={fields['tensorrt']!r} is not <major>.<minor>")
    creators = []
    for entry in fields["creators"].split(",") if fields["creators"] else []:
        parts = entry.split(":")
        if len(parts) != 3 or not all(parts):
            raise PluginLibraryError(f"plugin library info {text!r}: creator {entry!r} is not <name>:<version>:<namespace>")
        creators.append((parts[0], parts[1], parts[2]))
    return PluginLibraryInfo((int(version[0]), int(version[1])), tuple(creators))


def read_plugin_library_info(path: str | Path) -> PluginLibraryInfo:
    """What the plugin library at ``path`` records about itself (dlopen + one
    call; no TensorRT)."""
    path = Path(path)
    try:
        library = ctypes.CDLL(str(path))
    except OSError as err:
        raise PluginLibraryError(f"cannot load {path} to read its info: {err}") from err
    try:
        describe = getattr(library, PLUGIN_LIBRARY_INFO_SYMBOL)
    except AttributeError:
        raise PluginLibraryError(
            f"{path} exports no {PLUGIN_LIBRARY_INFO_SYMBOL}(): it predates the version record or is not vidtrt's "
            "plugin library; rebuild it with `pip install -e .`"
        ) from None
    describe.restype = ctypes.c_char_p
    describe.argtypes = []
    raw = describe()
    if raw is None:
        raise PluginLibraryError(f"{path}: {PLUGIN_LIBRARY_INFO_SYMBOL}() returned NULL (out of memory?)")
    return parse_plugin_library_info(raw.decode("utf-8"))


def plugin_library_info() -> PluginLibraryInfo | None:
    """The installed plugin library's info, or None when this build has no
    plugin library. Raises PluginLibraryError when it cannot be read."""
    path = plugin_library_path()
    return None if path is None else read_plugin_library_info(path)
