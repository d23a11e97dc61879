"""The counts behind benchmarks/gpu_roofline.py (a bound computed from counts):
its model of how often each stage runs per frame against the real pipelines'
call counts, and its FLOP count against a hand count on a tiny stage."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import gpu_roofline  # noqa: E402

from vidtrt.export.exporter import export_bundle  # noqa: E402
from vidtrt.methods import get_method, method_names  # noqa: E402
from vidtrt.methods.common import sample_image  # noqa: E402
from vidtrt.ops import registry  # noqa: E402
from vidtrt.runtime.backends import create_backend  # noqa: E402
from vidtrt.runtime.pipelines import create_pipeline  # noqa: E402


@pytest.mark.slow
@pytest.mark.parametrize("method_name", method_names())
def test_calls_per_frame_match_the_pipelines(method_name, tmp_path):
    method = get_method(method_name)
    bundle = export_bundle(method.name, tmp_path / "b", config_name=method.small_config, log=lambda _: None, verify=False)
    backend = create_backend("torch", bundle)
    _, detector = method.load_detector(checkpoint=bundle.path(bundle.manifest.checkpoint))
    schedule = bundle.manifest.schedule
    frames = 60  # a multiple of every small config's interval and batch
    stream = create_pipeline(backend).stream()
    image = sample_image(detector.cfg, seed=1).numpy()
    for i in range(frames):
        stream.push(i, image)
    stream.flush()
    measured = {stage: len(times) / frames for stage, times in backend.timings.items()}
    model = {k: v for k, v in gpu_roofline.calls_per_frame(method.name, schedule).items() if v}
    assert measured == pytest.approx(model), (schedule, measured, model)


def test_custom_op_work_is_counted_and_convolutions_by_hand():
    """A 3×3 convolution (2·k²·Cin·Cout·H·W FLOPs) and a PSLA call (its fused
    kernel's work) inside one counted forward."""
    from torch.utils.flop_counter import FlopCounterMode

    from vidtrt.ops.psla import psla

    conv = torch.nn.Conv2d(4, 8, 3, padding=1, bias=False)
    x = torch.randn(1, 4, 6, 7)
    with torch.no_grad(), gpu_roofline._CustomOpWork() as custom, FlopCounterMode(display=False) as flops:
        psla_module = sys.modules["vidtrt.ops.psla"]  # (vidtrt.ops.psla is also the function's name)
        y = conv(x)
        out = psla_module.psla(y, y, y, 1)  # through the module attribute, as the models call it
    assert flops.get_total_flops() == 2 * 9 * 4 * 8 * 6 * 7
    expected = registry.registered_ops()["PSLA"].work((y, y, y), {"max_disp": 1})
    assert custom.flops == expected["flops"] > 0
    assert torch.allclose(out, psla(y, y, y, 1, impl="reference"), atol=1e-5)
    assert psla_module.psla is psla, "the op is restored after counting"
