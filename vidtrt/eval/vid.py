"""ImageNet VID evaluation as the field computes it.

Ground truth comes from the devkit layout: ``ImageSets/VID/<split>.txt``
(lines ``<snippet>/<frame> <index>``, the index 1-based over the split),
``Annotations/VID/<split>/<snippet>/<frame>.xml`` (PASCAL-style objects with
``trackid``, ``name`` = synset, ``bndbox``). Detections come as the devkit's
result file (lines ``<index> <class 1-30> <score> <x1> <y1> <x2> <y2>``, what
``vidtrt run --outputs vid`` writes) or as ``vidtrt run``'s JSON lines.

Matching (the devkit's ``eval_vid_detection``, as mega.pytorch / FGFA run
it): per frame and class, detections by descending score each take the
unmatched ground-truth box of highest IoU (+1 pixel arithmetic) at or above
the threshold — ``min(0.5, wh / ((w + 10)(h + 10)))`` for a w×h box under the
devkit's rule (small objects get a lower bar), 0.5 under ``plain`` (as
mmtracking evaluates). AP per class is the area under the precision/recall
curve with monotone precision; mAP the mean over classes with ground truth.

Motion bins (FGFA): a ground-truth box's motion IoU is its mean IoU with the
same track's boxes in the frames within ±10 (itself excluded; 1.0, "slow",
when the track has no other box there); slow > 0.9, medium 0.7–0.9, fast <
0.7. For a bin, boxes outside it are ignored: a detection matched to one,
or overlapping ignored boxes more than counted ones, counts neither way
(mega.pytorch's ``calc_detection_vid_prec_rec``).
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..models.classes import IMAGENET_VID_CLASSES, IMAGENET_VID_SYNSETS

IOU_RULES = ("devkit", "plain")
MOTION_BINS = {"all": (0.0, 1.0), "slow": (0.9, 1.0), "medium": (0.7, 0.9), "fast": (0.0, 0.7)}
MOTION_WINDOW = 10


class EvalError(ValueError):
    """Input that cannot be evaluated (missing files, malformed lines)."""


@dataclass
class FrameTruth:
    snippet: str
    frame: str
    index: int  # 1-based position in the split file
    width: int
    height: int
    boxes: np.ndarray  # [G, 4] x1 y1 x2 y2, inclusive pixels as annotated
    labels: np.ndarray  # [G] 0-based class
    track_ids: np.ndarray  # [G]
    motion_iou: np.ndarray = field(default=None)  # [G], filled by motion_ious()


@dataclass
class FrameDetections:
    boxes: np.ndarray  # [K, 4]
    scores: np.ndarray  # [K]
    labels: np.ndarray  # [K] 0-based


@dataclass
class EvalResult:
    map: dict[str, float]  # motion bin → mAP
    per_class: dict[str, float]  # class name → AP (all motion)
    num_frames: int
    num_boxes: int
    iou_rule: str

    def as_dict(self) -> dict:
        return {"map": self.map, "per_class": self.per_class, "frames": self.num_frames, "boxes": self.num_boxes, "iou_rule": self.iou_rule}


# ------------------------------------------------------------ ground truth


def read_split(root: str | Path, split: str) -> list[tuple[str, str, int]]:
    """(snippet, frame, index) of every line of ImageSets/VID/<split>.txt."""
    path = Path(root) / "ImageSets" / "VID" / f"{split}.txt"
    if not path.is_file():
        raise EvalError(f"no split file {path} (expected the ImageNet VID devkit layout under {root})")
    out = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) > 2 or "/" not in parts[0]:
            raise EvalError(f"{path}:{number}: expected '<snippet>/<frame> [index]', got {line!r}")
        snippet, frame = parts[0].rsplit("/", 1)
        try:
            index = int(parts[1]) if len(parts) == 2 else len(out) + 1
        except ValueError:
            raise EvalError(f"{path}:{number}: the index {parts[1]!r} is not an integer") from None
        out.append((snippet, frame, index))
    if not out:
        raise EvalError(f"{path} lists no frames")
    return out


def read_annotation(path: str | Path, snippet: str = "", frame: str = "", index: int = 0) -> FrameTruth:
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as err:
        raise EvalError(f"cannot read annotation {path}: {err}") from None
    synset_to_label = {s: i for i, s in enumerate(IMAGENET_VID_SYNSETS)}
    size = root.find("size")
    width, height = (int(size.find(k).text) for k in ("width", "height")) if size is not None else (0, 0)
    boxes, labels, tracks = [], [], []
    for obj in root.findall("object"):
        name = obj.findtext("name", "").strip()
        if name not in synset_to_label:
            raise EvalError(f"{path}: unknown class {name!r} (expected an ImageNet VID synset such as {IMAGENET_VID_SYNSETS[0]})")
        box = obj.find("bndbox")
        boxes.append([float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
        labels.append(synset_to_label[name])
        tracks.append(int(obj.findtext("trackid", "-1")))
    return FrameTruth(
        snippet, frame, index, width, height,
        np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(labels, dtype=np.int64), np.asarray(tracks, dtype=np.int64),
    )  # fmt: skip


def load_ground_truth(root: str | Path, split: str) -> list[FrameTruth]:
    """Every frame of the split with its boxes and motion IoUs."""
    root = Path(root)
    frames = []
    for snippet, frame, index in read_split(root, split):
        path = root / "Annotations" / "VID" / split / snippet / f"{frame}.xml"
        if not path.is_file():
            raise EvalError(f"no annotation {path} for {snippet}/{frame} of {split}.txt")
        frames.append(read_annotation(path, snippet, frame, index))
    motion_ious(frames)
    return frames


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[N, 4] × [M, 4] → [N, M] IoU in the devkit's +1 pixel arithmetic."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + 1
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + 1
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def motion_ious(frames: list[FrameTruth]) -> None:
    """Fills each frame's ``motion_iou``: per box, the mean IoU with its track's
    boxes within ±MOTION_WINDOW frames of the same snippet (1.0 with none)."""
    by_snippet: dict[str, list[int]] = defaultdict(list)
    for i, f in enumerate(frames):
        by_snippet[f.snippet].append(i)
    for members in by_snippet.values():
        tracks: dict[int, dict[int, np.ndarray]] = defaultdict(dict)  # track → position → box
        for position, i in enumerate(members):
            for box, track in zip(frames[i].boxes, frames[i].track_ids):
                tracks[int(track)][position] = box
        for position, i in enumerate(members):
            f = frames[i]
            values = []
            for box, track in zip(f.boxes, f.track_ids):
                others = [b for p, b in tracks[int(track)].items() if p != position and abs(p - position) <= MOTION_WINDOW]
                values.append(float(box_iou(box[None], np.stack(others)).mean()) if others and track >= 0 else 1.0)
            f.motion_iou = np.asarray(values, dtype=np.float64)


def motion_bin(value: float) -> str:
    return "slow" if value > 0.9 else ("medium" if value >= 0.7 else "fast")


# ------------------------------------------------------------ detections


def load_vid_results(path: str | Path) -> dict[int, FrameDetections]:
    """The devkit's result file → split index → detections (labels 0-based)."""
    rows: dict[int, list] = defaultdict(list)
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise EvalError(f"cannot read detections {path}: {err}") from None
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            if len(parts) != 7:
                raise ValueError
            index, label = int(parts[0]), int(parts[1])
            score, *box = (float(p) for p in parts[2:])
        except ValueError:
            raise EvalError(f"{path}:{number}: expected '<frame index> <class 1-30> <score> <x1> <y1> <x2> <y2>', got {line!r}") from None
        if not 1 <= label <= len(IMAGENET_VID_CLASSES):
            raise EvalError(f"{path}:{number}: class {label} is not in 1..{len(IMAGENET_VID_CLASSES)}")
        rows[index].append((box, score, label - 1))
    return {index: _as_detections(items) for index, items in rows.items()}


def load_jsonl(path: str | Path, frames: list[FrameTruth]) -> dict[int, FrameDetections]:
    """``vidtrt run`` JSON lines → split index → detections. Each line's
    ``source`` names the snippet (a folder's name, a video file's stem); the
    frame is its ``file``'s stem for image sequences (the devkit's frame id),
    else its ``frame`` position. The JSON may hold several snippets. Labels
    are VID class indices (the run's ``label``)."""
    index_of, index_of_name = {}, {}
    positions: dict[str, int] = defaultdict(int)
    for f in frames:
        snippet = f.snippet.rsplit("/", 1)[-1]
        index_of[(snippet, positions[f.snippet])] = f.index
        index_of_name[(snippet, f.frame)] = f.index
        positions[f.snippet] += 1
    rows: dict[int, list] = defaultdict(list)
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise EvalError(f"cannot read detections {path}: {err}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            source = Path(str(record["source"]))
            items = [(d["box"], float(d["score"]), int(d["label"])) for d in record["detections"]]
            if record.get("file"):  # an image sequence: the file names the devkit frame
                snippet = source.parent.name if any(c in source.name for c in "%*?[") else source.name
                key, table = (snippet, Path(record["file"]).stem), index_of_name
            else:  # a video: the snippet is the file's stem, the frame its position
                key, table = (source.stem if source.suffix else source.name, int(record["frame"])), index_of
        except (ValueError, KeyError, TypeError):
            raise EvalError(f"{path}:{number}: not a vidtrt JSON line (frame, source, detections)") from None
        if key not in table:
            raise EvalError(f"{path}:{number}: frame {key[1]} of {key[0]!r} is not in the split")
        rows[table[key]].extend(items)
    return {index: _as_detections(items) for index, items in rows.items()}


def _as_detections(items) -> FrameDetections:
    boxes = np.asarray([b for b, _, _ in items], dtype=np.float64).reshape(-1, 4)
    return FrameDetections(boxes, np.asarray([s for _, s, _ in items], np.float64), np.asarray([c for _, _, c in items], np.int64))


def load_detections(path: str | Path, frames: list[FrameTruth]) -> dict[int, FrameDetections]:
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"detections file not found: {path}")
    return load_jsonl(path, frames) if path.suffix in (".jsonl", ".json") else load_vid_results(path)


# ------------------------------------------------------------ matching and AP


def _thresholds(gt_boxes: np.ndarray, rule: str) -> np.ndarray:
    if rule == "plain":
        return np.full(len(gt_boxes), 0.5)
    w = gt_boxes[:, 2] - gt_boxes[:, 0] + 1
    h = gt_boxes[:, 3] - gt_boxes[:, 1] + 1
    return np.minimum(0.5, w * h / ((w + 10) * (h + 10)))


def evaluate(frames: list[FrameTruth], detections: dict[int, FrameDetections], iou_rule: str = "devkit", bins=tuple(MOTION_BINS)) -> EvalResult:
    """mAP over the split, per motion bin; per-class AP over all boxes."""
    if iou_rule not in IOU_RULES:
        raise ValueError(f"iou_rule must be one of {IOU_RULES}, got {iou_rule!r}")
    unknown = sorted(set(detections) - {f.index for f in frames})
    if unknown:
        raise EvalError(f"detections for frame indices not in the split: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
    maps, per_class = {}, {}
    all_motion = np.concatenate([f.motion_iou for f in frames]) if frames else np.zeros(0)
    for name in bins:
        low, high = MOTION_BINS[name]
        aps = _class_aps(frames, detections, iou_rule, low, high, all_motion, name == "all")
        valid = [ap for ap in aps.values() if not math.isnan(ap)]
        maps[name] = float(np.mean(valid)) if valid else float("nan")
        if name == "all":
            per_class = {IMAGENET_VID_CLASSES[c]: ap for c, ap in sorted(aps.items()) if not math.isnan(ap)}
    return EvalResult(maps, per_class, len(frames), int(sum(len(f.boxes) for f in frames)), iou_rule)


def _class_aps(frames, detections, rule, low, high, all_motion, everything: bool) -> dict[int, float]:
    n_pos: dict[int, float] = defaultdict(float)
    scores: dict[int, list] = defaultdict(list)
    matched: dict[int, list] = defaultdict(list)
    ignored: dict[int, list] = defaultdict(list)
    if everything or len(all_motion) == 0:
        empty_weight = 0.0
    else:
        empty_weight = float(np.mean((all_motion >= low) & (all_motion <= high)))
        empty_weight = 0.0 if empty_weight == 1 else empty_weight
    empty = FrameDetections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))
    for f in frames:
        det = detections.get(f.index, empty)
        gt_ignore = np.zeros(len(f.boxes)) if everything else ((f.motion_iou < low) | (f.motion_iou > high)).astype(float)
        for c in np.unique(np.concatenate([det.labels, f.labels])).astype(int):
            d_mask, g_mask = det.labels == c, f.labels == c
            order = np.argsort(-det.scores[d_mask], kind="stable")
            d_boxes, d_scores = det.boxes[d_mask][order], det.scores[d_mask][order]
            g_boxes, g_ignore = f.boxes[g_mask], gt_ignore[g_mask]
            n_pos[c] += len(g_boxes) - g_ignore.sum()
            scores[c].extend(d_scores)
            if len(d_boxes) == 0:
                continue
            if len(g_boxes) == 0:
                matched[c].extend([0] * len(d_boxes))
                ignored[c].extend([empty_weight] * len(d_boxes))
                continue
            iou = box_iou(d_boxes, g_boxes)
            thr = _thresholds(g_boxes, rule)
            taken = np.zeros(len(g_boxes), dtype=bool)
            for j in range(len(d_boxes)):
                best, arg = -1.0, -1
                best_ignored, best_counted = -1.0, -1.0
                for k in range(len(g_boxes)):
                    if g_ignore[k]:
                        best_ignored = max(best_ignored, iou[j, k])
                    else:
                        best_counted = max(best_counted, iou[j, k])
                    if taken[k] or iou[j, k] < thr[k] or iou[j, k] < best:
                        continue
                    # On a tie, prefer a counted box over an ignored one.
                    if iou[j, k] > best or arg < 0 or g_ignore[arg]:
                        best, arg = iou[j, k], k
                if arg >= 0:
                    taken[arg] = True
                    matched[c].append(1)
                    ignored[c].append(g_ignore[arg])
                else:
                    matched[c].append(0)
                    if best_counted > best_ignored:
                        ignored[c].append(0.0)
                    elif best_ignored > best_counted:
                        ignored[c].append(1.0)
                    else:
                        ignored[c].append(g_ignore.sum() / len(g_ignore))
    aps = {}
    for c in set(n_pos) | set(scores):
        if n_pos.get(c, 0) <= 0:
            aps[c] = float("nan")
            continue
        order = np.argsort(-np.asarray(scores[c]), kind="stable")
        m = np.asarray(matched[c], dtype=np.int8)[order]
        ig = np.asarray(ignored[c], dtype=np.float64)[order]
        is_tp = (m == 1) & (ig != 1)
        tp = np.cumsum(is_tp)
        # An unmatched detection counts as a false positive weighted by how much it is not ignored.
        fp_weight = np.where(ig == 0, 1.0, ig)
        fp = np.cumsum(((m == 0) & (ig != 1)) * fp_weight)
        # tp / (tp + fp), 0 before the first detection (upstream adds eps to the
        # denominator, which keeps a perfect AP a hair under 1).
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        # The area under the monotone precision envelope: recall rises by 1 / n_pos
        # at each true positive, so the area is the envelope summed there, / n_pos
        # (the same value as average_precision(recall, precision), and exactly 1.0
        # for perfect detections).
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        aps[c] = math.fsum(envelope[is_tp]) / n_pos[c]
    return aps


def snippet_truth(root: str | Path, split: str, source) -> list[FrameTruth]:
    """The ground truth of the snippet a source is: a folder (or pattern /
    glob) named like the snippet, or a video file whose stem is its name; in
    the split's frame order."""
    path = Path(str(source))
    name = path.parent.name if any(c in path.name for c in "%*?[") else (path.stem if path.suffix else path.name)
    frames = [f for f in load_ground_truth(root, split) if f.snippet.rsplit("/", 1)[-1] == name]
    if not frames:
        raise EvalError(f"no snippet {name!r} in {Path(root) / 'ImageSets' / 'VID' / (split + '.txt')} (the source's name names it)")
    return frames


def evaluate_run(truth: list[FrameTruth], detections) -> EvalResult:
    """mAP of one snippet's run (vidtrt Detections, frame order) against its
    ground truth: frames matched by file name when the run read images, else
    by position."""
    by_name = {f.frame: f.index for f in truth}
    dets = {}
    for position, d in enumerate(detections):
        if d.file is not None and Path(d.file).stem in by_name:
            index = by_name[Path(d.file).stem]
        elif position < len(truth):
            index = truth[position].index
        else:
            raise EvalError(f"the run has more frames ({len(detections)}) than the snippet's ground truth ({len(truth)})")
        dets[index] = FrameDetections(np.asarray(d.boxes, np.float64), np.asarray(d.scores, np.float64), np.asarray(d.labels, np.int64))
    return evaluate(truth, dets)
