"""Every stage graph of every method, in every precision, really builds in
TensorRT — TensorRT for RTX, which builds ahead of time without a GPU.

For each method's small config: export fp32 and fp16 graphs, calibrate int8
on a short synthetic clip, then `vidtrt build --runtime tensorrt-rtx` each
stage for SM75, SM86 and SM89 — one process per build, because a failed
build can leave TensorRT unable to build the next one in the same process.
FP32 graphs with GEMMs cannot target Turing (SM75 has no FP32 GEMM in
TensorRT-RTX), so fp32 × SM75 is skipped with that reason; fp16 and int8 are
not. A failure names the method, stage, precision and SM, and carries
TensorRT-RTX's error (which names the layer).

Skipped, with the reason, only where tensorrt-rtx is not importable; the
README's test command installs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from vidtrt.core.bundle import load_bundle
from vidtrt.export.exporter import export_bundle
from vidtrt.export.precision import write_fp16_variants
from vidtrt.methods import method_names
from vidtrt.tensorrt.compat import EngineRecord, engine_set_key
from vidtrt.tensorrt.flavours import available

RTX_OK, RTX_WHY = available("tensorrt-rtx")
pytestmark = pytest.mark.skipif(not RTX_OK, reason=f"tensorrt-rtx is not usable here: {RTX_WHY}")

PRECISIONS = ("fp32", "fp16", "int8")
TARGETS = ("75", "86", "89")
TURING_FP32 = "TensorRT-RTX has no FP32 GEMM on Turing (SM75): fp32 graphs are built for SM80+ only"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from vidtrt.runtime.synthetic import moving_shapes_clip, write_clip

    return write_clip(moving_shapes_clip(num_frames=10, height=120, width=160), tmp_path_factory.mktemp("clip") / "clip.mp4")


_bundles: dict[str, object] = {}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, clip):
    """method → bundle with fp32, fp16 and int8 graphs, exported on first use."""
    from vidtrt.calibration.calibrate import calibrate_bundle

    def get(method: str):
        if method not in _bundles:
            directory = tmp_path_factory.mktemp(f"rtx_{method}") / method
            bundle = export_bundle(method, directory, config_name=f"{method}_small", log=lambda _: None)
            write_fp16_variants(bundle, log=lambda _: None)
            calibrate_bundle(bundle, [clip], max_samples=4, progress=False, log=lambda _: None)
            _bundles[method] = load_bundle(bundle.directory)
        return _bundles[method]

    yield get
    _bundles.clear()


def _cases():
    for method in method_names():
        for precision in PRECISIONS:
            for sm in TARGETS:
                marks = [pytest.mark.skip(reason=TURING_FP32)] if (precision, sm) == ("fp32", "75") else []
                yield pytest.param(method, precision, sm, marks=marks, id=f"{method}-{precision}-sm{sm}")


@pytest.mark.slow
@pytest.mark.parametrize("method,precision,sm", list(_cases()))
def test_every_stage_builds(bundles, method, precision, sm):
    bundle = bundles(method)
    failures, built = [], {}
    for stage in bundle.stages:
        # One process per build (see the module docstring).
        proc = subprocess.run(
            [sys.executable, "-m", "vidtrt.cli", "build", str(bundle.directory), "--runtime", "tensorrt-rtx",
             "--sm", sm, "--precision", precision, "--stages", stage],
            capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )  # fmt: skip
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-12:]
            failures.append(f"{method} {stage} {precision} SM{sm}:\n    " + "\n    ".join(tail))
            continue
        manifest = json.loads((bundle.directory / "manifest.json").read_text())
        entry = manifest["engines"][engine_set_key("tensorrt-rtx", precision, sm)]
        record = EngineRecord.from_entry(entry)
        assert (record.runtime, record.compute_capability, record.precision) == ("tensorrt-rtx", f"{sm[0]}.{sm[1]}", precision)
        assert record.gpu_name is None and record.plugin_library_sha256 is None
        engine = bundle.directory / entry["files"][stage]
        assert engine.stat().st_size == entry["stages"][stage]["bytes"] > 0
        assert manifest["files"][entry["files"][stage]]  # hashed with the bundle
        built[stage] = (entry["stages"][stage]["bytes"], entry["stages"][stage]["build_seconds"])
    assert not failures, "TensorRT-RTX could not build:\n" + "\n".join(failures)
    assert set(built) == set(bundle.stages)
