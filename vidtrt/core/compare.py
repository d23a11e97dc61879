"""Comparing two detectors' outputs for the same frame.

Two backends computing the same graph differ by float rounding, which can
reorder near-equal scores at a top-k cut-off or swap which of two near-equal,
overlapping boxes NMS keeps. ``compare_detections`` matches detections
one-to-one and reports the largest box/score deviation over matched pairs,
and counts unmatched detections not explained by one of those two effects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    # Two identical degenerate boxes (zero width or height after clipping at a
    # border) are the same detection: IoU 1, not 0/0.
    identical = np.all(a[:, None, :] == b[None, :, :], axis=-1)
    return np.where(union > 0, inter / np.maximum(union, 1e-12), identical.astype(np.float64))


@dataclass
class DetectionComparison:
    matched: int
    max_box_error: float  # pixels, over matched pairs
    max_score_error: float
    unexplained_reference: int  # reference detections without a counterpart
    unexplained_other: int

    @property
    def ok(self) -> bool:
        return self.unexplained_reference == 0 and self.unexplained_other == 0

    def worst(self) -> float:
        return max(self.max_box_error, self.max_score_error)


def _valid(det) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes, scores, labels, valid = (np.asarray(x) for x in det)
    valid = valid.astype(bool)
    return boxes[valid].astype(np.float64), scores[valid].astype(np.float64), labels[valid]


def compare_detections(reference, other, capacity: int, nms_iou: float, score_tol: float = 1e-3, box_tol: float = 0.5):
    """reference, other: (boxes [D, 4], scores [D], labels [D], valid [D]).

    A pair matches when labels agree, |Δscore| ≤ score_tol and every box
    coordinate is within box_tol pixels. An unmatched detection is explained
    when (a) the other side is full (``capacity`` detections) and its score is
    within score_tol of the other side's lowest score, or (b) the other side
    has an unmatched detection of the same label, a score within score_tol
    and IoU > nms_iou with it (NMS kept the other of two near-equal boxes).
    """
    rb, rs, rl = _valid(reference)
    ob, os_, ol = _valid(other)
    order_r, order_o = np.argsort(-rs, kind="stable"), np.argsort(-os_, kind="stable")
    used = np.zeros(len(ob), dtype=bool)
    matched_r = np.zeros(len(rb), dtype=bool)
    max_box = max_score = 0.0
    for i in order_r:
        best, best_err = -1, np.inf
        for j in order_o:
            if used[j] or ol[j] != rl[i] or abs(os_[j] - rs[i]) > score_tol:
                continue
            err = float(np.abs(ob[j] - rb[i]).max())
            if err <= box_tol and err < best_err:
                best, best_err = j, err
        if best >= 0:
            used[best] = True
            matched_r[i] = True
            max_box = max(max_box, best_err)
            max_score = max(max_score, abs(os_[best] - rs[i]))

    def unexplained(boxes, scores, labels, matched, o_boxes, o_scores, o_labels, o_matched):
        count = 0
        ious = iou_matrix(boxes, o_boxes)
        for i in np.flatnonzero(~matched):
            at_cutoff = len(o_scores) >= capacity and scores[i] <= o_scores.min() + score_tol
            swapped = any(
                not o_matched[j] and o_labels[j] == labels[i] and abs(o_scores[j] - scores[i]) <= score_tol and ious[i, j] > nms_iou
                for j in range(len(o_boxes))
            )
            count += not (at_cutoff or swapped)
        return count

    return DetectionComparison(
        matched=int(matched_r.sum()),
        max_box_error=max_box,
        max_score_error=max_score,
        unexplained_reference=unexplained(rb, rs, rl, matched_r, ob, os_, ol, used),
        unexplained_other=unexplained(ob, os_, ol, used, rb, rs, rl, matched_r),
    )
