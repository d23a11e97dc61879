"""What the native-build tests share (imported by them; not a test module)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidtrt import _native


def plugin_library_or_skip() -> Path:
    """The built libvidtrt_plugins.so, or a skip saying why this build has none."""
    info = _native.build_info()
    if not info["plugins"]:
        why = "no nvcc" if not info["cuda_kernels"] else "TensorRT headers not found (set TENSORRT_ROOT and reinstall)"
        pytest.skip(f"the plugin library was not built: {why}")
    path = _native.plugin_library_path()
    assert path is not None, "the build says it has the plugin library, but libvidtrt_plugins.so is not installed"
    return path
