"""RoI Align from plain ops (vidtrt/models/roi_align.py) against
torchvision.ops.roi_align: eager and as an exported ONNX graph in ONNX Runtime,
which must hold no ``RoiAlign`` node (TensorRT maps it onto NVIDIA's
ROIAlign_TRT plugin, which TensorRT-RTX lacks)."""

from __future__ import annotations

import copy
import functools
import itertools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision

import rtx_aot
from vidtrt.export.memory import tensor_sizes
from vidtrt.export.onnx import export_module
from vidtrt.models import roi_align as roi_align_module
from vidtrt.models.roi_align import roi_align

ATOL = 1e-5


def torchvision_roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned):
    return torchvision.ops.roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned)


def random_rois(generator, count, batch, height, width, stride, spread=0.3):
    """Boxes in image pixels (the map times ``stride``) that reach up to
    ``spread`` of the map beyond every border, of every size from sub-pixel
    to larger than the map, in random batches."""
    span = torch.tensor([width, height], dtype=torch.float32) * stride
    centre = (torch.rand(count, 2, generator=generator) * (1 + 2 * spread) - spread) * span
    size = torch.rand(count, 2, generator=generator) ** 3 * span * 1.5
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=1)
    index = torch.randint(0, batch, (count, 1), generator=generator).float()
    return torch.cat([index, boxes], dim=1)


def features_of(generator, batch, channels, height, width):
    return torch.randn(batch, channels, height, width, generator=generator)


CASES = list(
    itertools.product(
        [True, False],  # aligned
        [1, 2, 3],  # sampling_ratio
        [1, 7, (3, 5)],  # output_size
        [1.0, 0.25, 1 / 16],  # spatial_scale
    )
)


@pytest.mark.parametrize("aligned, sampling_ratio, output_size, spatial_scale", CASES)
def test_matches_torchvision_random(aligned, sampling_ratio, output_size, spatial_scale):
    g = torch.Generator().manual_seed(hash((aligned, sampling_ratio, str(output_size), spatial_scale)) % 2**31)
    features = features_of(g, 3, 5, 11, 14)
    rois = random_rois(g, 60, 3, 11, 14, 1 / spatial_scale)
    got = roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned)
    expected = torchvision_roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def edge_rois(height: int, width: int) -> torch.Tensor:
    """RoIs in map pixels (spatial_scale 1) at the places the sampling rules change."""
    h, w = float(height), float(width)
    boxes = [
        (0, 0, w, h),  # the whole map
        (0, 0, 0, 0),  # a point at the origin
        (w, h, w, h),  # a point at the far corner
        (-3, -3, -1.5, -1.5),  # outside, above-left
        (w + 1, h + 1, w + 4, h + 4),  # outside, below-right
        (-50, -50, w + 50, h + 50),  # over the whole map and far beyond
        (-1, -1, 1, 1),  # over the top-left border
        (w - 1, h - 1, w + 1, h + 1),  # over the bottom-right border
        (w - 0.6, 0, w + 0.2, h),  # samples in (W-1, W]: the "last column" rule
        (0, h - 0.6, w, h + 0.2),
        (-2, -2, 0, 0),  # samples exactly at -1 (inside) with 1 sample and no alignment
        (w - 1, h - 1, w + 1, h + 1),  # samples exactly at W, H
        (-2.0002, -2.0002, 0, 0),  # just outside -1
        (2.3, 1.7, 2.31, 1.71),  # tiny
        (3.5, 2.5, 3.5, 2.5),  # zero size
        (4.2, 3.1, 1.1, 0.4),  # inverted (x2 < x1, y2 < y1)
        (0.5, 0.5, w - 0.5, 0.5),  # zero height, full width
        (1e6, 1e6, 2e6, 2e6),  # very far away
    ]
    return torch.tensor([(0.0, *b) for b in boxes])


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [1, 2, 4])
@pytest.mark.parametrize("output_size", [1, 2, 7])
@pytest.mark.parametrize("map_size", [(1, 1), (1, 9), (8, 1), (2, 3), (9, 12)])
def test_matches_torchvision_edges(aligned, sampling_ratio, output_size, map_size):
    g = torch.Generator().manual_seed(7)
    features = features_of(g, 2, 3, *map_size)
    rois = edge_rois(*map_size)
    rois = torch.cat([rois, rois + torch.tensor([1.0, 0, 0, 0, 0])])  # and the same in image 1
    got = roi_align(features, rois, output_size, 1.0, sampling_ratio, aligned)
    expected = torchvision_roi_align(features, rois, output_size, 1.0, sampling_ratio, aligned)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_rois_entirely_outside_read_zero():
    features = torch.randn(1, 4, 6, 7) + 5  # no zeros by chance
    rois = torch.tensor([[0.0, -9, -9, -2.5, -2.5], [0.0, 8.5, 0, 12, 5], [0.0, 0, 7.5, 6, 9]])
    out = roi_align(features, rois, 3, 1.0, 2, aligned=True)
    assert torch.equal(out, torch.zeros_like(out))


def test_batch_index_truncates_toward_zero():
    g = torch.Generator().manual_seed(3)
    features = features_of(g, 3, 4, 6, 7)
    boxes = torch.tensor([1.0, 1.0, 5.0, 4.0])
    rois = torch.stack([torch.cat([torch.tensor([b]), boxes]) for b in (0.0, -0.5, 0.99, 1.0, 1.7, 2.999)])
    got = roi_align(features, rois, 2, 1.0, 2, aligned=True)
    torch.testing.assert_close(got, torchvision_roi_align(features, rois, 2, 1.0, 2, True), atol=ATOL, rtol=0)
    torch.testing.assert_close(got[1], got[0])  # -0.5 → 0
    torch.testing.assert_close(got[4], got[3])  # 1.7 → 1


def test_empty_roi_set():
    features = torch.randn(2, 4, 5, 6)
    out = roi_align(features, torch.zeros(0, 5), (3, 2), 0.5, 2, aligned=True)
    assert out.shape == (0, 4, 3, 2)


def test_eager_blocks_give_the_same_result(monkeypatch):
    """Eager calls pool RoIs in blocks; every block size gives torchvision's result."""
    g = torch.Generator().manual_seed(5)
    features = features_of(g, 2, 6, 13, 17)
    rois = random_rois(g, 37, 2, 13, 17, 8.0)
    expected = torchvision_roi_align(features, rois, 5, 1 / 8, 2, True)
    for block in (1, 6 * 25, 6 * 25 * 4 + 1, 1 << 21):
        monkeypatch.setattr(roi_align_module, "_EAGER_BLOCK", block)
        torch.testing.assert_close(roi_align(features, rois, 5, 1 / 8, 2, True), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("aligned", [True, False])
def test_gradient_matches_torchvision(aligned):
    g = torch.Generator().manual_seed(11)
    features = features_of(g, 2, 3, 9, 10).double()
    rois = random_rois(g, 25, 2, 9, 10, 4.0).double()
    weights = torch.randn(25, 3, 4, 3, generator=g).double()
    grads = []
    for fn in (roi_align, torchvision_roi_align):
        x = features.clone().requires_grad_()
        (fn(x, rois, (4, 3), 0.25, 2, aligned) * weights).sum().backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-10, rtol=0)
    assert grads[0].abs().sum() > 0


def test_fp16_input_computes_in_fp32():
    g = torch.Generator().manual_seed(13)
    features = features_of(g, 1, 8, 12, 12).half()
    rois = random_rois(g, 20, 1, 12, 12, 16.0)
    got = roi_align(features, rois, 7, 1 / 16, 2, True)
    assert got.dtype == torch.float16
    expected = torchvision_roi_align(features.float(), rois, 7, 1 / 16, 2, True)
    torch.testing.assert_close(got.float(), expected, atol=2e-3, rtol=1e-3)  # the FP16 output's rounding


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(sampling_ratio=0), r"sampling_ratio must be a positive int, got 0; torchvision's adaptive"),
        (dict(sampling_ratio=-1), r"sampling_ratio must be a positive int, got -1"),
        (dict(sampling_ratio=2.0), r"sampling_ratio must be a positive int, got 2.0"),
        (dict(rois=torch.zeros(3, 4)), r"rois must be a tensor \[R, 5\] \(batch_index, x1, y1, x2, y2\)"),
        (dict(features=torch.zeros(4, 5, 6)), r"features must be a tensor \[N, C, H, W\]"),
        (dict(output_size=0), r"output_size must be positive, got 0"),
        (dict(output_size=(2, 3, 4)), r"output_size must be an int or a pair of ints"),
        (dict(spatial_scale=0.0), r"spatial_scale must be a positive float, got 0.0"),
        (dict(rois=torch.tensor([[2.0, 0, 0, 1, 1]])), r"rois\[0, 0\] = 2.0 is not a batch index of features with N = 2"),
        (dict(rois=torch.tensor([[0.0, 0, 0, 1, 1], [-1.0, 0, 0, 1, 1]])), r"rois\[1, 0\] = -1.0 is not a batch index"),
        (dict(rois=torch.tensor([[float("nan"), 0, 0, 1, 1]])), r"rois\[0, 0\] = nan is not a batch index"),
    ],
)  # fmt: skip
def test_bad_input(change, message):
    args = dict(features=torch.zeros(2, 3, 5, 6), rois=torch.zeros(1, 5), output_size=2, spatial_scale=1.0, sampling_ratio=2)
    args.update(change)
    with pytest.raises(ValueError, match=message):
        roi_align(args.pop("features"), args.pop("rois"), **args)


# ---------------------------------------------------------------- ONNX


class RoIAlignModule(torch.nn.Module):
    def __init__(self, output_size, spatial_scale, sampling_ratio, aligned):
        super().__init__()
        self.args = (output_size, spatial_scale, sampling_ratio, aligned)

    def forward(self, features, rois):
        return roi_align(features, rois, *self.args)


DYNAMIC = {"features": {0: "N", 2: "H", 3: "W"}, "rois": {0: "R"}, "out": {0: "R"}}


@functools.cache
def exported(directory: str, output_size, spatial_scale, sampling_ratio, aligned) -> str:
    # Traced at one size, run at others: N, H, W and R are dynamic.
    path = f"{directory}/roi_align_{output_size}_{spatial_scale}_{sampling_ratio}_{aligned}.onnx".replace(" ", "")
    g = torch.Generator().manual_seed(0)
    sample = (features_of(g, 2, 6, 10, 12), random_rois(g, 9, 2, 10, 12, 1 / spatial_scale))
    module = RoIAlignModule(output_size, spatial_scale, sampling_ratio, aligned)
    export_module(module, sample, path, ["features", "rois"], ["out"], DYNAMIC)
    return path


def all_nodes(nodes):
    for node in nodes:
        yield node
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from all_nodes(attribute.g.node)


ONNX_CASES = [((7, 7), 1 / 16, 2, True), (5, 0.25, 1, False), ((2, 3), 1.0, 3, True)]


@pytest.mark.parametrize("output_size, spatial_scale, sampling_ratio, aligned", ONNX_CASES)
def test_onnx_graph_matches_torchvision(output_size, spatial_scale, sampling_ratio, aligned, onnx_dir):
    path = exported(str(onnx_dir), output_size, spatial_scale, sampling_ratio, aligned)
    model = onnx.load(path)
    op_types = {n.op_type for n in all_nodes(model.graph.node)}
    assert "RoiAlign" not in op_types
    assert all(n.domain in ("", "ai.onnx") for n in all_nodes(model.graph.node)), "standard ops only"
    assert not model.functions
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(1)
    for batch, height, width, count in ((1, 38, 63, 40), (3, 7, 5, 25), (2, 1, 1, 6), (2, 10, 12, 0)):
        features = features_of(g, batch, 6, height, width)
        rois = torch.cat([random_rois(g, count, batch, height, width, 1 / spatial_scale), edge_rois(height, width)[:count] / spatial_scale * torch.tensor([0, 1, 1, 1, 1])])
        got = session.run(None, {"features": features.numpy(), "rois": rois.numpy()})[0]
        expected = torchvision_roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned)
        assert got.shape == tuple(expected.shape)
        np.testing.assert_allclose(got, expected.numpy(), atol=ATOL, rtol=0)


def test_onnx_graph_reads_zeros_for_a_bad_batch_index(onnx_dir):
    """A graph cannot raise: a RoI whose batch index is out of range reads zeros instead of another image."""
    path = exported(str(onnx_dir), *ONNX_CASES[0])
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    features = torch.randn(2, 6, 9, 9) + 3
    rois = torch.tensor([[2.0, 0, 0, 64, 64], [-1.0, 0, 0, 64, 64], [1.0, 0, 0, 64, 64], [float("nan"), 0, 0, 64, 64]])
    got = session.run(None, {"features": features.numpy(), "rois": rois.numpy()})[0]
    assert np.all(got[[0, 1, 3]] == 0) and np.all(got[2] != 0)


def test_onnx_graph_largest_tensor_is_one_output(onnx_dir):
    """Samples and corners are accumulated one at a time: at MFSA's scale
    (300 RoIs, 14×14, C = 1024, sampling 2) no tensor exceeds the output's
    [R, oh, ow, C] (241 MB), where gathering all 16 taps at once would take 3.9 GB."""
    g = torch.Generator().manual_seed(0)
    path = f"{onnx_dir}/roi_align_mfsa.onnx"
    module = RoIAlignModule(14, 1 / 16, 2, True)
    sample = (features_of(g, 1, 1024, 5, 6), random_rois(g, 3, 1, 5, 6, 16.0))
    export_module(module, sample, path, ["features", "rois"], ["out"], DYNAMIC)
    sizes = tensor_sizes(onnx.load(path), {"features": [1, 1024, 38, 63], "rois": [300, 5]})
    assert not [s for s in sizes if s.bytes is None], "shape inference left dims unknown"
    one_output = 300 * 14 * 14 * 1024 * 4
    assert sizes[0].bytes == one_output
    assert sum(s.bytes == one_output for s in sizes) >= 16  # the taps really are that size


@pytest.mark.skipif(not rtx_aot.AVAILABLE, reason="tensorrt_rtx is not installed")
@pytest.mark.parametrize("sm", ["75", "86", "89"])
def test_onnx_graph_builds_in_tensorrt_rtx(sm, onnx_dir):
    path = exported(str(onnx_dir), *ONNX_CASES[0])
    profile = {"features": ([1, 6, 1, 1], [1, 6, 38, 63], [2, 6, 64, 64]), "rois": ([0, 5], [300, 5], [600, 5])}
    built, log = rtx_aot.build(path, sm, profile)
    assert built, log


# ------------------------------------------------- every exported stage graph


@functools.cache
def stage_graphs(config_name: str) -> dict[str, onnx.ModelProto]:
    import tempfile

    from vidtrt.methods import method_of_config

    method = method_of_config(config_name)
    _, detector = method.load_detector(config_name)
    export_detector = copy.deepcopy(detector).fold_bn().eval()
    samples = method.stage_samples(detector)
    graphs = {}
    with tempfile.TemporaryDirectory() as directory:
        for name, module in method.stage_modules(export_detector).items():
            graphs[name] = export_module(
                module, samples[name], f"{directory}/{name}.onnx", module.input_names, module.output_names, method.dynamic_axes(name)
            )
    return graphs


@pytest.mark.parametrize("config_name", ["psla_small", "mfsa_small", "troi_small"])
def test_no_stage_graph_has_an_onnx_roi_align(config_name):
    """TensorRT parses ONNX RoiAlign into NVIDIA's ROIAlign_TRT plugin, which
    TensorRT-RTX does not have: no stage of any method may contain one."""
    for stage, model in stage_graphs(config_name).items():
        nodes = list(all_nodes(model.graph.node)) + [n for f in model.functions for n in all_nodes(f.node)]
        assert "RoiAlign" not in {n.op_type for n in nodes}, stage
        assert {n.domain for n in nodes} <= {"", "ai.onnx", "vidtrt"}, stage
