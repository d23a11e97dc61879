"""Detections and the writers (vidtrt.runtime.outputs): formats, atomicity, frame order."""

from __future__ import annotations

import gc
import json

import numpy as np
import pytest

from vidtrt.runtime.outputs import (
    AnnotatedVideoWriter,
    CocoResultsWriter,
    Detections,
    ImageNetVidWriter,
    JsonLinesWriter,
    class_colour,
)
from vidtrt.runtime.synthetic import SHAPE_CLASSES, moving_shapes_clip, moving_shapes_ground_truth
from vidtrt.runtime.video import open_video

CLASS_NAMES = ("airplane", "antelope", "bear")


def detections(frame_index, count=2, seed=0):
    rng = np.random.default_rng(seed + frame_index)
    xy = rng.uniform(0, 60, (count, 2))
    wh = rng.uniform(5, 30, (count, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    return Detections(boxes, rng.uniform(0.05, 1.0, count), rng.integers(0, len(CLASS_NAMES), count), frame_index)


def make_writer(kind, path):
    if kind == "jsonl":
        return JsonLinesWriter(path, CLASS_NAMES)
    if kind == "vid":
        return ImageNetVidWriter(path, video_frame_offset=100)
    if kind == "coco":
        return CocoResultsWriter(path)
    return AnnotatedVideoWriter(path, 25, CLASS_NAMES)


KINDS = ["jsonl", "vid", "coco", "video"]
SUFFIX = {"jsonl": ".jsonl", "vid": ".txt", "coco": ".json", "video": ".mp4"}
BLANK = np.zeros((64, 96, 3), np.uint8)


def leftovers(directory, keep=()):
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


# --- Detections --------------------------------------------------------------------


def test_detections_normalise_dtypes_and_shapes():
    d = Detections([[1, 2, 3, 4]], [0.5], np.array([2.0]), np.int64(7))
    assert d.boxes.dtype == np.float32 and d.boxes.shape == (1, 4)
    assert d.scores.dtype == np.float32 and d.labels.dtype == np.int64
    assert d.frame_index == 7 and type(d.frame_index) is int and len(d) == 1
    empty = Detections.empty(3)
    assert len(empty) == 0 and empty.boxes.shape == (0, 4)
    assert len(Detections([], [], [], 0)) == 0


def test_detections_from_padded():
    boxes = np.arange(20, dtype=np.float32).reshape(5, 4)
    scores = np.array([0.9, 0.8, 0.7, 0.0, 0.0], np.float32)
    labels = np.array([1, 0, 2, 0, 0], np.float32)  # engines often emit float class ids
    by_count = Detections.from_padded(4, boxes, scores, labels, count=np.array([3], np.int32))
    assert len(by_count) == 3 and by_count.labels.tolist() == [1, 0, 2]
    by_mask = Detections.from_padded(4, boxes, scores, labels, valid=np.array([1, 0, 1, 0, 0], np.uint8))
    assert by_mask.boxes.tolist() == [boxes[0].tolist(), boxes[2].tolist()]
    assert len(Detections.from_padded(4, boxes, scores, labels, count=0)) == 0
    with pytest.raises(ValueError, match="exactly one"):
        Detections.from_padded(4, boxes, scores, labels)
    with pytest.raises(ValueError, match="exactly one"):
        Detections.from_padded(4, boxes, scores, labels, valid=scores > 0, count=1)
    with pytest.raises(ValueError, match=r"count must be in \[0, 5\]"):
        Detections.from_padded(4, boxes, scores, labels, count=6)
    with pytest.raises(ValueError, match="valid must have shape"):
        Detections.from_padded(4, boxes, scores, labels, valid=np.ones(4, bool))
    with pytest.raises(ValueError, match="padded outputs"):
        Detections.from_padded(4, boxes[:4], scores, labels, count=1)


@pytest.mark.parametrize(
    "boxes, scores, labels, message",
    [
        ([[0, 0, 1, 1]], [0.5, 0.4], [0], "disagree"),
        ([[0, 0, 1]], [0.5], [0], r"\[K, 4\]"),
        ([[0, 0, 1, np.nan]], [0.5], [0], "boxes contain NaN"),
        ([[0, 0, 1, 1]], [np.inf], [0], "scores contain NaN"),
        ([[0, 0, 1, 1]], [0.5], [-1], "labels must be >= 0"),
        ([[0, 0, 1, 1]], [0.5], [0.5], "labels must be integers"),
    ],
)
def test_detections_reject_bad_input(boxes, scores, labels, message):
    with pytest.raises(ValueError, match=message):
        Detections(boxes, scores, labels, 0)


def test_detections_describe_where_they_come_from():
    d = Detections(
        [[1, 2, 3, 4], [5, 6, 7, 8]], [0.9, 0.2], [2, 0], 4, stage="key", image_hw=(np.int64(120), 160),
        class_names=list(CLASS_NAMES),
    )
    assert d.stage == "key" and d.image_hw == (120, 160) and d.class_names == CLASS_NAMES
    assert d.names == ("bear", "airplane")
    assert repr(d) == "Detections(frame_index=4, count=2, stage='key')"
    kept = d.with_min_score(0.5)  # what produced them stays with the detections kept
    assert len(kept) == 1 and kept.names == ("bear",) and (kept.stage, kept.image_hw) == ("key", (120, 160))
    assert d.with_min_score(0.1) is d
    padded = Detections.from_padded(4, np.zeros((3, 4)), [0.5, 0.4, 0.0], [1, 1, 0], count=2, stage="nonkey")
    assert padded.stage == "nonkey" and len(padded) == 2
    assert Detections.empty(3, stage="head").stage == "head"
    with pytest.raises(ValueError, match="made without class_names"):
        Detections([[1, 2, 3, 4]], [0.5], [0], 0).names
    with pytest.raises(ValueError, match="label 3 has no name"):
        Detections([[1, 2, 3, 4]], [0.5], [3], 0, class_names=CLASS_NAMES)
    with pytest.raises(ValueError, match="image_hw must be"):
        Detections([], [], [], 0, image_hw=(0, 10))
    with pytest.raises(ValueError, match="image_hw must be two integers"):
        Detections([], [], [], 0, image_hw=(10.5, 10))
    with pytest.raises(TypeError, match="stage must be a string"):
        Detections([], [], [], 0, stage=1)


def test_class_colours_are_stable_and_distinct():
    colours = [class_colour(k) for k in range(30)]
    assert colours == [class_colour(k) for k in range(30)]
    assert len(set(colours)) == 30
    assert all(all(0 <= c <= 255 for c in colour) for colour in colours)


# --- formats -------------------------------------------------------------------------


def test_json_lines_format(tmp_path):
    path = tmp_path / "dets.jsonl"
    written = [detections(0), Detections.empty(1), detections(3, count=3)]
    with JsonLinesWriter(path, CLASS_NAMES) as writer:
        for d in written:
            writer.write(d.frame_index, d)
        assert not path.exists(), "the target must not appear before a clean close"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["frame"] for r in records] == [0, 1, 3]
    assert records[1]["detections"] == []
    for record, d in zip(records, written):
        assert len(record["detections"]) == len(d)
        for item, box, score, label in zip(record["detections"], d.boxes, d.scores, d.labels):
            assert set(item) == {"box", "score", "label", "class"}
            assert np.allclose(item["box"], box, atol=1e-3)
            assert item["score"] == pytest.approx(float(score), abs=1e-6)
            assert item["label"] == label and item["class"] == CLASS_NAMES[label]
    assert leftovers(tmp_path) == ["dets.jsonl"]


def test_imagenet_vid_format(tmp_path):
    path = tmp_path / "det_val.txt"
    written = [detections(0), Detections.empty(1), detections(2, count=3)]
    with ImageNetVidWriter(path, video_frame_offset=1000) as writer:
        for d in written:
            writer.write(d.frame_index, d)
    rows = [line.split() for line in path.read_text().splitlines()]
    assert len(rows) == 5 and all(len(row) == 7 for row in rows)
    expected = [
        (d.frame_index, box, score, label) for d in written for box, score, label in zip(d.boxes, d.scores, d.labels)
    ]
    for row, (frame_index, box, score, label) in zip(rows, expected):
        # val.txt indices count from 1; VID class ids are 1..30.
        assert int(row[0]) == 1000 + frame_index + 1
        assert int(row[1]) == label + 1
        assert float(row[2]) == pytest.approx(float(score), abs=1e-6)
        assert np.allclose([float(v) for v in row[3:]], box, atol=0.005)


def test_json_lines_name_source_size_and_stage(tmp_path):
    cases = [
        ({"source": tmp_path / "clip.mp4"}, str(tmp_path / "clip.mp4")),
        ({"source": "rtsp://camera/stream"}, "rtsp://camera/stream"),
        ({"source": np.int64(2)}, 2),
        ({"source": "frames"}, "frames"),
        ({}, None),
    ]
    for k, (options, source) in enumerate(cases):
        path = tmp_path / f"{k}.jsonl"
        with JsonLinesWriter(path, CLASS_NAMES, **options) as writer:
            writer.write(0, Detections([[1, 2, 3, 4]], [0.5], [1], 0, stage="key", image_hw=(120, 160)))
            writer.write(1, Detections.empty(1, stage="nonkey"), BLANK)  # size from the frame
            writer.write(2, Detections.empty(2))  # nothing known
        records = [json.loads(line) for line in path.read_text().splitlines()]
        assert [list(r) for r in records] == [["frame", "source", "width", "height", "stage", "detections"]] * 3
        assert [r["source"] for r in records] == [source] * 3
        assert [(r["width"], r["height"], r["stage"]) for r in records] == [
            (160, 120, "key"), (96, 64, "nonkey"), (None, None, None)
        ]
        assert records[0]["detections"] == [{"box": [1.0, 2.0, 3.0, 4.0], "score": 0.5, "label": 1, "class": "antelope"}]
    with pytest.raises(TypeError, match="source must be"):
        JsonLinesWriter(tmp_path / "bad.jsonl", CLASS_NAMES, source=1.5)
    assert not (tmp_path / "bad.jsonl").exists()


def test_imagenet_vid_snippets_concatenate(tmp_path):
    """Two snippets of 3 and 2 frames: the second's file starts at val.txt
    index 4, and the two files concatenated are the devkit's results file."""
    first, second = tmp_path / "snippet_a.txt", tmp_path / "snippet_b.txt"
    with ImageNetVidWriter(first, video_frame_offset=0) as writer:
        writer.write(0, Detections([[10, 20, 30, 40]], [0.875], [0], 0))
        writer.write(1, Detections.empty(1))
        writer.write(2, Detections([[1.5, 2.25, 3.125, 4]], [0.5], [29], 2))
    with ImageNetVidWriter(second, video_frame_offset=3) as writer:
        writer.write(0, Detections([[0, 0, 5, 5], [6, 7, 8, 9]], [0.25, 0.125], [4, 6], 0))
        writer.write(1, Detections([[100.004, 50.006, 60, 70]], [0.0000004], [1], 1))
    assert first.read_text() + second.read_text() == (
        "1 1 0.875000 10.00 20.00 30.00 40.00\n"
        "3 30 0.500000 1.50 2.25 3.12 4.00\n"
        "4 5 0.250000 0.00 0.00 5.00 5.00\n"
        "4 7 0.125000 6.00 7.00 8.00 9.00\n"
        "5 2 0.000000 100.00 50.01 60.00 70.00\n"
    )


def test_coco_results_format(tmp_path):
    path = tmp_path / "results.json"
    with CocoResultsWriter(path) as writer:
        writer.write(0, Detections([[10, 20, 30, 60], [1.25, 2.5, 3.75, 5.0]], [0.875, 0.5], [0, 2], 0))
        writer.write(1, Detections.empty(1))
        writer.write(4, Detections([[100.0004, 0, 100.0004, 0.5]], [0.1234567], [1], 4))
        assert not path.exists()
    assert json.loads(path.read_text()) == [
        {"image_id": 0, "category_id": 1, "bbox": [10.0, 20.0, 20.0, 40.0], "score": 0.875},
        {"image_id": 0, "category_id": 3, "bbox": [1.25, 2.5, 2.5, 2.5], "score": 0.5},
        {"image_id": 4, "category_id": 2, "bbox": [100.0, 0.0, 0.0, 0.5], "score": 0.123457},
    ]
    assert len(path.read_text().splitlines()) == 5  # "[", one entry per line, "]"

    written = [detections(i, count=i % 3) for i in range(6)]
    with CocoResultsWriter(tmp_path / "random.json") as writer:
        for d in written:
            writer.write(d.frame_index, d)
    entries = json.loads((tmp_path / "random.json").read_text())
    expected = [(d.frame_index, box, score, label) for d in written for box, score, label in zip(d.boxes, d.scores, d.labels)]
    assert len(entries) == len(expected) == 6
    for entry, (frame_index, box, score, label) in zip(entries, expected):
        assert entry["image_id"] == frame_index and entry["category_id"] == label + 1
        x, y, w, h = entry["bbox"]
        assert np.allclose([x, y, x + w, y + h], box, atol=2e-3)
        assert entry["score"] == pytest.approx(float(score), abs=1e-6)

    with CocoResultsWriter(tmp_path / "none.json") as writer:
        writer.write(0, Detections.empty(0))
    assert json.loads((tmp_path / "none.json").read_text()) == []
    with CocoResultsWriter(tmp_path / "no_frames.json"):
        pass
    assert json.loads((tmp_path / "no_frames.json").read_text()) == []


def test_imagenet_vid_first_frame_of_lone_video_is_1(tmp_path):
    path = tmp_path / "lone.txt"
    with ImageNetVidWriter(path) as writer:
        writer.write(0, Detections([[1, 2, 3, 4]], [0.5], [0], 0))
    assert path.read_text() == "1 1 0.500000 1.00 2.00 3.00 4.00\n"


def test_annotated_video(tmp_path):
    num_frames, height, width = 6, 96, 128
    frames = moving_shapes_clip(num_frames, height, width, seed=5)
    originals = [f.copy() for f in frames]
    truth = moving_shapes_ground_truth(num_frames, height, width, seed=5)
    path = tmp_path / "annotated.mp4"
    with AnnotatedVideoWriter(path, 12, SHAPE_CLASSES) as writer:
        for index, (frame, (boxes, labels)) in enumerate(zip(frames, truth)):
            writer.write(index, Detections(boxes, np.full(len(labels), 0.9), labels, index), frame)
    assert all(np.array_equal(a, b) for a, b in zip(frames, originals)), "write() drew on the caller's frame"
    with open_video(path) as source:
        assert (source.info.width, source.info.height, source.info.frame_count) == (width, height, num_frames)
        assert source.info.fps == pytest.approx(12)
        decoded = [f for _, f in source]
    changed = np.abs(decoded[0].astype(int) - frames[0]).max(axis=2) > 60
    assert changed.any(), "no annotation visible"


def test_annotated_video_colours_and_places_each_class(tmp_path):
    frame = np.full((160, 224, 3), 128, np.uint8)
    boxes = np.array([[20, 40, 80, 100], [120, 50, 200, 140]], np.float32)
    labels = np.array([0, 2])
    path = tmp_path / "colours.mp4"
    with AnnotatedVideoWriter(path, 25, CLASS_NAMES) as writer:
        writer.write(0, Detections(boxes, [0.9, 0.4], labels, 0), frame)
    decoded = next(open_video(path))[1].astype(int)
    for (x1, y1, x2, y2), label in zip(boxes.astype(int), labels):
        near_colour = np.abs(decoded - class_colour(label)).max(axis=2) < 40
        ys, xs = np.nonzero(near_colour)
        assert len(ys) > 50, f"class {label}: its colour is hardly visible"
        # Box outline plus the tag just above it, nothing elsewhere.
        assert xs.min() >= x1 - 3 and xs.max() <= x2 + 3
        assert ys.min() >= y1 - 25 and ys.max() <= y2 + 3


SCORED = Detections([[20, 40, 80, 100], [120, 50, 200, 140], [5, 5, 15, 15]], [0.9, 0.4, 0.6], [0, 2, 1], 0)


@pytest.mark.parametrize("threshold", [None, 0.5, 0.6, 0.95])
def test_min_score_in_text_outputs(tmp_path, threshold):
    want = [s for s in SCORED.scores.tolist() if threshold is None or s >= threshold]
    kwargs = {} if threshold is None else {"min_score": threshold}
    with JsonLinesWriter(tmp_path / "a.jsonl", CLASS_NAMES, **kwargs) as jsonl, ImageNetVidWriter(
        tmp_path / "a.txt", **kwargs
    ) as vid, CocoResultsWriter(tmp_path / "a.json", **kwargs) as coco:
        for writer in (jsonl, vid, coco):
            writer.write(0, SCORED)
            writer.write(1, Detections([[0, 0, 1, 1]], [0.3], [0], 1))
    records = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [item["score"] for item in records[0]["detections"]] == pytest.approx(want)
    assert len(records) == 2, "a frame left without detections still has its line"
    vid_rows = [line.split() for line in (tmp_path / "a.txt").read_text().splitlines()]
    coco_entries = json.loads((tmp_path / "a.json").read_text())
    low = [] if threshold is not None else [0.3]
    assert [float(row[2]) for row in vid_rows] == pytest.approx(want + low)
    assert [entry["score"] for entry in coco_entries] == pytest.approx(want + low)


def test_min_score_in_the_annotated_video(tmp_path):
    frame = np.full((160, 224, 3), 128, np.uint8)
    visible = {}
    for threshold in (None, 0.5):
        path = tmp_path / f"t{threshold}.mp4"
        with AnnotatedVideoWriter(path, 25, CLASS_NAMES, min_score=threshold) as writer:
            writer.write(0, SCORED, frame)
        decoded = next(open_video(path))[1].astype(int)
        visible[threshold] = {
            label: int((np.abs(decoded - class_colour(label)).max(axis=2) < 40).sum()) for label in range(3)
        }
    assert all(count > 50 for count in visible[None].values())
    assert visible[0.5][0] > 50 and visible[0.5][1] > 20 and visible[0.5][2] == 0  # 0.4 < 0.5: not drawn


@pytest.mark.parametrize("kind", KINDS)
def test_min_score_must_be_a_finite_number(tmp_path, kind):
    path = tmp_path / f"out{SUFFIX[kind]}"
    options = {"jsonl": (CLASS_NAMES,), "vid": (), "coco": (), "video": (25, CLASS_NAMES)}[kind]
    cls = {"jsonl": JsonLinesWriter, "vid": ImageNetVidWriter, "coco": CocoResultsWriter, "video": AnnotatedVideoWriter}[kind]
    with pytest.raises(ValueError, match="min_score must be a finite number"):
        cls(path, *options, min_score=float("nan"))
    with pytest.raises(TypeError, match="min_score must be a number"):
        cls(path, *options, min_score="0.5")
    with pytest.raises(TypeError, match="not a bool"):
        cls(path, *options, min_score=True)
    assert leftovers(tmp_path) == []


def test_annotated_video_pads_odd_sizes(tmp_path):
    path = tmp_path / "odd.mp4"
    with AnnotatedVideoWriter(path, 25, CLASS_NAMES) as writer:
        writer.write(0, Detections.empty(0), np.full((33, 47, 3), 128, np.uint8))
    with open_video(path) as source:
        assert (source.info.height, source.info.width) == (34, 48)


def test_annotated_video_needs_frames_of_one_size(tmp_path):
    path = tmp_path / "v.mp4"
    writer = AnnotatedVideoWriter(path, 25, CLASS_NAMES)
    with pytest.raises(ValueError, match="needs the frame"):
        writer.write(0, Detections.empty(0))
    writer.write(0, Detections.empty(0), BLANK)
    with pytest.raises(ValueError, match="frame 1 has shape"):
        writer.write(1, Detections.empty(1), BLANK[:32])
    with pytest.raises(ValueError, match="uint8 BGR"):
        writer.write(1, Detections.empty(1), BLANK.astype(np.float32))
    writer.abort()
    assert leftovers(tmp_path) == []


def test_annotated_video_without_frames_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no frames were written"):
        with AnnotatedVideoWriter(tmp_path / "empty.mp4", 25, CLASS_NAMES):
            pass
    assert leftovers(tmp_path) == []


# --- atomicity and order (every writer) --------------------------------------------


def write_some(writer, count=3):
    for index in range(count):
        writer.write(index, detections(index), BLANK)


@pytest.mark.parametrize("kind", KINDS)
def test_exception_inside_with_leaves_no_file(tmp_path, kind):
    path = tmp_path / f"out{SUFFIX[kind]}"
    with pytest.raises(RuntimeError, match="pipeline failed"):
        with make_writer(kind, path) as writer:
            write_some(writer)
            raise RuntimeError("pipeline failed")
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", KINDS)
def test_abort_keeps_the_previous_file_and_close_replaces_it(tmp_path, kind):
    path = tmp_path / f"out{SUFFIX[kind]}"
    path.write_bytes(b"previous complete result")
    writer = make_writer(kind, path)
    write_some(writer)
    writer.abort()
    writer.close()  # no effect after abort
    assert path.read_bytes() == b"previous complete result"
    assert leftovers(tmp_path) == [path.name]
    with pytest.raises(ValueError, match="aborted"):
        writer.write(5, detections(5), BLANK)

    with make_writer(kind, path) as writer:
        write_some(writer)
    assert path.read_bytes() != b"previous complete result"
    assert leftovers(tmp_path) == [path.name]


@pytest.mark.parametrize("kind", KINDS)
def test_frames_out_of_order_are_refused(tmp_path, kind):
    path = tmp_path / f"out{SUFFIX[kind]}"
    writer = make_writer(kind, path)
    writer.write(5, detections(5), BLANK)
    with pytest.raises(ValueError, match="frame 3 written after frame 5"):
        writer.write(3, detections(3), BLANK)
    with pytest.raises(ValueError, match="frame 5 written after frame 5"):
        writer.write(5, detections(5), BLANK)
    writer.write(8, detections(8), BLANK)  # gaps are fine, and a refused write does not spoil the output
    writer.close()
    assert path.exists() and writer.frames_written == 2
    with pytest.raises(ValueError, match="closed"):
        writer.write(9, detections(9), BLANK)

    with pytest.raises(ValueError, match="frames must be written in increasing order"):
        with make_writer(kind, tmp_path / f"second{SUFFIX[kind]}") as second:
            second.write(2, detections(2), BLANK)
            second.write(1, detections(1), BLANK)
    assert leftovers(tmp_path) == [path.name]


def test_write_checks_its_arguments(tmp_path):
    with JsonLinesWriter(tmp_path / "a.jsonl", CLASS_NAMES) as writer:
        with pytest.raises(ValueError, match="frame 2 with the detections of frame 1"):
            writer.write(2, detections(1))
        with pytest.raises(ValueError, match="label 3 has no name"):
            writer.write(2, Detections([[0, 0, 1, 1]], [0.5], [3], 2))
        with pytest.raises(TypeError, match="must be a Detections"):
            writer.write(2, {"boxes": []})
        writer.write(2, detections(2))
    assert len((tmp_path / "a.jsonl").read_text().splitlines()) == 1
    with pytest.raises(FileNotFoundError, match="output directory does not exist"):
        JsonLinesWriter(tmp_path / "missing" / "a.jsonl", CLASS_NAMES)
    with pytest.raises(TypeError, match="class_names"):
        JsonLinesWriter(tmp_path / "b.jsonl", "airplane")


def test_dropped_writer_discards_its_output(tmp_path):
    writer = JsonLinesWriter(tmp_path / "dropped.jsonl", CLASS_NAMES)
    writer.write(0, detections(0))
    with pytest.warns(ResourceWarning, match="neither closed nor aborted"):
        del writer
        gc.collect()
    assert leftovers(tmp_path) == []
