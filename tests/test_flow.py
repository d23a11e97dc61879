"""FlowNet-S (mmtracking FlowNetSimple), flow-guided warping (flow_warp_feats),
the Impression Network scale map and fusion: references, ONNX, TensorRT-RTX."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import rtx_aot
import torch
import torch.nn.functional as F

from vidtrt.export.onnx import DEFAULT_OPSET, export_module
from vidtrt.export.precision import convert_fp16
from vidtrt.models.flow import (
    FlowNetConfig,
    FlowNetSimple,
    ImpressionFusion,
    ScaleMap,
    flow_warp_feats,
    resize_flow,
    tiny_flownet_config,
    warp,
    warp_and_scale,
)

# ------------------------------------------------------------------ warping


def naive_warp(features: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """float64 loop: upstream normalises x + dx by w (grid = (x+dx)/w*2-1) and
    grid_sample(align_corners=True) maps g back to (g+1)/2*(w-1); border
    padding clamps the source coordinate into [0, w-1]; then bilinear."""
    n, c, h, w = features.shape
    out = np.zeros((n, c, h, w))
    for b in range(n):
        for y in range(h):
            for x in range(w):
                sx = ((x + flow[b, 0, y, x]) / w * 2 - 1 + 1) / 2 * (w - 1)
                sy = ((y + flow[b, 1, y, x]) / h * 2 - 1 + 1) / 2 * (h - 1)
                sx = min(max(sx, 0.0), w - 1.0)
                sy = min(max(sy, 0.0), h - 1.0)
                x0, y0 = math.floor(sx), math.floor(sy)
                x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
                ax, ay = sx - x0, sy - y0
                for ch in range(c):
                    f = features[b, ch]
                    out[b, ch, y, x] = (
                        f[y0, x0] * (1 - ax) * (1 - ay) + f[y0, x1] * ax * (1 - ay)
                        + f[y1, x0] * (1 - ax) * ay + f[y1, x1] * ax * ay
                    )  # fmt: skip
    return out


def upstream_flow_warp_feats(x, flow):
    """mmtracking's flow_warp_feats as its source does it (meshgrid, in-place
    normalisation), written here as the reference for ours."""
    scale = float(x.shape[-1]) / flow.shape[-1]
    flow = F.interpolate(flow, scale_factor=scale, mode="bilinear", align_corners=False) * scale
    h, w = x.shape[-2:]
    hh, ww = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    grid = torch.cat((ww.to(flow)[None, None], hh.to(flow)[None, None]), dim=1) + flow
    grid[:, 0] = grid[:, 0] / w * 2 - 1
    grid[:, 1] = grid[:, 1] / h * 2 - 1
    return F.grid_sample(x, grid.permute(0, 2, 3, 1), padding_mode="border", align_corners=True)


def rand(g, *shape, scale=1.0):
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def check_against_naive(features, flow):
    got = warp(features, flow).numpy()
    np.testing.assert_allclose(got, naive_warp(features.numpy(), flow.numpy()), rtol=0, atol=1e-12)
    return got


def test_zero_flow_samples_upstream_positions_not_exact_identity():
    # Upstream's /w normalisation with align_corners=True: column x is read at
    # x * (w-1)/w. Column 0 is exact; the last column is read between w-2 and w-1.
    g = torch.Generator().manual_seed(0)
    features = rand(g, 1, 3, 5, 7)
    got = check_against_naive(features, torch.zeros(1, 2, 5, 7, dtype=torch.float64))
    np.testing.assert_allclose(got[..., 0, 0], features[..., 0, 0].numpy(), atol=1e-12)
    assert not np.allclose(got, features.numpy())
    # A feature map linear in x and y shows the shrink directly.
    columns, rows = torch.arange(7, dtype=torch.float64), torch.arange(5, dtype=torch.float64)
    ramp = (columns.view(1, 7) + 10 * rows.view(5, 1)).view(1, 1, 5, 7)
    got = warp(ramp, torch.zeros(1, 2, 5, 7, dtype=torch.float64))
    xs, ys = torch.arange(7) * 6 / 7, torch.arange(5) * 4 / 5
    np.testing.assert_allclose(got[0, 0].numpy(), (xs.view(1, 7) + 10 * ys.view(5, 1)).numpy(), atol=1e-12)


def test_constant_flow_and_constant_features():
    g = torch.Generator().manual_seed(1)
    constant = torch.full((2, 4, 6, 6), 3.25, dtype=torch.float64)
    flow = rand(g, 2, 2, 6, 6, scale=20.0)  # far out of bounds too
    np.testing.assert_allclose(warp(constant, flow).numpy(), 3.25, atol=1e-12)


@pytest.mark.parametrize("shift", [(1, 0), (0, -2), (3, 2), (-1, -1)])
def test_integer_shifts(shift):
    g = torch.Generator().manual_seed(2)
    features = rand(g, 1, 2, 6, 8)
    flow = torch.empty(1, 2, 6, 8, dtype=torch.float64)
    flow[:, 0], flow[:, 1] = shift[0], shift[1]
    check_against_naive(features, flow)


@pytest.mark.parametrize("spread", [0.4, 2.5, 30.0])  # sub-pixel, several pixels, mostly outside
def test_random_flows_against_naive_loop(spread):
    g = torch.Generator().manual_seed(3)
    check_against_naive(rand(g, 2, 3, 5, 9), rand(g, 2, 2, 5, 9, scale=spread))


def test_borders_clamp_to_edge_values():
    g = torch.Generator().manual_seed(4)
    features = rand(g, 1, 2, 4, 5)
    flow = torch.zeros(1, 2, 4, 5, dtype=torch.float64)
    flow[:, 0] = -100.0  # every sample left of the map: the first column, bilinear in y
    got = check_against_naive(features, flow)
    ys = torch.arange(4, dtype=torch.float64) * 3 / 4
    want = np.stack([np.interp(ys.numpy(), np.arange(4), features[0, c, :, 0].numpy()) for c in range(2)])
    np.testing.assert_allclose(got[0, :, :, 0], want, atol=1e-12)
    flow[:, 0], flow[:, 1] = 100.0, 100.0  # bottom-right corner everywhere
    got = check_against_naive(features, flow)
    np.testing.assert_allclose(got[0], features[0, :, -1:, -1:].expand(2, 4, 5).numpy(), atol=1e-12)


def test_single_row_and_column_maps():
    g = torch.Generator().manual_seed(5)
    check_against_naive(rand(g, 1, 2, 1, 6), rand(g, 1, 2, 1, 6, scale=2.0))
    check_against_naive(rand(g, 1, 2, 6, 1), rand(g, 1, 2, 6, 1, scale=2.0))


@pytest.mark.parametrize("feature_hw,flow_hw", [((6, 8), (96, 128)), ((5, 7), (80, 112)), ((4, 4), (4, 4))])
def test_flow_warp_feats_matches_upstream(feature_hw, flow_hw):
    g = torch.Generator().manual_seed(6)
    features = rand(g, 2, 3, *feature_hw)
    flow = rand(g, 2, 2, *flow_hw, scale=12.0)
    want = upstream_flow_warp_feats(features, flow)
    torch.testing.assert_close(flow_warp_feats(features, flow), want, rtol=0, atol=1e-12)
    # The constant-scale form the exported graphs use (flow at stride 16 of the frame).
    torch.testing.assert_close(warp(features, resize_flow(flow, feature_hw[1] / flow_hw[1])), want, rtol=0, atol=1e-12)


def test_resize_flow_scales_values():
    flow = torch.full((1, 2, 32, 48), 16.0)
    small = resize_flow(flow, 1 / 16)
    assert small.shape == (1, 2, 2, 3)
    torch.testing.assert_close(small, torch.ones_like(small))


# ------------------------------------------------------------- FlowNetSimple

# Keys and shapes of mmtracking's FlowNetSimple (default arch_setting) as its
# source builds them: ConvModule puts the layer under ``.conv``; only the
# encoder convs have biases.
UPSTREAM_KEYS = {
    "conv1.0.conv.weight": (64, 6, 7, 7),
    "conv1.0.conv.bias": (64,),
    "conv2.0.conv.weight": (128, 64, 5, 5),
    "conv3.0.conv.weight": (256, 128, 5, 5),
    "conv3.1.conv.weight": (256, 256, 3, 3),  # the group-3 kernel override
    "conv4.1.conv.bias": (512,),
    "conv5.0.conv.weight": (512, 512, 3, 3),
    "conv6.0.conv.weight": (1024, 512, 3, 3),
    "conv6.1.conv.weight": (1024, 1024, 3, 3),
    "conv6.1.conv.bias": (1024,),
    "deconv5.conv.weight": (1024, 512, 4, 4),
    "deconv4.conv.weight": (1026, 256, 4, 4),
    "deconv3.conv.weight": (770, 128, 4, 4),
    "deconv2.conv.weight": (386, 64, 4, 4),
    "predict_flow6.conv.weight": (2, 1024, 3, 3),
    "predict_flow5.conv.weight": (2, 1026, 3, 3),
    "predict_flow4.conv.weight": (2, 770, 3, 3),
    "predict_flow3.conv.weight": (2, 386, 3, 3),
    "upsample_flow5.conv.weight": (2, 2, 4, 4),
    "upsample_flow2.conv.weight": (2, 2, 4, 4),
    "predict_flow.conv.weight": (2, 194, 3, 3),
}
UPSTREAM_KEY_COUNT = 2 * 10 + 4 + 5 + 4  # 10 biased convs, 4 deconvs, 5 flow predictors, 4 flow upsamplers


def test_state_dict_keys_match_mmtracking():
    state = FlowNetSimple().state_dict()
    assert len(state) == UPSTREAM_KEY_COUNT
    for key, shape in UPSTREAM_KEYS.items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, key
    assert not [k for k in state if ("deconv" in k or "flow" in k) and k.endswith("bias")]
    # A checkpoint written with the upstream prefix loads once it is stripped.
    prefixed = {f"motion.{k}": v for k, v in state.items()}
    FlowNetSimple().load_state_dict({k.removeprefix("motion."): v for k, v in prefixed.items()}, strict=True)


def test_config_round_trip():
    cfg = tiny_flownet_config()
    assert FlowNetConfig.from_dict(cfg.as_dict()) == cfg
    assert FlowNetConfig.from_dict(FlowNetConfig().as_dict()) == FlowNetConfig()
    with pytest.raises(ValueError):
        FlowNetConfig.from_dict({**cfg.as_dict(), "bogus": 1})


def expected_flow_hw(size: int, s: float = 0.5) -> int:
    half = math.floor(size * s)
    stride4 = math.ceil(math.ceil(half / 2) / 2)
    return math.floor(stride4 * 4 / s)


@pytest.mark.parametrize("hw", [(64, 96), (70, 101), (32, 32), (48, 200), (17, 23)])
def test_flownet_output_shapes(hw):
    net = FlowNetSimple(tiny_flownet_config()).eval()
    with torch.no_grad():
        flow, top = net.forward_with_top(torch.randn(2, 6, *hw))
    assert flow.shape == (2, 2, expected_flow_hw(hw[0]), expected_flow_hw(hw[1]))
    assert top.shape[1] == tiny_flownet_config().top_channels
    assert top.shape[2:] == (math.ceil(math.ceil(hw[0] // 2 / 2) / 2), math.ceil(math.ceil(hw[1] // 2 / 2) / 2))
    if hw[0] % 8 == 0 and hw[1] % 8 == 0:
        assert flow.shape[2:] == hw


def reference_flownet(net: FlowNetSimple, imgs: torch.Tensor) -> torch.Tensor:
    """FlowNetSimple's forward as upstream writes it, on the same weights,
    through functional ops: normalisation as prepare_imgs, out_indices 2..6,
    crop_like, stride-4 flow resized by 4/s and scaled by 4/s * flow_scale."""
    cfg, p = net.cfg, net.state_dict()
    img_std = torch.tensor(cfg.img_norm_std).repeat(2)[None, :, None, None]
    img_mean = torch.tensor(cfg.img_norm_mean).repeat(2)[None, :, None, None]
    x = imgs * img_std + img_mean
    flow_std = torch.tensor(cfg.flow_img_norm_std).repeat(2)[None, :, None, None]
    flow_mean = torch.tensor(cfg.flow_img_norm_mean).repeat(2)[None, :, None, None]
    x = x / flow_std - flow_mean
    x = F.interpolate(x, scale_factor=cfg.img_scale_factor, mode="bilinear", align_corners=False)
    outs = []
    for i in range(1, 7):
        j = 0
        while f"conv{i}.{j}.conv.weight" in p:
            w = p[f"conv{i}.{j}.conv.weight"]
            x = F.leaky_relu(F.conv2d(x, w, p[f"conv{i}.{j}.conv.bias"], 2 if j == 0 else 1, w.shape[-1] // 2), 0.1)
            j += 1
        if i >= 2:
            outs.append(x)
    concat = outs[4]
    for i in (4, 3, 2, 1):
        skip = outs[i - 1]
        flow = F.conv2d(concat, p[f"predict_flow{i + 2}.conv.weight"], padding=1)
        up = F.conv_transpose2d(flow, p[f"upsample_flow{i + 1}.conv.weight"], stride=2, padding=1)
        de = F.leaky_relu(F.conv_transpose2d(concat, p[f"deconv{i + 1}.conv.weight"], stride=2, padding=1), 0.1)
        hh, ww = skip.shape[2:]
        concat = torch.cat((skip, de[:, :, :hh, :ww], up[:, :, :hh, :ww]), 1)
    flow = F.conv2d(concat, p["predict_flow.conv.weight"], padding=1)
    flow = F.interpolate(flow, scale_factor=4 / cfg.img_scale_factor, mode="bilinear", align_corners=False)
    return flow * (4 / cfg.img_scale_factor) * cfg.flow_scale_factor


@pytest.mark.parametrize("hw", [(64, 96), (37, 50)])
def test_flownet_matches_upstream_forward(hw):
    torch.manual_seed(7)
    net = FlowNetSimple(tiny_flownet_config()).eval()
    imgs = torch.randn(1, 6, *hw)
    with torch.no_grad():
        torch.testing.assert_close(net(imgs), reference_flownet(net, imgs), rtol=1e-4, atol=1e-4)


def test_flownet_input_normalisation():
    # A frame at the detector's mean is, after undoing it, the pixel mean:
    # the flow net then sees mean/255 - flow_mean per channel.
    cfg = tiny_flownet_config()
    net = FlowNetSimple(cfg).eval()
    seen = {}
    def keep_input(module, args, out):
        seen["x"] = args[0]  # returns None: the output stays as is

    net.conv1[0].conv.register_forward_hook(keep_input)
    with torch.no_grad():
        net(torch.zeros(1, 6, 16, 16))
    want = torch.tensor(cfg.img_norm_mean).repeat(2) / 255.0 - torch.tensor(cfg.flow_img_norm_mean).repeat(2)
    assert seen["x"].shape == (1, 6, 8, 8)
    torch.testing.assert_close(seen["x"][0, :, 3, 3], want)


# --------------------------------------------- scale map and impression fusion


def test_scale_map_starts_at_one_and_pools_to_feature_stride():
    head = ScaleMap(26, 12)
    top = torch.randn(1, 26, 9, 13)  # stride 8 of the frame
    scale = head(top)
    assert scale.shape == (1, 12, 5, 7)  # 2x2 average pooling, ceil
    torch.testing.assert_close(scale, torch.ones_like(scale))
    torch.nn.init.normal_(head.conv.weight)
    raw = head.conv(top)
    torch.testing.assert_close(head(top)[..., :4, :6], F.avg_pool2d(raw[..., :8, :12], 2))
    torch.testing.assert_close(head(top)[..., 4, 6], raw[..., 8, 12])  # ceil: the lone corner cell
    g = torch.Generator().manual_seed(8)
    features, flow = rand(g, 1, 12, 5, 7).float(), rand(g, 1, 2, 5, 7).float()
    torch.testing.assert_close(warp_and_scale(features, flow, head(top)), warp(features, flow) * head(top))


def fusion_by_hand(fusion: ImpressionFusion, f, imp, g):
    q = fusion.quality
    def n_q(x):  # noqa: E306
        return q.conv3(torch.relu(q.conv2(torch.relu(q.conv1(x)))))

    s_imp, s_f = n_q(imp), n_q(f)
    w = torch.exp(s_f) / (torch.exp(s_f) + torch.exp(s_imp))  # Eq. 2, the second softmax output
    task = (1 - w) * imp + w * f  # Eq. 3
    return task, (1 - g) * f + g * task, w  # Eq. 4


@pytest.mark.parametrize("gate", [1.0, 0.0, 0.3])
def test_fusion_matches_equations(gate):
    torch.manual_seed(9)
    fusion = ImpressionFusion(6, hidden=(8, 4), memory_gate=gate).double()
    for m in fusion.quality.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.weight, std=0.7)
    f, imp = torch.randn(2, 6, 3, 4, dtype=torch.float64), torch.randn(2, 6, 3, 4, dtype=torch.float64)
    task, new_imp = fusion(f, imp)
    want_task, want_imp, w = fusion_by_hand(fusion, f, imp, gate)
    torch.testing.assert_close(task, want_task)
    torch.testing.assert_close(new_imp, want_imp)
    assert w.std() > 0.05  # the weights really vary per position
    if gate == 1.0:
        torch.testing.assert_close(new_imp, task)
    if gate == 0.0:
        torch.testing.assert_close(new_imp, f)  # the impression forgets all but the last key feature


def test_fixed_weights_dff_and_average():
    f, imp = torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3)
    task, new_imp = ImpressionFusion(4, hidden=(8, 4), fixed_weight=1.0)(f, imp)
    torch.testing.assert_close(task, f)  # w = 1: Deep Feature Flow, no impression
    torch.testing.assert_close(new_imp, f)
    task, _ = ImpressionFusion(4, hidden=(8, 4), fixed_weight=0.5)(f, imp)
    torch.testing.assert_close(task, (f + imp) / 2)  # the paper's method (c)


def test_equal_inputs_give_half_weights():
    fusion = ImpressionFusion(4, hidden=(8, 4))
    f = torch.randn(1, 4, 3, 3)
    w = fusion.weight(f, f.clone())
    torch.testing.assert_close(w, torch.full_like(w, 0.5))


# ------------------------------------------------------------ ONNX and TensorRT


class WarpModule(torch.nn.Module):
    def forward(self, features, flow):
        return warp(features, flow)


class ResizeWarpScale(torch.nn.Module):
    """Flow at the frame size, features and scale map at stride 16."""

    def forward(self, features, flow, scale_map):
        return warp_and_scale(features, resize_flow(flow, 1 / 16), scale_map)


class TinyFlowNetWithTop(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(10)
        self.net = FlowNetSimple(tiny_flownet_config())
        self.scale = ScaleMap(tiny_flownet_config().top_channels, 12)
        torch.nn.init.normal_(self.scale.conv.weight, std=0.1)

    def forward(self, imgs):
        flow, top = self.net.forward_with_top(imgs)
        return flow, self.scale(top)


def _fusion():
    torch.manual_seed(11)
    return ImpressionFusion(12, hidden=(16, 4))


# name: (module factory, input names, output names, inputs at export, inputs at another size)
CASES = {
    "warp": (
        WarpModule, ["features", "flow"], ["warped"],
        lambda g, h, w: (torch.randn(1, 12, h, w, generator=g), torch.randn(1, 2, h, w, generator=g) * 3),
    ),
    "resize_warp_scale": (
        ResizeWarpScale, ["features", "flow", "scale_map"], ["warped"],
        lambda g, h, w: (torch.randn(1, 12, h, w, generator=g), torch.randn(1, 2, 16 * h, 16 * w, generator=g) * 30,
                         torch.rand(1, 12, h, w, generator=g) + 0.5),
    ),
    "flownet": (
        TinyFlowNetWithTop, ["imgs"], ["flow", "scale_map"],
        lambda g, h, w: (torch.randn(1, 6, 16 * h, 16 * w, generator=g),),
    ),
    "fusion": (
        _fusion, ["feature", "warped_impression"], ["task", "impression"],
        lambda g, h, w: (torch.randn(1, 12, h, w, generator=g), torch.randn(1, 12, h, w, generator=g)),
    ),
}  # fmt: skip


def export_case(name, directory):
    factory, inputs, outputs, make = CASES[name]
    module = factory().eval()
    g = torch.Generator().manual_seed(12)
    path = f"{directory}/{name}.onnx"
    # Own dim names per tensor: the flow net's and the resize case's inputs are 16x the features.
    export_module(module, make(g, 4, 6), path, inputs, outputs, {n: {2: f"{n}_h", 3: f"{n}_w"} for n in inputs + outputs})
    return module, path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    directory = tmp_path_factory.mktemp("flow_onnx")
    return {name: export_case(name, directory) for name in CASES}


@pytest.mark.parametrize("name", list(CASES))
def test_onnx_runtime_matches_torch_at_other_sizes(name, exported):
    ort = pytest.importorskip("onnxruntime")
    module, path = exported[name]
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    _, inputs, _, make = CASES[name]
    g = torch.Generator().manual_seed(13)
    for h, w in [(4, 6), (3, 7), (5, 5)]:
        args = make(g, h, w)
        with torch.no_grad():
            want = module(*args)
        want = want if isinstance(want, tuple) else (want,)
        got = session.run(None, {n: a.numpy() for n, a in zip(inputs, args)})
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b.numpy(), rtol=1e-4, atol=1e-4)


def test_warp_graph_uses_grid_sample_at_default_opset(exported):
    model = onnx.load(exported["warp"][1])
    assert DEFAULT_OPSET in (16, 17)  # opset 20 GridSample misbehaved in TensorRT (FACTS)
    samples = [n for n in model.graph.node if n.op_type == "GridSample"]
    assert len(samples) == 1
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in samples[0].attribute}
    assert attrs["align_corners"] == 1 and attrs["padding_mode"] == b"border" and attrs["mode"] == b"bilinear"
    assert not [n for n in model.graph.node if n.op_type == "ScatterND"]


def _profile(name):
    lo, opt, hi = (2, 3), (4, 6), (8, 12)
    def dims(c, k=1):  # noqa: E306
        return tuple([1, c, k * a, k * b] for a, b in (lo, opt, hi))

    return {
        "warp": {"features": dims(12), "flow": dims(2)},
        "resize_warp_scale": {"features": dims(12), "flow": dims(2, 16), "scale_map": dims(12)},
        "flownet": {"imgs": dims(6, 16)},
        "fusion": {"feature": dims(12), "warped_impression": dims(12)},
    }[name]


@pytest.mark.skipif(not rtx_aot.AVAILABLE, reason="tensorrt_rtx is not installed")
@pytest.mark.parametrize("name", ["warp", "resize_warp_scale", "flownet", "fusion"])
def test_builds_in_tensorrt_rtx_sm86(name, exported):
    built, log = rtx_aot.build(exported[name][1], "86", _profile(name))
    assert built, log


@pytest.mark.skipif(not rtx_aot.AVAILABLE, reason="tensorrt_rtx is not installed")
@pytest.mark.parametrize("name", ["warp", "flownet"])
@pytest.mark.parametrize("sm", ["75", "86"])
def test_fp16_builds_in_tensorrt_rtx(name, sm, exported, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    half, report = convert_fp16(onnx.load(exported[name][1]))
    if name == "flownet":
        assert report["fp16_op_types"].get("Conv", 0) >= 10  # the encoder at least runs in FP16
    path = tmp_path / f"{name}_fp16.onnx"
    onnx.save(half, path)
    module, _ = exported[name]
    _, inputs, _, make = CASES[name]
    args = make(torch.Generator().manual_seed(14), 3, 5)
    with torch.no_grad():
        want = module(*args)
    want = want if isinstance(want, tuple) else (want,)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {n: a.numpy() for n, a in zip(inputs, args)})
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b.numpy(), rtol=2e-2, atol=5e-2 * float(b.abs().max()))
    built, log = rtx_aot.build(path, sm, _profile(name))
    assert built, log
