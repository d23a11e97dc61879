"""Expectations that do not come from the code under test: hand-written key
frame tables, worked box-decoding examples and torchvision's box coder,
INT8 scales recomputed from an independent recording of the propagated
state, and the TensorRT builder configuration read back from the real
TensorRT-RTX API (not the simulation)."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from vidtrt.models import boxes as box_ops
from vidtrt.models.key_frames import key_index
from vidtrt.models.mega import maskrcnn_decode
from vidtrt.models.troi import mmdet_delta2bbox

# ------------------------------------------------------------ key frames

# (segment length, interval) → key frame index with the key in the middle, by hand:
# frame interval // 2 when the segment reaches it (decidable online), else the
# segment's own middle, length // 2.
MIDDLE = {
    (10, 10): 5, (7, 10): 5, (6, 10): 5, (5, 10): 2, (4, 10): 2, (1, 10): 0, (2, 10): 1,
    (5, 5): 2, (3, 5): 2, (2, 5): 1, (1, 5): 0,
    (4, 4): 2, (3, 4): 2, (2, 4): 1,
    (3, 3): 1, (2, 3): 1, (1, 3): 0,
    (2, 2): 1, (1, 2): 0, (1, 1): 0,
    (20, 20): 10, (11, 20): 10, (10, 20): 5,
}  # fmt: skip


@pytest.mark.parametrize("length, interval", sorted(MIDDLE))
def test_key_index_by_hand(length, interval):
    assert key_index(length, interval, "middle") == MIDDLE[(length, interval)]
    assert key_index(length, interval, "first") == 0


def test_placement_compares_by_value():
    # A placement read from JSON (a bundle's manifest) is a new string object, not the literal.
    first, middle = "".join(["fi", "rst"]), "".join(["mid", "dle"])
    assert key_index(7, 10, first) == 0 and key_index(7, 10, middle) == 5
    with pytest.raises(ValueError, match="key placement"):
        key_index(7, 10, "last")


def test_every_interval_and_length_has_a_key_inside_its_segment():
    for interval in range(1, 25):
        for length in range(1, interval + 1):
            k = key_index(length, interval, "middle")
            assert 0 <= k < length
            assert k == (interval // 2 if length > interval // 2 else length // 2)  # the rule, restated


# ------------------------------------------------------------ box decoding


def test_decode_worked_example():
    # Box 10 wide, 20 high centred on (5, 10). dx = 0.1 moves the centre by 1, dy = 0.2 by 4,
    # dw = log 2 doubles the width, dh = 0 keeps the height: centre (6, 14), 20 × 20.
    box = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    deltas = torch.tensor([[0.1, 0.2, math.log(2.0), 0.0]])
    torch.testing.assert_close(box_ops.decode(box, deltas), torch.tensor([[-4.0, 4.0, 16.0, 24.0]]))
    # With weights (10, 10, 5, 5) the same box needs deltas 10x / 5x as large.
    scaled = deltas * torch.tensor([10.0, 10.0, 5.0, 5.0])
    torch.testing.assert_close(box_ops.decode(box, scaled, (10.0, 10.0, 5.0, 5.0)), torch.tensor([[-4.0, 4.0, 16.0, 24.0]]))
    # Width and height deltas are not interchangeable.
    swapped = torch.tensor([[0.1, 0.2, 0.0, math.log(2.0)]])
    torch.testing.assert_close(box_ops.decode(box, swapped), torch.tensor([[1.0, -6.0, 11.0, 34.0]]))


def test_decode_clamps_huge_width_and_height_deltas():
    box = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    got = box_ops.decode(box, torch.tensor([[0.0, 0.0, 50.0, 50.0]]))
    torch.testing.assert_close(got, torch.tensor([[-492.0, -492.0, 508.0, 508.0]]))  # 16 · 1000 / 16 = 1000 wide at most
    # Negative deltas are not clamped (a box may shrink to nothing).
    tiny = box_ops.decode(box, torch.tensor([[0.0, 0.0, -50.0, -50.0]]))
    assert float(tiny[0, 2] - tiny[0, 0]) < 1e-10


def test_anchors_by_hand():
    s = math.sqrt(2.0)
    want = [
        [-32 * s / 2, -32 / s / 2, 32 * s / 2, 32 / s / 2], [-64 * s / 2, -64 / s / 2, 64 * s / 2, 64 / s / 2],  # h/w = 0.5
        [-16, -16, 16, 16], [-32, -32, 32, 32],  # 1
        [-32 / s / 2, -32 * s / 2, 32 / s / 2, 32 * s / 2], [-64 / s / 2, -64 * s / 2, 64 / s / 2, 64 * s / 2],  # 2
    ]  # fmt: skip
    torch.testing.assert_close(box_ops.base_anchors((32.0, 64.0), (0.5, 1.0, 2.0)), torch.tensor(want))
    # Position-major over a 2 × 3 map at stride 16, centred in each cell, then anchor by anchor.
    base = torch.tensor([[-1.0, -2.0, 1.0, 2.0], [-3.0, -3.0, 3.0, 3.0]])
    grid = box_ops.grid_anchors(base, 2, 3, 16)
    assert grid.shape == (12, 4)
    torch.testing.assert_close(grid[0], torch.tensor([7.0, 6.0, 9.0, 10.0]))  # cell (0, 0), anchor 0
    torch.testing.assert_close(grid[1], torch.tensor([5.0, 5.0, 11.0, 11.0]))  # cell (0, 0), anchor 1
    torch.testing.assert_close(grid[2], torch.tensor([23.0, 6.0, 25.0, 10.0]))  # cell (0, 1)
    torch.testing.assert_close(grid[6], torch.tensor([7.0, 22.0, 9.0, 26.0]))  # cell (1, 0)


def test_clip_and_pad_by_hand():
    boxes = torch.tensor([[-5.0, 3.0, 120.0, 90.0], [10.0, -1.0, 20.0, 200.0]])
    torch.testing.assert_close(box_ops.clip(boxes, 80, 100), torch.tensor([[0.0, 3.0, 100.0, 80.0], [10.0, 0.0, 20.0, 80.0]]))
    padded = box_ops.pad_to(torch.tensor([1.0, 2.0]), 5, float("-inf"))
    assert padded.tolist()[:2] == [1.0, 2.0] and len(padded) >= 5 and all(v == float("-inf") for v in padded.tolist()[2:])


def test_fixed_size_nms_by_hand():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, float("-inf")])
    # Class-agnostic: box 0 suppresses 1 (IoU 1) and 2 (IoU 81/119); box 3 (-inf) is never kept.
    index, valid = box_ops.fixed_size_nms(boxes, scores, 0.5, pre_nms=8, post_nms=4)
    assert index.tolist() == [0, 0, 0, 0] and valid.tolist() == [True, False, False, False]
    # Class-wise: the same box in another class is kept, and boxes 0 and 2 stay apart.
    groups = torch.tensor([0, 1, 1, 0])
    index, valid = box_ops.fixed_size_nms(boxes, scores, 0.5, pre_nms=8, post_nms=4, groups=groups)
    assert index[valid].tolist() == [0, 1] and valid.tolist() == [True, True, False, False]
    # Suppression inside class 0 too, and two thin boxes at the frame's far edge in different classes
    # (after the per-class offset they would coincide if classes were offset by less than the extent).
    groups = torch.tensor([0, 0, 1, 1])
    index, valid = box_ops.fixed_size_nms(boxes, torch.tensor([0.9, 0.8, 0.7, 0.6]), 0.5, pre_nms=8, post_nms=4, groups=groups)
    assert index[valid].tolist() == [0, 2, 3]
    thin = torch.tensor([[59.0, 59.0, 60.0, 60.0], [0.0, 0.0, 1.0, 1.0]])  # 1-px boxes at opposite corners
    index, valid = box_ops.fixed_size_nms(thin, torch.tensor([0.9, 0.8]), 0.5, pre_nms=4, post_nms=2, groups=torch.tensor([0, 1]))
    assert valid.tolist() == [True, True]
    # TensorRT's TopK takes K <= 3840.
    box_ops.fixed_size_nms(boxes, scores, 0.5, pre_nms=3840, post_nms=4)
    with pytest.raises(ValueError, match="3840"):
        box_ops.fixed_size_nms(boxes, scores, 0.5, pre_nms=3841, post_nms=4)


def test_decode_matches_torchvision_box_coder():
    from torchvision.models.detection._utils import BoxCoder

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=g) * 300
    boxes = torch.cat([xy, xy + 4 + torch.rand(200, 2, generator=g) * 200], dim=1)
    deltas = torch.randn(200, 4, generator=g) * torch.tensor([0.5, 0.5, 1.5, 1.5])
    for weights in ((1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)):
        want = BoxCoder(weights).decode_single(deltas, boxes)
        torch.testing.assert_close(box_ops.decode(boxes, deltas, weights), want, rtol=1e-5, atol=1e-3)
        # Encoding with torchvision and decoding here returns the boxes.
        targets = boxes + torch.randn(200, 4, generator=g) * 5
        targets[:, 2:] = torch.maximum(targets[:, 2:], targets[:, :2] + 1)
        codes = BoxCoder(weights).encode_single(targets, boxes)
        torch.testing.assert_close(box_ops.decode(boxes, codes, weights), targets, rtol=1e-4, atol=1e-3)


def test_maskrcnn_and_mmdet_decoding_worked_examples():
    # maskrcnn-benchmark (+1 pixels): box [0, 0, 9, 19] is 10 × 20, centre (5, 10); the same deltas
    # give centre (6, 14), 20 × 20, i.e. [-4, 4, 15, 23] (the far edge − 1).
    box = torch.tensor([[0.0, 0.0, 9.0, 19.0]])
    deltas = torch.tensor([[0.1, 0.2, math.log(2.0), 0.0]])
    torch.testing.assert_close(maskrcnn_decode(box, deltas, (1.0, 1.0, 1.0, 1.0)), torch.tensor([[-4.0, 4.0, 15.0, 23.0]]))
    # mmdet (no +1, stds instead of weights, clipped to the image): box [0, 0, 10, 20].
    got = mmdet_delta2bbox(torch.tensor([[0.0, 0.0, 10.0, 20.0]]), deltas, (1.0, 1.0, 1.0, 1.0), 100, 100)
    torch.testing.assert_close(got, torch.tensor([[0.0, 4.0, 16.0, 24.0]]))  # x1 = -4 clipped to 0


# ------------------------------------------------------------ INT8 scales from an independent recording


def _activation_maxima(onnx_path, names, feeds) -> dict[str, float]:
    """max |x| of each named tensor of the FP32 graph over ``feeds``, read by
    ONNX Runtime with the tensors added as outputs."""
    model = onnx.load(str(onnx_path))
    known = {o.name for o in model.graph.output}
    for name in names:
        if name not in known:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    maxima = dict.fromkeys(names, 0.0)
    for feed in feeds:
        values = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
        for name in names:
            maxima[name] = max(maxima[name], float(np.abs(values[name]).max()))
    return maxima


def test_int8_scales_follow_the_propagated_state(tmp_path):
    """The key stage's INT8 scales, recomputed here from the key stage's real
    inputs (recorded from a run of its own, F_t propagated from the previous
    key frame): symmetric min/max over every key call, scale = max |x| / 127
    (symmetric INT8 on [-127, 127], as TensorRT takes it). A calibration that recorded
    anything else for the state — zeros, a fresh state — gives other scales."""
    from vidtrt.calibration.calibrate import calibrate_bundle
    from vidtrt.calibration.capture import RecordingBackend
    from vidtrt.core.bundle import load_bundle
    from vidtrt.export.exporter import export_bundle
    from vidtrt.runtime.backends import create_backend
    from vidtrt.runtime.runner import run_video
    from vidtrt.runtime.synthetic import moving_shapes_clip, write_clip

    clip = write_clip(moving_shapes_clip(num_frames=12, height=120, width=160), tmp_path / "clip.mp4")
    bundle = export_bundle("psla", tmp_path / "b", config_name="psla_small", overrides={"key_interval": 4}, log=lambda _: None)
    calibrate_bundle(bundle, [clip], max_samples=16, progress=False, log=lambda _: None)
    bundle = load_bundle(bundle.directory)
    scales = json.loads((bundle.directory / "int8" / "scales.json").read_text())["key"]

    recorder = RecordingBackend(create_backend("onnxruntime", bundle))
    run_video(bundle, clip, backend=recorder, outputs=(), progress=False)
    feeds = recorder.records["key"]
    assert len(feeds) == 3 and [float(f["has_state"][0]) for f in feeds] == [0.0, 1.0, 1.0]
    assert np.abs(feeds[1]["temporal_in"]).max() > 0  # a real propagated state
    maxima = _activation_maxima(bundle.stage_file("key"), sorted(scales), feeds)
    for name, scale in scales.items():
        assert scale == pytest.approx(maxima[name] / 127, rel=1e-5), name
    # The state matters: the same computation with the state zeroed gives other scales.
    zeroed = [{**f, "temporal_in": np.zeros_like(f["temporal_in"]), "temporal_key_in": np.zeros_like(f["temporal_key_in"])} for f in feeds]
    other = _activation_maxima(bundle.stage_file("key"), sorted(scales), zeroed)
    assert any(other[n] / 127 != pytest.approx(s, rel=1e-3) for n, s in scales.items())


# ------------------------------------------------------------ the builder configuration, read back from TensorRT-RTX


def _rtx():
    from vidtrt.tensorrt.flavours import available, module

    ok, why = available("tensorrt-rtx")
    if not ok:
        pytest.skip(f"tensorrt-rtx is not usable here: {why}")
    return module("tensorrt-rtx")


def _tiny_onnx(path):
    x = onnx.helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, [1, 3, "H", "W"])
    y = onnx.helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, [1, 3, "H", "W"])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["image"], ["out"])], "tiny", [x], [y])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(path))
    return path


def test_builder_config_read_back_from_tensorrt_rtx():
    from vidtrt.tensorrt.build import builder_config
    from vidtrt.tensorrt.flavours import capturing_logger

    trt = _rtx()
    builder = trt.Builder(capturing_logger("tensorrt-rtx").trt_logger)
    shapes = {"image": ((1, 3, 32, 32), (1, 3, 64, 96), (1, 3, 128, 128))}
    config = builder_config(trt, builder, 300, shapes, sm="86")
    assert config.get_memory_pool_limit(trt.MemoryPoolType.WORKSPACE) == 300 * 2**20  # MB, in bytes
    assert config.num_compute_capabilities == 1 and config.get_compute_capability(0) == trt.ComputeCapability.SM86
    assert config.num_optimization_profiles == 1
    profile = builder_config(trt, builder, 16, {}, sm="75")
    assert profile.num_optimization_profiles == 0 and profile.get_compute_capability(0) == trt.ComputeCapability.SM75


@pytest.mark.parametrize("plugins_loaded", [False, True])
def test_parser_flags_read_back_from_tensorrt_rtx(tmp_path, plugins_loaded):
    """With the plugin library loaded the parser must prefer it over the ops'
    ONNX functions (ENABLE_PLUGIN_OVERRIDE); without it, the functions."""
    from vidtrt.tensorrt.build import _parse_stage
    from vidtrt.tensorrt.flavours import capturing_logger

    trt = _rtx()
    logger = capturing_logger("tensorrt-rtx")
    builder = trt.Builder(logger.trt_logger)
    network, parser = _parse_stage(trt, builder, _tiny_onnx(tmp_path / "tiny.onnx"), plugins_loaded, logger.trt_logger)
    assert parser.get_flag(trt.OnnxParserFlag.ENABLE_PLUGIN_OVERRIDE) is plugins_loaded
    assert network.num_inputs == 1 and network.get_input(0).name == "image"


def _fp32_gemm_onnx(path):
    w = onnx.numpy_helper.from_array(np.ones((4, 8), np.float32), "w")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Gemm", ["x", "w"], ["y"], transB=1, name="fc")], "fc",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 8])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 4])], [w],
    )  # fmt: skip
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(path))
    return path


def test_aot_build_returns_an_engine_and_says_why_it_could_not(tmp_path):
    """The real TensorRT-RTX, ahead of time: a tiny graph builds for SM86; a
    file that is no ONNX fails to parse, named; an FP32 GEMM cannot target
    Turing, and the error names the layer and says which graphs do."""
    from vidtrt.tensorrt.build import EngineBuildError, aot_build

    _rtx()
    engine = aot_build(_tiny_onnx(tmp_path / "tiny.onnx"), "86", {"image": ((1, 3, 8, 8), (1, 3, 16, 16), (1, 3, 32, 32))})
    assert engine.nbytes > 1000
    (tmp_path / "bad.onnx").write_bytes(b"not an ONNX file")
    with pytest.raises(EngineBuildError, match="TensorRT-RTX could not parse bad.onnx for SM86: TensorRT's ONNX parser rejected"):
        aot_build(tmp_path / "bad.onnx", "86", {})
    gemm = _fp32_gemm_onnx(tmp_path / "gemm.onnx")
    with pytest.raises(EngineBuildError) as err:
        aot_build(gemm, "75", {})
    assert "failed to build gemm.onnx for SM75" in str(err.value) and "FP32 GEMM" in str(err.value)
    assert str(err.value).endswith("Turing (SM75) has no FP32 GEMM in TensorRT-RTX: build the fp16 or int8 graphs for it.")
    assert aot_build(gemm, "86", {}).nbytes > 0


def test_aot_build_never_asks_the_parser_for_plugins(tmp_path, monkeypatch):
    """TensorRT-RTX never loads our plugin library (its parser aborts a
    CPU-only process when a node resolves to a plugin): the parse must not ask
    for plugin override."""
    from vidtrt.tensorrt import build

    _rtx()
    asked = []
    real = build._parse_stage

    def spy(trt, builder, onnx_path, plugins_loaded, logger=None):
        asked.append(plugins_loaded)
        return real(trt, builder, onnx_path, plugins_loaded, logger)

    monkeypatch.setattr(build, "_parse_stage", spy)
    build.aot_build(_tiny_onnx(tmp_path / "tiny.onnx"), "89", {"image": ((1, 3, 8, 8), (1, 3, 8, 8), (1, 3, 8, 8))})
    assert asked == [False]


class _FailingBuilder:
    """The real TensorRT-RTX builder, except that building logs ``errors``
    through the builder's logger and fails, as TensorRT does."""

    def __init__(self, trt, logger, errors):
        self.trt, self.real, self.logger, self.errors = trt, trt.Builder(logger.trt_logger), logger, errors

    def __getattr__(self, name):
        return getattr(self.real, name)

    def build_serialized_network(self, network, config):
        for e in self.errors:
            self.logger.trt_logger.log(self.trt.ILogger.Severity.ERROR, e)
        return None


@pytest.mark.parametrize(
    "sm,errors,hint",
    [
        ("75", ["fc: FP32 GEMM is not supported"], True),
        ("86", ["fc: FP32 GEMM is not supported"], False),  # the hint is about Turing only
        ("120", ["fc: FP32 GEMM is not supported"], False),
        ("75", ["fc: out of memory"], False),
        ("86", [], False),
    ],
)
def test_failed_rtx_build_lists_the_errors_and_hints_only_for_turing_fp32(tmp_path, sm, errors, hint):
    from vidtrt.tensorrt.build import EngineBuildError, aot_build
    from vidtrt.tensorrt.flavours import capturing_logger

    trt = _rtx()
    builder = _FailingBuilder(trt, capturing_logger("tensorrt-rtx"), errors)
    sm = "".join(list(sm))  # made at run time, as parse_compute_capabilities makes it: equal, not the same object
    with pytest.raises(EngineBuildError) as err:
        aot_build(_tiny_onnx(tmp_path / "tiny.onnx"), sm, {}, builder=builder, what="the tiny stage")
    lines = str(err.value).splitlines()
    assert lines[0] == "TensorRT-RTX failed to build the tiny stage:"
    assert lines[1:1 + max(len(errors), 1)] == ([f"  {e}" for e in errors] or ["  (TensorRT-RTX logged no error)"])
    assert ("Turing (SM75) has no FP32 GEMM" in str(err.value)) is hint
