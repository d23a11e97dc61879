"""Box arithmetic shared by detectors: anchors, delta decoding, clipping, and
fixed-size NMS that exports to ONNX with static output shapes.

Everything here traces to ONNX with dynamic image height/width; output sizes
depend only on configuration constants (TensorRT needs a constant TopK K,
≤ 3840).
"""

from __future__ import annotations

import math

import torch

from ..ops.fixed_size_nms import fixed_size_nms as nms_op

TENSORRT_MAX_TOPK = 3840
BBOX_CLAMP = math.log(1000.0 / 16)


def base_anchors(sizes, ratios) -> torch.Tensor:
    """[A, 4] anchors centred on (0, 0): for each ratio (h/w), each size (sqrt of area)."""
    anchors = []
    for ratio in ratios:
        for size in sizes:
            w = size / math.sqrt(ratio)
            h = size * math.sqrt(ratio)
            anchors.append([-w / 2, -h / 2, w / 2, h / 2])
    return torch.tensor(anchors, dtype=torch.float32)


def grid_anchors(base: torch.Tensor, height, width, stride: int) -> torch.Tensor:
    """[H·W·A, 4] anchors of a feature map, position-major (matches the head's layout)."""
    device = base.device
    shift_x = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * stride
    shift_y = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) * stride
    sy, sx = torch.meshgrid(shift_y, shift_x, indexing="ij")
    shifts = torch.stack([sx, sy, sx, sy], dim=-1).reshape(-1, 1, 4)
    return (shifts + base.view(1, -1, 4)).reshape(-1, 4)


def decode(boxes: torch.Tensor, deltas: torch.Tensor, weights=(1.0, 1.0, 1.0, 1.0)) -> torch.Tensor:
    """Applies (dx, dy, dw, dh) deltas to [K, 4] boxes (Faster R-CNN parameterisation)."""
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    cx = boxes[:, 0] + 0.5 * widths
    cy = boxes[:, 1] + 0.5 * heights
    dx, dy = deltas[:, 0] / weights[0], deltas[:, 1] / weights[1]
    dw = (deltas[:, 2] / weights[2]).clamp(max=BBOX_CLAMP)
    dh = (deltas[:, 3] / weights[3]).clamp(max=BBOX_CLAMP)
    pcx, pcy = cx + dx * widths, cy + dy * heights
    pw, ph = widths * torch.exp(dw), heights * torch.exp(dh)
    return torch.stack([pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph], dim=1)


def clip(boxes: torch.Tensor, height, width) -> torch.Tensor:
    """Clips [K, 4] boxes to an image of the given (possibly traced) size."""
    h = torch.as_tensor(height, dtype=boxes.dtype)
    w = torch.as_tensor(width, dtype=boxes.dtype)
    zero = torch.zeros((), dtype=boxes.dtype)
    x1 = torch.minimum(torch.maximum(boxes[:, 0], zero), w)
    y1 = torch.minimum(torch.maximum(boxes[:, 1], zero), h)
    x2 = torch.minimum(torch.maximum(boxes[:, 2], zero), w)
    y2 = torch.minimum(torch.maximum(boxes[:, 3], zero), h)
    return torch.stack([x1, y1, x2, y2], dim=1)


def pad_to(x: torch.Tensor, length: int, value: float) -> torch.Tensor:
    """Pads dim 0 of ``x`` to at least ``length`` with ``value`` (so a later
    top-k can use a constant K whatever the image size)."""
    pad = x.new_full((length,) + tuple(x.shape[1:]), value)
    return torch.cat([x, pad], dim=0)


def fixed_size_nms(boxes, scores, iou_threshold: float, pre_nms: int, post_nms: int, groups=None):
    """NMS with constant-size input and output.

    boxes [K, 4], scores [K] (−inf marks an entry that must not be kept),
    groups [K] optional class ids (NMS within each group only).
    Takes the ``pre_nms`` best entries (a constant TopK), runs NMS (the
    vidtrt FixedSizeNMS op: torchvision.ops.nms's result, exported as one
    node whose output size is ``post_nms`` whatever the data), and returns
    (indices [post_nms] into the input, valid [post_nms] bool). Invalid slots
    repeat index 0.
    """
    if pre_nms > TENSORRT_MAX_TOPK:
        raise ValueError(f"pre_nms={pre_nms} exceeds TensorRT's TopK limit of {TENSORRT_MAX_TOPK}")
    padded_scores = pad_to(scores, pre_nms, float("-inf"))
    top_scores, top_idx = padded_scores.topk(pre_nms)
    padded_boxes = pad_to(boxes, pre_nms, 0.0)
    cand = padded_boxes[top_idx]
    if groups is not None:
        # Offsetting each group by a distinct amount keeps groups apart in one NMS.
        cand_groups = pad_to(groups.to(cand.dtype), pre_nms, 0.0)[top_idx]
        cand = cand + cand_groups.view(-1, 1) * (cand.max() + 1.0)
    # Survivors by descending score, then −1; −inf candidates are never kept.
    keep = nms_op(cand, top_scores, iou_threshold, post_nms)
    valid = keep >= 0
    slot = torch.where(valid, keep, torch.zeros_like(keep)).long()
    return torch.where(valid, top_idx[slot], torch.zeros_like(top_idx[slot])), valid
