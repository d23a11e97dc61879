"""Detection post-processing inside the graph: class-wise NMS, a score
threshold and a fixed number of detections with a validity mask."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import boxes as box_ops


@dataclass
class DetectionConfig:
    score_threshold: float = 0.001
    nms_iou: float = 0.3
    max_detections: int = 100
    pre_nms: int = 3840  # best (box, class) pairs considered by NMS
    box_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)  # delta std 0.1/0.2

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


def detect(rois, roi_valid, class_logits, box_deltas, image_height, image_width, cfg: DetectionConfig):
    """rois [R, 4], roi_valid [R], class_logits [R, K] (K includes background 0),
    box_deltas [R, 4] (class-agnostic) or [R, 4·(K-1)] (one box per foreground
    class, mmdetection's layout) → boxes [D, 4], scores [D], labels [D]
    (0-based, background excluded), valid [D]; D = cfg.max_detections."""
    num_classes = class_logits.shape[1] - 1
    probs = torch.softmax(class_logits, dim=1)[:, 1:]  # [R, K-1]
    if box_deltas.shape[1] == 4:
        boxes = box_ops.clip(box_ops.decode(rois, box_deltas, cfg.box_weights), image_height, image_width)
        candidate_boxes = boxes[:, None, :].expand(-1, num_classes, 4).reshape(-1, 4)
    elif box_deltas.shape[1] == 4 * num_classes:
        per_class_rois = rois[:, None, :].expand(-1, num_classes, 4).reshape(-1, 4)
        decoded = box_ops.decode(per_class_rois, box_deltas.reshape(-1, 4), cfg.box_weights)
        candidate_boxes = box_ops.clip(decoded, image_height, image_width)
    else:
        raise ValueError(f"box_deltas must have 4 or 4·{num_classes} columns, got {box_deltas.shape[1]}")
    return select_detections(candidate_boxes, probs, roi_valid, cfg)


def select_detections(candidate_boxes, probs, roi_valid, cfg: DetectionConfig):
    """The fixed-size tail every R-CNN post-processing shares: candidate_boxes
    [R·K, 4] (RoI-major, one per foreground class), probs [R, K]; keeps valid
    RoIs' (box, class) pairs scoring above the threshold, class-wise NMS, the
    best ``max_detections`` → boxes [D, 4], scores [D], labels [D] (0-based),
    valid [D]."""
    num_classes = probs.shape[1]
    keep = roi_valid.view(-1, 1) & (probs > cfg.score_threshold)
    scores = torch.where(keep, probs, torch.full_like(probs, float("-inf"))).reshape(-1)  # roi-major
    labels = torch.arange(num_classes).repeat(probs.shape[0])
    pre_nms = min(cfg.pre_nms, box_ops.TENSORRT_MAX_TOPK)
    index, valid = box_ops.fixed_size_nms(
        candidate_boxes, scores, cfg.nms_iou, pre_nms, cfg.max_detections, groups=labels
    )
    zero = torch.zeros((), dtype=scores.dtype)
    out_boxes = torch.where(valid.view(-1, 1), candidate_boxes[index], zero)
    out_scores = torch.where(valid, scores[index], zero)
    out_labels = torch.where(valid, labels[index], torch.zeros_like(labels[index]))
    return out_boxes, out_scores, out_labels, valid
