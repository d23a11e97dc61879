"""Flow network and flow-guided warping for Deep Feature Flow / Impression Network.

``FlowNetSimple`` follows mmtracking's ``mmtrack/models/motion/flownet_simple.py``
(module and parameter names equal its state_dict keys without the ``motion.``
prefix, so a DFF checkpoint loads as is). ``warp`` follows mmtracking's
``flow_warp_feats`` (``mmtrack/core/motion/flow.py``) exactly, including its
quirk of normalising grid coordinates by W (not W - 1) while sampling with
``align_corners=True``: a zero flow samples column x at x * (W - 1) / W, so it
is close to, but not exactly, the identity. Checkpoints are trained with it.

Impression Network parts (paper Sec. 3.3): ``ScaleMap`` (1x1 conv on the flow
net's top concat, weights 0 / bias 1 at init, as in the original DFF code's
``Convolution5_scale``), and ``ImpressionFusion`` (quality net N_q and Eq. 3-4).
The method is models/impression.py and methods/impression.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config_io import config_from_dict


@dataclass(frozen=True)
class FlowNetConfig:
    """FlowNet-S as mmtracking's FlowNetSimple. Defaults are the DFF/FGFA
    configs' (img_scale_factor 0.5) and mmdet's ImageNet normalisation."""

    name: str = "flownet_s"
    img_scale_factor: float = 0.5  # the flow net sees half-resolution frames
    flow_scale_factor: float = 5.0  # FlowNet's training-time flow divisor, undone here
    # The detector's input normalisation, undone before the flow net's own.
    img_norm_mean: tuple = (123.675, 116.28, 103.53)
    img_norm_std: tuple = (58.395, 57.12, 57.375)
    # FlowNet's normalisation: pixels / std - mean (mmtracking's order).
    flow_img_norm_mean: tuple = (0.411, 0.432, 0.450)
    flow_img_norm_std: tuple = (255.0, 255.0, 255.0)
    # Output channels of conv1..conv6 and of deconv5..deconv2.
    conv_channels: tuple = (64, 128, 256, 512, 512, 1024)
    deconv_channels: tuple = (512, 256, 128, 64)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FlowNetConfig":
        return config_from_dict(cls, d)

    @property
    def top_channels(self) -> int:
        """Channels of the last concat (conv2 + deconv2 + upsampled flow), the
        input of ``predict_flow`` and of the Impression Network scale map."""
        return self.conv_channels[1] + self.deconv_channels[3] + 2


def tiny_flownet_config() -> FlowNetConfig:
    """Same graph, few channels: for tests."""
    return FlowNetConfig(name="flownet_s_tiny", conv_channels=(8, 16, 16, 32, 32, 64), deconv_channels=(32, 16, 8, 8))


class _ConvModule(nn.Module):
    """mmcv ConvModule's parameter layout (``<name>.conv.weight``); the
    activation, when any, is LeakyReLU(0.1) and holds no parameters."""

    def __init__(self, conv: nn.Module, leaky: bool):
        super().__init__()
        self.conv = conv
        self.leaky = leaky

    def forward(self, x):
        x = self.conv(x)
        return F.leaky_relu(x, 0.1) if self.leaky else x


def _conv(cin, cout, kernel, stride, bias, leaky=True):
    return _ConvModule(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, bias=bias), leaky)


def _deconv(cin, cout, leaky):
    return _ConvModule(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), leaky)


class FlowNetSimple(nn.Module):
    """imgs [N, 6, H, W] (current frame then reference frame, each normalised
    as the detector's input) -> flow [N, 2, H', W'] in input pixels, with
    H' = floor(h4 * 4 / img_scale_factor), h4 = ceil(ceil(floor(H * s) / 2) / 2)
    the height at stride 4 of the rescaled input (H' = H when H is a multiple
    of 8 for the 0.5 default). ``forward_with_top`` also returns the top
    concat the scale map reads.

    Upstream zeroes the padded area of the rescaled-back image (rows/columns
    past ``img_shape``) before resizing; callers that pad must pass frames
    whose padding is already handled (the pipelines feed unpadded frames)."""

    # kernel sizes and conv counts per group, as upstream's arch_setting
    KERNELS = (7, 5, 5, 3, 3, 3)
    NUM_CONVS = (1, 1, 2, 2, 2, 2)

    def __init__(self, cfg: FlowNetConfig = FlowNetConfig()):
        super().__init__()
        self.cfg = cfg
        # Both normalisations fold into one affine map per channel:
        # ((x * s_img + m_img) / s_flow - m_flow) = x * a + b.
        img_std = torch.tensor(cfg.img_norm_std, dtype=torch.float32).repeat(2)
        img_mean = torch.tensor(cfg.img_norm_mean, dtype=torch.float32).repeat(2)
        flow_std = torch.tensor(cfg.flow_img_norm_std, dtype=torch.float32).repeat(2)
        flow_mean = torch.tensor(cfg.flow_img_norm_mean, dtype=torch.float32).repeat(2)
        self.register_buffer("_in_scale", (img_std / flow_std).view(1, 6, 1, 1), persistent=False)
        self.register_buffer("_in_shift", (img_mean / flow_std - flow_mean).view(1, 6, 1, 1), persistent=False)

        channels = (6,) + tuple(cfg.conv_channels)
        for i in range(6):
            kernel = self.KERNELS[i]
            group = nn.ModuleList([_conv(channels[i], channels[i + 1], kernel, 2, bias=True)])
            # Upstream's second conv of group 3 is 3x3 (its kernel_size override).
            second_kernel = 3 if i == 2 else kernel
            for _ in range(1, self.NUM_CONVS[i]):
                group.append(_conv(channels[i + 1], channels[i + 1], second_kernel, 1, bias=True))
            self.add_module(f"conv{i + 1}", group)

        # Coarse to fine: level 6 (conv6) down to level 3; deconv{k} and
        # upsample_flow{k} bring level k+1 to level k, predict_flow{k+1} reads level k+1.
        in_ch = cfg.conv_channels[5]
        for step, level in enumerate((5, 4, 3, 2)):
            out_ch = cfg.deconv_channels[step]
            self.add_module(f"deconv{level}", _deconv(in_ch, out_ch, leaky=True))
            self.add_module(f"predict_flow{level + 1}", _conv(in_ch, 2, 3, 1, bias=False, leaky=False))
            self.add_module(f"upsample_flow{level}", _deconv(2, 2, leaky=False))
            in_ch = cfg.conv_channels[level - 1] + out_ch + 2
        self.predict_flow = _conv(in_ch, 2, 3, 1, bias=False, leaky=False)

    @staticmethod
    def _crop_like(x, target):
        return x[:, :, : target.shape[2], : target.shape[3]]

    def forward_with_top(self, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = imgs * self._in_scale + self._in_shift
        x = F.interpolate(x, scale_factor=self.cfg.img_scale_factor, mode="bilinear", align_corners=False)
        outs = []  # conv2..conv6 outputs (upstream's out_indices 2..6)
        for i in range(1, 7):
            for module in getattr(self, f"conv{i}"):
                x = module(x)
            if i >= 2:
                outs.append(x)
        top = outs[-1]
        for level in (5, 4, 3, 2):
            skip = outs[level - 2]
            flow = getattr(self, f"predict_flow{level + 1}")(top)
            upflow = self._crop_like(getattr(self, f"upsample_flow{level}")(flow), skip)
            deconv = self._crop_like(getattr(self, f"deconv{level}")(top), skip)
            top = torch.cat((skip, deconv, upflow), dim=1)
        flow = self.predict_flow(top)
        # Stride 4 of the rescaled input -> input resolution, values in input pixels.
        back = 4.0 / self.cfg.img_scale_factor
        flow = F.interpolate(flow, scale_factor=back, mode="bilinear", align_corners=False)
        return flow * (back * self.cfg.flow_scale_factor), top

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        return self.forward_with_top(imgs)[0]


def resize_flow(flow: torch.Tensor, scale: float) -> torch.Tensor:
    """Step 1 of upstream's flow_warp_feats: bilinear (align_corners=False)
    resize by ``scale`` and values times ``scale``. Upstream takes
    scale = feature width / flow width; with frames padded to the feature
    stride that is 1 / stride, a constant, which keeps exported graphs'
    H and W dynamic."""
    flow = F.interpolate(flow, scale_factor=scale, mode="bilinear", align_corners=False)
    return flow * scale


def warp(features: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """features [N, C, h, w], flow [N, 2, h, w] (dx, dy in feature pixels) ->
    features sampled bilinearly at (x + dx, y + dy), upstream's grid
    normalisation (by w and h), border padding, align_corners=True."""
    n, _, h, w = features.shape
    ys = torch.arange(h, dtype=flow.dtype, device=flow.device).view(1, h, 1)
    xs = torch.arange(w, dtype=flow.dtype, device=flow.device).view(1, 1, w)
    # Built with cat instead of upstream's in-place slice writes: same values,
    # and the ONNX graph stays free of ScatterND.
    gx = (xs + flow[:, 0]) / w * 2 - 1
    gy = (ys + flow[:, 1]) / h * 2 - 1
    grid = torch.stack((gx, gy), dim=-1)
    return F.grid_sample(features, grid, mode="bilinear", padding_mode="border", align_corners=True)


def flow_warp_feats(features: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Upstream's flow_warp_feats in one call (flow at any resolution; the
    scale is read from the shapes, so traced graphs fix it)."""
    return warp(features, resize_flow(flow, float(features.shape[-1]) / flow.shape[-1]))


class ScaleMap(nn.Module):
    """Impression Network / DFF per-channel scale map S: a 1x1 conv on the flow
    net's top concat, weights 0 and bias 1 at init (so S = 1 until trained),
    brought from the flow net's stride (4 of its half-resolution input, 8 of
    the frame) to the feature stride (16) by 2x2 average pooling with ceil,
    as the original DFF code pools its ``Convolution5_scale``."""

    def __init__(self, top_channels: int, feature_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(top_channels, feature_channels, 1)
        nn.init.zeros_(self.conv.weight)
        nn.init.ones_(self.conv.bias)

    def forward(self, top: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(top), 2, 2, ceil_mode=True)


def warp_and_scale(features: torch.Tensor, flow: torch.Tensor, scale_map: torch.Tensor) -> torch.Tensor:
    """f' = W(f, flow) * S (paper Sec. 3.3); flow and S at the features' size."""
    return warp(features, flow) * scale_map


class QualityNet(nn.Module):
    """N_q: 3x3 conv -> 256, 1x1 -> 16, 1x1 -> 1 (paper Sec. 3.3); a raw
    position-wise score. ReLU between the convs (the paper names no
    activation; two stacked linear convs would collapse into one)."""

    def __init__(self, channels: int, hidden: tuple = (256, 16)):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden[0], 3, padding=1)
        self.conv2 = nn.Conv2d(hidden[0], hidden[1], 1)
        self.conv3 = nn.Conv2d(hidden[1], 1, 1)

    def forward(self, x):
        return self.conv3(F.relu(self.conv2(F.relu(self.conv1(x)))))


class ImpressionFusion(nn.Module):
    """(f_k, f_{k-1}^imp') -> (f_k^task, f_k^imp), Eq. 2-4:
    1 - w, w = softmax(N_q(f_imp'), N_q(f)) per position;
    f_task = (1 - w) f_imp' + w f;  f_imp = (1 - g) f + g f_task.
    ``fixed_weight`` replaces w by a constant (0.5: the paper's method (c);
    1.0: Deep Feature Flow, the impression is ignored)."""

    def __init__(self, channels: int, hidden: tuple = (256, 16), memory_gate: float = 1.0, fixed_weight: float | None = None):
        super().__init__()
        self.quality = QualityNet(channels, hidden)
        self.memory_gate = float(memory_gate)
        self.fixed_weight = fixed_weight

    def weight(self, feature, warped_impression):
        if self.fixed_weight is not None:
            return torch.full_like(feature[:, :1], float(self.fixed_weight))
        scores = torch.cat((self.quality(warped_impression), self.quality(feature)), dim=1)
        return torch.softmax(scores, dim=1)[:, 1:2]

    def forward(self, feature: torch.Tensor, warped_impression: torch.Tensor, gate: torch.Tensor | None = None):
        """``gate``: g as a tensor of one element (a graph input, so that it can
        change without re-export); None uses ``memory_gate``."""
        w = self.weight(feature, warped_impression)
        task = (1 - w) * warped_impression + w * feature
        g = self.memory_gate if gate is None else gate.reshape(1, 1, 1, 1).to(feature.dtype)
        impression = (1 - g) * feature + g * task
        return task, impression
