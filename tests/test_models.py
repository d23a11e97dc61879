"""Shared detector parts: ResNet against torchvision, BN folding, cutting at a
block, fixed-size NMS and detection post-processing against plain loops."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torchvision

from vidtrt.models import boxes as box_ops
from vidtrt.models.postprocess import DetectionConfig, detect
from vidtrt.models.resnet import ResNet, parse_block


def randomise_bn(model):
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return model


@pytest.mark.parametrize("depth", [18, 50])
def test_resnet_loads_torchvision_weights_and_matches(depth):
    tv = randomise_bn(getattr(torchvision.models, f"resnet{depth}")()).eval()
    ours = ResNet(depth).eval()
    ours.load_state_dict({k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}, strict=True)
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        expected = torch.nn.Sequential(*list(tv.children())[:-2])(x)
        got = ours(x)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
        # res4b3 of the papers is torchvision's layer3[3]
        tv_until = torch.nn.Sequential(tv.conv1, tv.bn1, tv.relu, tv.maxpool, tv.layer1, tv.layer2, tv.layer3[:2])
        torch.testing.assert_close(ours(x, until="layer3.1"), tv_until(x), rtol=1e-4, atol=1e-3)


def test_fold_bn_keeps_outputs():
    model = randomise_bn_frozen(ResNet(50, dilate_res5=True)).eval()
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        expected = model(x)
        folded = copy.deepcopy(model).fold_bn()
        torch.testing.assert_close(folded(x), expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    assert not any(type(m).__name__ == "FrozenBatchNorm2d" for m in folded.modules())


def randomise_bn_frozen(model):
    g = torch.Generator().manual_seed(1)
    for name, buf in model.named_buffers():
        if name.endswith("running_var"):
            buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)
        elif name.endswith(("running_mean", "bias")):
            buf.copy_(0.1 * torch.randn(buf.shape, generator=g))
        elif name.endswith("weight"):
            buf.copy_(0.5 + 0.1 * torch.randn(buf.shape, generator=g))
    return model


def test_dilated_res5_and_cuts():
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert ResNet(18)(x).shape == (1, 512, 2, 3)
        assert ResNet(18, dilate_res5=True)(x).shape == (1, 512, 4, 6)
        assert ResNet(101, last_block="layer3.3")(x).shape == (1, 1024, 4, 6)
    dilated = ResNet(50, dilate_res5=True)
    assert dilated.out_stride == 16
    assert all(b.conv2.dilation == (2, 2) for b in dilated.layer4)  # every res5 block, as mmdet/MXNet
    assert len(ResNet(101, last_block="layer3.3").layer3) == 4 and not hasattr(ResNet(101, last_block="layer3.3"), "layer4")
    assert ResNet(101).channels_at("layer3.3") == 1024 and ResNet(18).channels_at("layer3.0") == 256


@pytest.mark.parametrize("bad", ["layer5.0", "res4b3", "layer3", "layer3.x"])
def test_bad_block_names(bad):
    with pytest.raises(ValueError, match="layer3.3"):
        parse_block(bad)
    with pytest.raises(ValueError):
        ResNet(18, last_block="layer3.2")  # ResNet-18's layer3 has 2 blocks


def nms_naive(boxes, scores, iou):
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep = []
    for i in order:
        if all(box_ops_iou(boxes[i], boxes[j]) <= iou for j in keep):
            keep.append(i)
    return keep


def box_ops_iou(a, b):
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def random_boxes(n, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 100
    wh = torch.rand(n, 2, generator=g) * 40 + 1
    return torch.cat([xy, xy + wh], 1), torch.rand(n, generator=g)


@pytest.mark.parametrize("n, pre, post", [(50, 30, 10), (5, 30, 10), (0, 8, 4), (40, 40, 40)])
def test_fixed_size_nms_matches_naive(n, pre, post):
    b, s = random_boxes(n, n)
    s = s.clone()
    if n:
        s[::7] = float("-inf")  # entries that must never be kept
    index, valid = box_ops.fixed_size_nms(b, s, 0.5, pre, post)
    assert index.shape == (post,) and valid.shape == (post,)
    finite = [i for i in range(n) if np.isfinite(s[i].item())]
    top = sorted(finite, key=lambda i: -s[i].item())[:pre]
    expected = [top[i] for i in nms_naive([b[j].tolist() for j in top], [s[j].item() for j in top], 0.5)][:post]
    assert index[valid].tolist() == expected
    assert not valid[len(expected) :].any()


def test_fixed_size_nms_limits():
    b, s = random_boxes(10, 0)
    with pytest.raises(ValueError, match="TopK limit of 3840"):
        box_ops.fixed_size_nms(b, s, 0.5, 6000, 300)


def test_detect_is_classwise_nms_over_thresholded_scores():
    g = torch.Generator().manual_seed(3)
    rois, _ = random_boxes(12, 5)
    roi_valid = torch.ones(12, dtype=torch.bool)
    roi_valid[-2:] = False
    logits = torch.randn(12, 4, generator=g) * 3
    deltas = torch.randn(12, 4, generator=g) * 0.1
    cfg = DetectionConfig(score_threshold=0.05, nms_iou=0.3, max_detections=15, pre_nms=40)
    boxes, scores, labels, valid = detect(rois, roi_valid, logits, deltas, 120, 140, cfg)

    probs = torch.softmax(logits, 1)[:, 1:]
    decoded = box_ops.clip(box_ops.decode(rois, deltas, cfg.box_weights), 120, 140)
    candidates = [(probs[r, c].item(), r, c) for r in range(10) for c in range(3) if probs[r, c] > cfg.score_threshold]
    candidates = sorted(candidates, reverse=True)[: cfg.pre_nms]
    kept = []
    for c in range(3):
        cls = [(sc, r) for sc, r, cc in candidates if cc == c]
        idx = nms_naive([decoded[r].tolist() for _, r in cls], [sc for sc, _ in cls], cfg.nms_iou)
        kept += [(cls[i][0], cls[i][1], c) for i in idx]
    kept = sorted(kept, reverse=True)[: cfg.max_detections]
    assert int(valid.sum()) == len(kept)
    np.testing.assert_allclose(scores[valid].numpy(), [k[0] for k in kept], rtol=1e-6)
    assert labels[valid].tolist() == [k[2] for k in kept]
    np.testing.assert_allclose(boxes[valid].numpy(), np.stack([decoded[k[1]].numpy() for k in kept]), rtol=1e-6)
    assert (scores[~valid] == 0).all()


def test_every_config_round_trips_through_a_dict():
    from vidtrt.methods import all_configs

    CONFIGS = {name: cfg for name, (_, cfg) in all_configs().items()}
    for name, cfg in CONFIGS.items():
        assert type(cfg).from_dict(cfg.as_dict()) == cfg, name
    psla = CONFIGS["psla_small"]
    with pytest.raises(ValueError, match="PslaConfig has no field"):
        type(psla).from_dict({**psla.as_dict(), "speed": 3})
