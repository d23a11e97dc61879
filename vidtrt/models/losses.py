"""Two-stage detector losses, as Faster R-CNN / R-FCN train them.

torchvision's detection utilities do the matching and sampling (``Matcher``,
``BalancedPositiveNegativeSampler``, ``BoxCoder``); this module only adapts
them to the three box conventions our detector families decode with, so a
trained model's boxes are read back by exactly the decoder it exports:

- ``pixel_offset=0``: widths x2 − x1 (torchvision, mmdetection, our R-FCN);
- ``pixel_offset=1``: widths x2 − x1 + 1 (maskrcnn-benchmark, MEGA). Encoding
  boxes whose x2, y2 are shifted by +1 with the 0-offset coder gives exactly
  maskrcnn-benchmark's encoding (same widths, same centres).

The RPN loss: anchors with IoU ≥ 0.7 to a ground-truth box (and each box's
best anchors) are positive, < 0.3 negative; 256 sampled at half positives;
binary cross-entropy on objectness and smooth-L1 (β = 1/9) on the deltas of
positives, both normalised by the sample size. The head loss: proposals plus
the ground truth, IoU ≥ 0.5 foreground, [0, 0.5) background, 128 sampled at a
quarter foreground; cross-entropy and smooth-L1 (β = 1) on foreground deltas
of the true class, normalised by the sample size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, BoxCoder, Matcher
from torchvision.ops import box_iou


@dataclass(frozen=True)
class BoxCoding:
    """How a family's decoder reads deltas: per-coordinate weights (1/std) and
    its pixel convention."""

    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    pixel_offset: int = 0

    def encode(self, gt: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Deltas that the family's decode turns ``reference`` [N, 4] into ``gt`` [N, 4]."""
        if self.pixel_offset:
            shift = gt.new_tensor([0.0, 0.0, float(self.pixel_offset), float(self.pixel_offset)])
            gt, reference = gt + shift, reference + shift
        return BoxCoder(self.weights).encode_single(gt, reference)


@dataclass(frozen=True)
class HeadLayout:
    """How an R-CNN head lays out its outputs.

    background: index of the background logit, "first" (R-FCN,
    maskrcnn-benchmark) or "last" (mmdetection). deltas: "agnostic" [R, 4],
    "per_class" [R, 4·(K−1)] (mmdetection) or "per_class_with_background"
    [R, 4·K] (maskrcnn-benchmark: a slot for background too)."""

    coding: BoxCoding
    background: str = "first"
    deltas: str = "agnostic"


@dataclass(frozen=True)
class Targets:
    """One frame's ground truth in network-input pixels: boxes [G, 4], labels [G] (0-based class)."""

    boxes: torch.Tensor
    labels: torch.Tensor


@dataclass
class SampledRoIs:
    rois: torch.Tensor  # [S, 4]
    labels: torch.Tensor  # [S] 0-based class, −1 background
    matched_boxes: torch.Tensor  # [S, 4] the matched ground truth (meaningless for background)


def _empty_like(x: torch.Tensor) -> torch.Tensor:
    return x.sum() * 0.0


def rpn_loss(anchors, logits, deltas, targets: Targets, coding: BoxCoding, batch: int = 256, positive_fraction: float = 0.5,
             generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """anchors [N, 4], logits [N], deltas [N, 4] (position-major, as the RPN
    lays them out) → {"rpn_cls", "rpn_box"}."""
    if len(targets.boxes) == 0:
        labels = torch.zeros_like(logits)
        matched = torch.zeros_like(anchors)
    else:
        match = Matcher(0.7, 0.3, allow_low_quality_matches=True)(box_iou(targets.boxes, anchors))
        matched = targets.boxes[match.clamp(min=0)]
        labels = (match >= 0).to(logits.dtype)
        labels[match == Matcher.BETWEEN_THRESHOLDS] = -1.0
    pos, neg = _sample([labels], batch, positive_fraction, generator)
    pos, neg = pos[0], neg[0]
    sampled = torch.cat([pos, neg])
    cls = F.binary_cross_entropy_with_logits(logits[sampled], labels[sampled]) if len(sampled) else _empty_like(logits)
    if len(pos):
        target = coding.encode(matched[pos], anchors[pos])
        box = F.smooth_l1_loss(deltas[pos], target, beta=1.0 / 9, reduction="sum") / max(1, len(sampled))
    else:
        box = _empty_like(deltas)
    return {"rpn_cls": cls, "rpn_box": box}


def _sample(labels: list[torch.Tensor], batch: int, positive_fraction: float, generator):
    """torchvision's sampler, seeded: it draws with torch.randperm, so the
    global generator is forked around it when a generator is given."""
    sampler = BalancedPositiveNegativeSampler(batch, positive_fraction)
    if generator is None:
        pos_masks, neg_masks = sampler(labels)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
            pos_masks, neg_masks = sampler(labels)
    return ([torch.where(m)[0] for m in pos_masks], [torch.where(m)[0] for m in neg_masks])


def sample_rois(proposals, proposal_valid, targets: Targets, batch: int = 128, positive_fraction: float = 0.25,
                generator: torch.Generator | None = None) -> SampledRoIs:
    """The head's training RoIs: the valid proposals (detached) plus the
    ground truth, matched at IoU 0.5 and sampled."""
    candidates = torch.cat([proposals[proposal_valid].detach(), targets.boxes])
    if len(targets.boxes) == 0:
        match = torch.full((len(candidates),), -1, dtype=torch.long)
    else:
        match = Matcher(0.5, 0.5, allow_low_quality_matches=False)(box_iou(targets.boxes, candidates))
    labels = (match >= 0).to(torch.float32)
    pos, neg = _sample([labels], batch, positive_fraction, generator)
    keep = torch.cat([pos[0], neg[0]])
    index = match[keep].clamp(min=0)
    foreground = match[keep] >= 0
    classes = torch.where(foreground, targets.labels[index] if len(targets.boxes) else torch.zeros_like(index), -1)
    matched = targets.boxes[index] if len(targets.boxes) else torch.zeros((len(keep), 4))
    return SampledRoIs(candidates[keep], classes, matched)


def head_loss(class_logits, deltas, sampled: SampledRoIs, layout: HeadLayout) -> dict[str, torch.Tensor]:
    """class_logits [S, K], deltas as ``layout.deltas`` says → {"head_cls", "head_box"}."""
    num_foreground = class_logits.shape[1] - 1
    fg = sampled.labels >= 0
    if layout.background == "first":
        logit_labels = torch.where(fg, sampled.labels + 1, 0)
    elif layout.background == "last":
        logit_labels = torch.where(fg, sampled.labels, num_foreground)
    else:
        raise ValueError(f"background must be 'first' or 'last', got {layout.background!r}")
    cls = F.cross_entropy(class_logits, logit_labels) if len(logit_labels) else _empty_like(class_logits)
    if not bool(fg.any()):
        return {"head_cls": cls, "head_box": _empty_like(deltas)}
    rows = torch.where(fg)[0]
    if layout.deltas == "agnostic":
        pred = deltas[rows]
    elif layout.deltas in ("per_class", "per_class_with_background"):
        slot = sampled.labels[rows] + (1 if layout.deltas == "per_class_with_background" else 0)
        pred = deltas.view(len(deltas), -1, 4)[rows, slot]
    else:
        raise ValueError(f"unknown delta layout {layout.deltas!r}")
    target = layout.coding.encode(sampled.matched_boxes[rows], sampled.rois[rows])
    box = F.smooth_l1_loss(pred, target, beta=1.0, reduction="sum") / len(logit_labels)
    return {"head_cls": cls, "head_box": box}


# Proposals the head samples from in training, as a multiple of the test-time
# count (upstream: 2000 in training, 300 at test), within the RPN's pre-NMS set.
TRAINING_PROPOSALS = 4


def rpn_losses(rpn, feature, image, targets: Targets, generator=None):
    """An RPN's losses on one frame and its proposals for the head:
    → (losses, proposals [P, 4], valid [P]). ``rpn`` is any of our RPN heads
    (``head_outputs``, ``propose``, ``delta_pixel_offset``)."""
    anchors, logits, deltas = rpn.head_outputs(feature)
    losses = rpn_loss(anchors, logits, deltas, targets, BoxCoding(pixel_offset=rpn.delta_pixel_offset), generator=generator)
    with torch.no_grad():
        post_nms = min(rpn.cfg.pre_nms, TRAINING_PROPOSALS * rpn.cfg.post_nms)
        proposed = rpn.propose(anchors, logits, deltas, image.shape[2], image.shape[3], post_nms=post_nms)
    return losses, proposed[0], proposed[-1]


def add_losses(total: dict[str, torch.Tensor], losses: dict[str, torch.Tensor], prefix: str = "", weight: float = 1.0) -> dict:
    """Adds ``losses`` into ``total`` under ``prefix`` + name."""
    for name, value in losses.items():
        key = prefix + name
        total[key] = total[key] + weight * value if key in total else weight * value
    return total


def roi_head_losses(head, proposals, proposal_valid, targets: Targets, layout: HeadLayout, generator=None):
    """Samples the head's RoIs and scores them: ``head(rois [S, 4])`` →
    (class_logits, deltas). → {"head_cls", "head_box"}."""
    sampled = sample_rois(proposals, proposal_valid, targets, generator=generator)
    class_logits, deltas = head(sampled.rois)
    return head_loss(class_logits, deltas, sampled, layout)
