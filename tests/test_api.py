"""The embedding API (vidtrt.VideoDetector): against run_video and a hand-made
pipeline loop, streams, reset, delays, bad frames, threads, the example script,
and run_video's output options (score threshold, VID offset, COCO)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import vidtrt
from vidtrt.api import DetectionStream, VideoDetector
from vidtrt.core.preprocess import Preprocessor
from vidtrt.export.exporter import export_bundle
from vidtrt.runtime.backends.base import Backend
from vidtrt.runtime.outputs import Detections
from vidtrt.runtime.pipelines import create_pipeline
from vidtrt.runtime.runner import run_video
from vidtrt.runtime.synthetic import moving_shapes_clip, write_clip

REPO = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH = 120, 160


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return export_bundle("psla", tmp_path_factory.mktemp("bundle") / "psla_small", config_name="psla_small", log=lambda _: None)


@pytest.fixture(scope="module")
def detector(bundle):
    return VideoDetector(bundle, key_interval=4, key_placement="middle")


def clip(num_frames, seed=0, height=HEIGHT, width=WIDTH):
    return moving_shapes_clip(num_frames=num_frames, height=height, width=width, seed=seed)


def assert_same(got: list[Detections], want: list[Detections]):
    assert [d.frame_index for d in got] == [d.frame_index for d in want]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.boxes, w.boxes)
        np.testing.assert_array_equal(g.scores, w.scores)
        np.testing.assert_array_equal(g.labels, w.labels)
        assert g.stage == w.stage


def hand_made_run(backend, frames, **schedule):
    """The oracle: the pipeline fed preprocessed tensors, valid rows kept and
    boxes scaled back to the original image by hand."""
    preprocess = Preprocessor.from_dict(backend.bundle.manifest.preprocess)
    stream = create_pipeline(backend, **schedule).stream()
    results = []
    for index, frame in enumerate(frames):
        results += stream.push(index, preprocess(frame).tensor)
    results += stream.flush()
    height, width = frames[0].shape[:2]
    scale = preprocess.short_side / min(height, width)
    if preprocess.max_long_side is not None:
        scale = min(scale, preprocess.max_long_side / max(height, width))
    resized_h, resized_w = int(height * scale + 0.5), int(width * scale + 0.5)
    out = []
    for result in results:
        valid = np.asarray(result.detections["valid"]) > 0.5
        boxes = np.asarray(result.detections["boxes"], np.float32)[valid] * np.float32(
            [width / resized_w, height / resized_h] * 2
        )
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
        out.append((result.index, result.stage, boxes, result.detections["scores"][valid], result.detections["labels"][valid]))
    return out


# ---------------------------------------------------------------- results


def test_detect_video_equals_run_video_and_a_hand_made_loop(bundle, detector, tmp_path):
    frames = clip(10)
    got = list(detector.detect_video(frames))
    assert [d.frame_index for d in got] == list(range(10))
    names = bundle.manifest.class_names
    for d in got:
        assert d.image_hw == (HEIGHT, WIDTH) and d.class_names == tuple(names)
        assert d.names == tuple(names[label] for label in d.labels)
        assert (d.boxes[:, 0::2] <= WIDTH).all() and (d.boxes[:, 1::2] <= HEIGHT).all() and (d.boxes >= 0).all()
    assert sum(len(d) for d in got) > 0

    # run_video over the same frames decoded from... the same arrays, on a backend of its own.
    collected: list[Detections] = []
    run_video(bundle, frames, outputs=(), collect=collected, progress=False,
              pipeline_options={"key_interval": 4, "key_placement": "middle"})
    assert_same(got, collected)

    oracle = hand_made_run(detector.backend, frames, key_interval=4, key_placement="middle")
    assert [(i, stage) for i, stage, *_ in oracle] == [(d.frame_index, d.stage) for d in got]
    for d, (_, _, boxes, scores, labels) in zip(got, oracle):
        np.testing.assert_allclose(d.boxes, boxes, rtol=1e-6, atol=1e-4)
        np.testing.assert_array_equal(d.scores, scores)
        np.testing.assert_array_equal(d.labels, labels.astype(np.int64))


def test_push_one_at_a_time_equals_detect_video(detector):
    frames = clip(7, seed=1)
    stream = detector.stream()
    pushed = [d for frame in frames for d in stream.push(frame)] + stream.flush()
    assert_same(pushed, list(detector.detect_video(frames)))


def test_middle_placement_delay(bundle):
    detector = VideoDetector(bundle, key_interval=6, key_placement="middle")
    stream = detector.stream()
    frames = clip(8, seed=2)
    ready = []
    for frame in frames:
        ready.append([(d.frame_index, d.stage) for d in stream.push(frame)])
    assert ready[:3] == [[], [], []]
    assert ready[3] == [(0, "nonkey"), (1, "nonkey"), (2, "nonkey"), (3, "key")]  # frame 6 // 2 is the key frame
    assert ready[4:6] == [[(4, "nonkey")], [(5, "nonkey")]]
    assert ready[6:] == [[], []]
    assert stream.frames_pushed == 8 and stream.waiting == 2
    assert [(d.frame_index, d.stage) for d in stream.flush()] == [(6, "nonkey"), (7, "key")]
    assert stream.frames_pushed == 0 and stream.waiting == 0

    first = VideoDetector(bundle, key_interval=6, key_placement="first").stream()
    assert [[d.frame_index for d in first.push(frame)] for frame in frames[:3]] == [[0], [1], [2]]


def test_independent_streams_over_one_detector(detector):
    a_frames, b_frames = clip(9, seed=3), clip(6, seed=4)
    want_a, want_b = list(detector.detect_video(a_frames)), list(detector.detect_video(b_frames))
    a, b = detector.stream(), detector.stream()
    got_a, got_b = [], []
    for i in range(max(len(a_frames), len(b_frames))):
        if i < len(a_frames):
            got_a += a.push(a_frames[i])
        if i < len(b_frames):
            got_b += b.push(b_frames[i])
    assert_same(got_a + a.flush(), want_a)
    assert_same(got_b + b.flush(), want_b)


def test_streams_on_threads(detector):
    videos = [clip(6, seed=s) for s in (5, 6, 7)]
    want = [list(detector.detect_video(v)) for v in videos]
    got: list = [None] * len(videos)
    errors = []

    def work(k):
        try:
            stream = detector.stream()
            got[k] = [d for frame in videos[k] for d in stream.push(frame)] + stream.flush()
        except BaseException as err:  # reported below, not lost in the thread
            errors.append(err)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(videos))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for g, w in zip(got, want):
        assert_same(g, w)


class BlockingBackend(Backend):
    """Delegates to ``inner``; the first run waits until released."""

    def __init__(self, inner):
        super().__init__(inner.bundle)
        self.inner, self.name = inner, inner.name
        self.entered, self.release = threading.Event(), threading.Event()

    def _run(self, stage, inputs):
        self.entered.set()
        assert self.release.wait(30)
        return self.inner.run(stage, inputs)

    def from_numpy(self, array):
        return self.inner.from_numpy(array)

    def to_numpy(self, value):
        return self.inner.to_numpy(value)


def test_one_stream_used_by_two_threads_at_once_is_refused(bundle, detector):
    backend = BlockingBackend(detector.backend)
    blocking = VideoDetector(bundle, backend, key_interval=4, key_placement="first")
    stream = blocking.stream()
    frames = clip(2, seed=8)
    worker = threading.Thread(target=stream.push, args=(frames[0],))
    worker.start()
    try:
        assert backend.entered.wait(30)
        with pytest.raises(RuntimeError, match=r"another call on this stream is running.*detector\.stream\(\)"):
            stream.push(frames[1])
    finally:
        backend.release.set()
        worker.join()
    assert stream.frames_pushed == 1  # the refused frame left no trace
    assert [d.frame_index for d in stream.push(frames[1])] == [1]


def test_reset_and_flush_start_a_new_video(detector):
    first, second = clip(6, seed=9), clip(5, seed=10)
    want = list(detector.detect_video(second))

    for frame in first[:3]:  # abandoned half-way, frames still waiting for their key frame
        detector.push(frame)
    detector.reset()
    assert detector.default_stream.frames_pushed == 0
    got = [d for frame in second for d in detector.push(frame)] + detector.flush()
    assert_same(got, want)

    # After flush(), the next push is frame 0 of a new video: the state is cleared.
    again = [d for frame in second for d in detector.push(frame)] + detector.flush()
    assert_same(again, want)

    # A video of another size after flush() is fine; within a video it is not.
    other = clip(2, seed=11, height=96, width=128)
    ready = detector.push(other[0]) + detector.push(other[1]) + detector.flush()
    assert [d.image_hw for d in ready] == [(96, 128)] * 2


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((HEIGHT, WIDTH, 3), np.float32), r"frame 1: expected dtype uint8 .* got float32; convert"),
        (np.zeros((HEIGHT, WIDTH), np.uint8), r"frame 1: expected shape \(H, W, 3\) .* got \(120, 160\)"),
        (np.zeros((HEIGHT, WIDTH, 4), np.uint8), r"frame 1: expected shape \(H, W, 3\) .* got \(120, 160, 4\)"),
        (np.zeros((0, WIDTH, 3), np.uint8), r"frame 1: expected shape \(H, W, 3\) with H, W > 0"),
        ([[0, 0, 0]], r"frame 1: expected a numpy array .* got list"),
        (np.zeros((HEIGHT + 8, WIDTH, 3), np.uint8), r"frame 1 has shape \(128, 160, 3\), but this video's frames have \(120, 160, 3\)"),
    ],
)
def test_bad_frame_is_a_clear_value_error_and_leaves_the_stream_usable(detector, bad, message):
    frames = clip(5, seed=12)
    want = list(detector.detect_video(frames))
    stream = detector.stream()
    got = stream.push(frames[0])
    with pytest.raises(ValueError, match=message):
        stream.push(bad)
    assert stream.frames_pushed == 1
    got += [d for frame in frames[1:] for d in stream.push(frame)] + stream.flush()
    assert_same(got, want)


def test_detect_video_from_a_file_and_bad_arguments(bundle, detector, tmp_path):
    path = write_clip(clip(5, seed=13), tmp_path / "clip.mp4")
    from vidtrt.runtime.video import open_video

    with open_video(path) as source:
        decoded = [frame for _, frame in source]
    assert_same(list(detector.detect_video(path)), list(detector.detect_video(decoded)))
    with pytest.raises(TypeError, match="iterable of BGR uint8 arrays"):
        list(detector.detect_video(3.5))

    with pytest.raises(ValueError, match="torch backend runs the FP32 model only"):
        VideoDetector(bundle, "torch", "fp16")
    with pytest.raises(ValueError, match="not in backend_options"):
        VideoDetector(bundle, backend_options={"precision": "fp16"})
    with pytest.raises(ValueError, match="runs fp32, not fp16"):
        VideoDetector(bundle, detector.backend, "fp16")
    with pytest.raises(ValueError, match="not .*elsewhere"):
        VideoDetector(tmp_path / "elsewhere", detector.backend)
    with pytest.raises(ValueError, match="key_interval"):
        VideoDetector(bundle, detector.backend, key_interval=0)
    assert isinstance(detector.stream(), DetectionStream)
    assert detector.method == "psla" and detector.schedule == {"key_interval": 4, "key_placement": "middle"}


def test_torch_backend(bundle):
    frames = clip(5, seed=14)
    on_torch = list(VideoDetector(bundle, "torch", key_interval=4).detect_video(frames))
    on_ort = list(VideoDetector(bundle, key_interval=4).detect_video(frames))
    assert [(d.frame_index, d.stage, len(d)) for d in on_torch] == [(d.frame_index, d.stage, len(d)) for d in on_ort]
    for t, o in zip(on_torch, on_ort):
        np.testing.assert_allclose(t.scores, o.scores, atol=1e-4)


def test_importing_vidtrt_stays_light():
    code = (
        "import sys, vidtrt; heavy = {'numpy', 'torch', 'onnxruntime', 'cv2', 'vidtrt.api'} & set(sys.modules); "
        "print(sorted(heavy)); import vidtrt.api; "
        "print(vidtrt.VideoDetector is vidtrt.api.VideoDetector, 'VideoDetector' in dir(vidtrt))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:2] == ["[]", "True True"]
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        vidtrt.Nothing  # noqa: B018


# ---------------------------------------------------------------- the example


def test_example_script(bundle, tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "detect_frames.py"), str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "psla_small" / "manifest.json").exists()  # it exported its own bundle

    frame_line = re.compile(r"frame (\d+) \((\w+), out after (frame \d+|the end)\): (\d+) detections")
    item_line = re.compile(r"    (\S+)\s+([0-9.]+)  \[\s*([-0-9.]+)\s+([-0-9.]+)\s+([-0-9.]+)\s+([-0-9.]+)\]")
    printed = []
    for line in result.stdout.splitlines():
        if m := frame_line.fullmatch(line):
            printed.append({"index": int(m[1]), "stage": m[2], "when": m[3], "count": int(m[4]), "items": []})
        elif m := item_line.fullmatch(line):
            printed[-1]["items"].append((m[1], float(m[2]), [float(v) for v in m.groups()[2:6]]))

    # The same run through the API here (the export is deterministic: same files).
    detector = VideoDetector(bundle, key_interval=4, key_placement="middle")
    want = []
    for index, frame in enumerate(clip(10, seed=0)):
        want += [(d, f"frame {index}") for d in detector.push(frame)]
    want += [(d, "the end") for d in detector.flush()]
    assert [(p["index"], p["stage"], p["when"], p["count"]) for p in printed] == [
        (d.frame_index, d.stage, when, len(d)) for d, when in want
    ]
    assert [p["when"] for p in printed[:4]] == ["frame 2"] * 3 + ["frame 3"]  # the middle key frame's delay
    for p, (d, _) in zip(printed, want):
        best = np.argsort(-d.scores, kind="stable")[:3]
        assert [name for name, _, _ in p["items"]] == [d.names[k] for k in best]
        np.testing.assert_allclose([s for _, s, _ in p["items"]], d.scores[best], atol=5e-5)
        np.testing.assert_allclose([b for _, _, b in p["items"]], d.boxes[best], atol=5e-3)


# ---------------------------------------------------------------- run_video's outputs


def test_run_video_outputs_threshold_offset_and_coco(bundle, detector, tmp_path):
    path = write_clip(clip(9, seed=15), tmp_path / "clip.mp4")
    collected: list[Detections] = []
    summary = run_video(
        bundle, path, backend=detector.backend, out_dir=tmp_path / "out", outputs=("jsonl", "vid", "coco"),
        collect=collected, progress=False, pipeline_options={"key_interval": 4}, score_threshold=0.3,
        vid_frame_offset=500,
    )
    assert summary.frames == 9 and set(summary.outputs) == {"jsonl", "vid", "coco"}
    assert summary.outputs["coco"].name == "detections_coco.json"
    kept = [d.with_min_score(0.3) for d in collected]
    all_scores = np.concatenate([d.scores for d in collected])
    assert (all_scores < 0.3).any() and (all_scores >= 0.3).any(), "the threshold must split the clip's detections"
    assert len(collected) == 9 and sum(len(d) for d in collected) > sum(len(d) for d in kept)  # collect is unfiltered

    records = [json.loads(line) for line in summary.outputs["jsonl"].read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(9))
    for record, d in zip(records, kept):
        assert record["source"] == str(path) and (record["width"], record["height"]) == (WIDTH, HEIGHT)
        assert record["stage"] == summary.stage_of_frame[record["frame"]] == d.stage
        assert [item["score"] for item in record["detections"]] == pytest.approx(d.scores.tolist(), abs=1e-6)

    vid_rows = [line.split() for line in summary.outputs["vid"].read_text().splitlines()]
    assert [int(row[0]) for row in vid_rows] == [501 + d.frame_index for d in kept for _ in range(len(d))]
    assert all(float(row[2]) >= 0.3 for row in vid_rows)

    coco = json.loads(summary.outputs["coco"].read_text())
    assert [(e["image_id"], e["category_id"]) for e in coco] == [
        (d.frame_index, int(label) + 1) for d in kept for label in d.labels
    ]
    boxes = np.concatenate([d.boxes for d in kept])
    np.testing.assert_allclose([e["bbox"] for e in coco], np.c_[boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], atol=2e-3)

    # Camera indices and in-memory frames are named as such.
    run_video(bundle, clip(2), backend=detector.backend, out_dir=tmp_path / "mem", outputs=("jsonl",), progress=False)
    assert {json.loads(line)["source"] for line in (tmp_path / "mem" / "detections.jsonl").read_text().splitlines()} == {"frames"}

    for bad, error, message in [
        ({"score_threshold": float("nan")}, ValueError, "finite"),
        ({"vid_frame_offset": -1}, ValueError, "vid_frame_offset must be an integer >= 0"),
        ({"outputs": ("jsonl", "xml")}, ValueError, r"unknown outputs \['xml'\]"),
    ]:
        with pytest.raises(error, match=message):
            run_video(bundle, path, backend=detector.backend, out_dir=tmp_path / "refused", progress=False, **bad)
    assert not (tmp_path / "refused").exists()
