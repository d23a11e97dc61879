"""Ahead-of-time TensorRT-RTX builds of small ONNX graphs, for tests.

Each build runs in its own process: TensorRT-RTX's parser aborts the process
when a node resolves to a plugin on a machine without a GPU, and a failed
build can leave the builder unusable for the next one.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

AVAILABLE = importlib.util.find_spec("tensorrt_rtx") is not None

_SCRIPT = r"""
import json, sys
from vidtrt.tensorrt.build import EngineBuildError, aot_build
path, sm, profile = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
try:
    aot_build(path, sm, {name: tuple(map(tuple, shapes)) for name, shapes in profile.items()})
except EngineBuildError as err:
    print(err)
    sys.exit(4)
"""


def build(path, sm: str, profile: dict[str, tuple], timeout: float = 600) -> tuple[bool, str]:
    """Parses and builds ``path`` for compute capability ``sm`` ("75", "86",
    "89"...) with one optimisation profile {input: (min, opt, max)}.
    Returns (built, TensorRT's log)."""
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(path), sm, json.dumps(profile)],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    return done.returncode == 0, done.stdout + done.stderr
