"""Mean average precision over a video, PASCAL VOC / ImageNet VID style.

Per class: detections of all frames sorted by score; a detection is a true
positive when it overlaps a not-yet-matched ground-truth box of its class in
its frame with IoU ≥ the threshold; AP is the area under the
precision/recall curve with precision made monotone (all-point
interpolation). mAP is the mean over classes that have ground truth.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..core.compare import iou_matrix


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def per_class_ap(detections: Sequence, ground_truth: Sequence, iou_threshold: float = 0.5) -> dict[int, float]:
    """detections[f] = (boxes [K, 4], scores [K], labels [K]); ground_truth[f] = (boxes [G, 4], labels [G])."""
    if len(detections) != len(ground_truth):
        raise ValueError(f"{len(detections)} frames of detections but {len(ground_truth)} of ground truth")
    classes = sorted({int(c) for _, labels in ground_truth for c in np.asarray(labels)})
    result = {}
    for c in classes:
        entries = []  # (score, frame, box)
        gt_boxes, gt_used = {}, {}
        total = 0
        for f, ((boxes, scores, labels), (g_boxes, g_labels)) in enumerate(zip(detections, ground_truth)):
            boxes, scores, labels = np.asarray(boxes), np.asarray(scores), np.asarray(labels)
            keep = labels == c
            entries += [(float(s), f, b) for s, b in zip(scores[keep], boxes[keep])]
            g = np.asarray(g_boxes)[np.asarray(g_labels) == c]
            gt_boxes[f], gt_used[f] = g, np.zeros(len(g), dtype=bool)
            total += len(g)
        entries.sort(key=lambda e: -e[0])
        tp = np.zeros(len(entries))
        for i, (_, f, box) in enumerate(entries):
            if len(gt_boxes[f]) == 0:
                continue
            ious = iou_matrix(box[None, :].astype(np.float64), gt_boxes[f].astype(np.float64))[0]
            ious[gt_used[f]] = -1.0
            best = int(np.argmax(ious))
            if ious[best] >= iou_threshold:
                tp[i] = 1
                gt_used[f][best] = True
        cum_tp = np.cumsum(tp)
        recall = cum_tp / max(total, 1)
        precision = cum_tp / np.maximum(np.arange(1, len(entries) + 1), 1)
        result[c] = average_precision(recall, precision) if len(entries) else 0.0
    return result


def mean_average_precision(detections, ground_truth, iou_threshold: float = 0.5) -> float:
    aps = per_class_ap(detections, ground_truth, iou_threshold)
    return float(np.mean(list(aps.values()))) if aps else float("nan")
