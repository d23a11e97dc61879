"""ResNet backbones in torchvision's key naming (conv1, bn1, layer1..layer4,
blocks with conv1/bn1/.../downsample.0/.1), with frozen BatchNorm, an optional
stride-1 dilated res5 and a way to stop after a named block.

Strides follow torchvision ("pytorch" style: the stride sits on the 3x3 conv)
unless ``stride_in_1x1`` (MSRA / maskrcnn-benchmark style: on the first 1x1).
A dilated res5 uses dilation 2 in every block of the stage, as mmdetection's
``dilations=(1, 1, 1, 2)`` and the MXNet R-FCN models do (torchvision's
``replace_stride_with_dilation`` keeps dilation 1 in the first block).
"""

from __future__ import annotations

import torch
from torch import nn

STAGE_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine parameters (buffers, torchvision names)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints trained with nn.BatchNorm2d carry a counter frozen BN has no use for.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self.scale_shift()
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


def fold_frozen_bn(conv: nn.Conv2d, bn: FrozenBatchNorm2d) -> nn.Conv2d:
    """A convolution computing bn(conv(x)) in one layer."""
    scale, shift = bn.scale_shift()
    fused = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups, bias=True
    )
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        base = conv.bias if conv.bias is not None else torch.zeros_like(shift)
        fused.bias.copy_(base * scale + shift)
    return fused.to(conv.weight.device)


def _conv(in_ch, out_ch, kernel, stride=1, dilation=1):
    padding = dilation * (kernel - 1) // 2
    return nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, dilation=dilation, bias=False)


class _Block(nn.Module):
    """Shared by BasicBlock and Bottleneck: residual sum and BN folding."""

    pairs: tuple[tuple[str, str], ...] = ()

    def fold_bn(self) -> None:
        for conv_name, bn_name in self.pairs:
            setattr(self, conv_name, fold_frozen_bn(getattr(self, conv_name), getattr(self, bn_name)))
            setattr(self, bn_name, nn.Identity())
        if self.downsample is not None and isinstance(self.downsample[1], FrozenBatchNorm2d):
            self.downsample = nn.Sequential(fold_frozen_bn(self.downsample[0], self.downsample[1]), nn.Identity())

    def shortcut(self, x):
        return x if self.downsample is None else self.downsample(x)


class BasicBlock(_Block):
    expansion = 1
    pairs = (("conv1", "bn1"), ("conv2", "bn2"))

    def __init__(self, in_ch, planes, stride=1, dilation=1, downsample=None, stride_in_1x1=False, eps=1e-5):
        super().__init__()
        self.conv1 = _conv(in_ch, planes, 3, stride, dilation)
        self.bn1 = FrozenBatchNorm2d(planes, eps)
        self.conv2 = _conv(planes, planes, 3, 1, dilation)
        self.bn2 = FrozenBatchNorm2d(planes, eps)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(_Block):
    expansion = 4
    pairs = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))

    def __init__(self, in_ch, planes, stride=1, dilation=1, downsample=None, stride_in_1x1=False, eps=1e-5):
        super().__init__()
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = _conv(in_ch, planes, 1, stride_1x1)
        self.bn1 = FrozenBatchNorm2d(planes, eps)
        self.conv2 = _conv(planes, planes, 3, stride_3x3, dilation)
        self.bn2 = FrozenBatchNorm2d(planes, eps)
        self.conv3 = _conv(planes, planes * 4, 1)
        self.bn3 = FrozenBatchNorm2d(planes * 4, eps)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


def stage_channels(depth: int, stage: int, width: int = 64) -> int:
    """Output channels of stage ``stage`` (1-4, i.e. layer1-layer4); ``width``:
    the stem's channels (64 in every published ResNet; narrower for small configs)."""
    return width * 2 ** (stage - 1) * (1 if depth < 50 else 4)


def resnet_stage(
    depth: int, stage: int, in_ch: int, count: int, stride: int, dilation: int, stride_in_1x1: bool = False, eps: float = 1e-5,
    width: int = 64,
) -> nn.Sequential:
    """``count`` blocks of stage ``stage`` (layer1-layer4); the first takes
    ``in_ch`` channels and the stride, and gets a 1x1 projection when the
    shape changes. Also the res5 head of C4 detectors (MEGA's box head)."""
    block_type = BasicBlock if depth < 50 else Bottleneck
    planes = width * 2 ** (stage - 1)
    out_ch = planes * block_type.expansion
    downsample = None
    if stride != 1 or in_ch != out_ch:
        downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), FrozenBatchNorm2d(out_ch, eps))
    layers = [block_type(in_ch, planes, stride, dilation, downsample, stride_in_1x1, eps)]
    layers += [block_type(out_ch, planes, 1, dilation, None, stride_in_1x1, eps) for _ in range(1, count)]
    return nn.Sequential(*layers)


def parse_block(name: str) -> tuple[int, int]:
    """"layer3.3" (torchvision naming; res4b3 in the papers' naming) → (3, 3)."""
    try:
        layer, index = name.split(".")
        stage = int(layer.removeprefix("layer"))
        block = int(index)
    except ValueError:
        raise ValueError(f"block name must look like 'layer3.3', got {name!r}") from None
    if not layer.startswith("layer") or not 1 <= stage <= 4 or block < 0:
        raise ValueError(f"block name must look like 'layer3.3' (layer1..layer4), got {name!r}")
    return stage, block


class ResNet(nn.Module):
    """ResNet-18/34/50/101 feature extractor (no pooling head, no fc).

    ``dilate_res5``: layer4 with stride 1 and dilation 2 (output stride 16).
    ``last_block``: build only up to that block, e.g. "layer4.2" or "layer3.3".
    ``width``: the stem's channels, 64 as published; every stage scales with it.
    """

    def __init__(
        self, depth: int = 50, dilate_res5: bool = False, last_block: str | None = None, stride_in_1x1: bool = False, bn_eps: float = 1e-5,
        width: int = 64,
    ):
        super().__init__()
        if depth not in STAGE_BLOCKS:
            raise ValueError(f"ResNet depth must be one of {sorted(STAGE_BLOCKS)}, got {depth}")
        self.depth = depth
        self.width = width
        blocks = list(STAGE_BLOCKS[depth])
        if last_block is not None:
            stage, index = parse_block(last_block)
            if index >= blocks[stage - 1]:
                raise ValueError(f"ResNet-{depth} layer{stage} has {blocks[stage - 1]} blocks; no block {last_block!r}")
            blocks = blocks[: stage - 1] + [index + 1]
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = FrozenBatchNorm2d(width, bn_eps)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = width
        self.stage_names: list[str] = []
        self.out_stride = 4
        for stage, count in enumerate(blocks, start=1):
            stride, dilation = (1, 1) if stage == 1 else (2, 1)
            if stage == 4 and dilate_res5:
                stride, dilation = 1, 2
            self.out_stride *= stride
            layer = resnet_stage(depth, stage, in_ch, count, stride, dilation, stride_in_1x1, bn_eps, width)
            in_ch = stage_channels(depth, stage, width)
            setattr(self, f"layer{stage}", layer)
            self.stage_names.append(f"layer{stage}")
        self.out_channels = in_ch

    def forward(self, x: torch.Tensor, until: str | None = None) -> torch.Tensor:
        """Features after the last block, or after block ``until`` (e.g. "layer3.3")."""
        stop = parse_block(until) if until is not None else None
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage, name in enumerate(self.stage_names, start=1):
            for index, block in enumerate(getattr(self, name)):
                x = block(x)
                if stop == (stage, index):
                    return x
        if stop is not None:
            raise ValueError(f"this ResNet has no block {until!r}")
        return x

    def channels_at(self, block: str) -> int:
        stage, _ = parse_block(block)
        return stage_channels(self.depth, stage, self.width)

    def fold_bn(self) -> "ResNet":
        """Folds every frozen BN into the convolution before it (for export)."""
        self.conv1 = fold_frozen_bn(self.conv1, self.bn1)
        self.bn1 = nn.Identity()
        for name in self.stage_names:
            for block in getattr(self, name):
                block.fold_bn()
        return self


def stem_width(state_dict: dict, conv1_key: str) -> int | None:
    """The stem's channel count in a checkpoint (its ``conv1`` weight's rows), or None.
    Published ResNets have 64; an upstream checkpoint loaded into a narrow
    config (a small one, say) brings its own width."""
    weight = state_dict.get(conv1_key)
    return int(weight.shape[0]) if weight is not None and getattr(weight, "ndim", 0) == 4 else None
