"""The PSLA method end to end: bundle export, the key/non-key pipeline on the
torch and onnxruntime backends against the whole-video reference, streams,
resets, and bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from vidtrt.core.bundle import BundleError, load_bundle
from vidtrt.export.exporter import export_bundle
from vidtrt.methods import psla as method
from vidtrt.methods.common import sample_image
from vidtrt.models.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from vidtrt.runtime.backends import create_backend
from vidtrt.core.compare import compare_detections
from vidtrt.runtime.pipelines import create_pipeline
from vidtrt.runtime.runner import run_video
from vidtrt.runtime.synthetic import moving_shapes_clip, write_clip
from vidtrt.runtime.video import VideoError

DETECTIONS = ("boxes", "scores", "labels", "valid")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return export_bundle("psla", tmp_path_factory.mktemp("bundle") / "psla_small", config_name="psla_small", log=lambda _: None)


@pytest.fixture(scope="module")
def detector(bundle):
    return method.METHOD.load_detector(checkpoint=bundle.path(bundle.manifest.checkpoint))[1]


@pytest.fixture(scope="module")
def backends(bundle):
    return {name: create_backend(name, bundle) for name in ("torch", "onnxruntime")}


def video(detector, length, seed=0):
    return [sample_image(detector.cfg, seed=seed * 1000 + i) for i in range(length)]


def run_stream(stream, images, start=0):
    results = []
    for i, image in enumerate(images):
        results += stream.push(start + i, image.numpy())
    return results + stream.flush()


def assert_matches_reference(results, reference, backend_name, detector):
    assert [r.index for r in results] == list(range(len(reference)))
    cfg = detector.cfg.detection
    for r in results:
        want = [t.numpy() for t in reference[r.index]]
        got = [r.detections[k] for k in DETECTIONS]
        if backend_name == "torch":
            # The same modules on the same inputs: identical, not merely close.
            for w, g in zip(want, got):
                np.testing.assert_array_equal(w, g)
        else:
            cmp = compare_detections(want, got, capacity=cfg.max_detections, nms_iou=cfg.nms_iou)
            assert cmp.ok, (r.index, cmp)
            assert cmp.max_box_error < 0.05 and cmp.max_score_error < 1e-4, (r.index, cmp)


@pytest.mark.parametrize("backend_name", ["torch", "onnxruntime"])
@pytest.mark.parametrize("placement", ["first", "middle"])
@pytest.mark.parametrize("length", [13, 3])  # 13: two full segments of 5 and a partial one; 3: shorter than a segment
def test_pipeline_equals_whole_video_reference(backends, detector, backend_name, placement, length):
    images = video(detector, length)
    reference = method.detect_video_reference(detector, images, 5, placement)
    stream = create_pipeline(backends[backend_name], key_interval=5, key_placement=placement).stream()
    results = run_stream(stream, images)
    assert_matches_reference(results, reference, backend_name, detector)
    keys = [r.index for r in results if r.stage == "key"]
    # By hand, l = 5: first → 0, 5, 10; middle → frame 2 of each segment, and of the
    # 3-frame tail (10, 11, 12) also its frame 2 (it reaches 5 // 2): 12.
    assert keys == {(13, "first"): [0, 5, 10], (13, "middle"): [2, 7, 12], (3, "first"): [0], (3, "middle"): [2]}[length, placement]


def test_reset_between_videos_and_independent_streams(backends, detector):
    first, second = video(detector, 7, seed=1), video(detector, 6, seed=2)
    pipeline = create_pipeline(backends["torch"], key_interval=4, key_placement="middle")
    stream = pipeline.stream()
    run_stream(stream, first)
    stream.reset()
    after_reset = run_stream(stream, second)
    assert_matches_reference(after_reset, method.detect_video_reference(detector, second, 4, "middle"), "torch", detector)

    # Two streams interleaved frame by frame over one backend: each equals its own video.
    a, b = pipeline.stream(), pipeline.stream()
    results_a, results_b = [], []
    for i in range(max(len(first), len(second))):
        if i < len(first):
            results_a += a.push(i, first[i].numpy())
        if i < len(second):
            results_b += b.push(i, second[i].numpy())
    results_a += a.flush()
    results_b += b.flush()
    assert_matches_reference(results_a, method.detect_video_reference(detector, first, 4, "middle"), "torch", detector)
    assert_matches_reference(results_b, method.detect_video_reference(detector, second, 4, "middle"), "torch", detector)


def test_middle_placement_latency(backends, detector):
    """Frames before a segment's key frame wait for it, then come out in order."""
    stream = create_pipeline(backends["torch"], key_interval=6, key_placement="middle").stream()
    images = video(detector, 8)
    ready = [[r.index for r in stream.push(i, im.numpy())] for i, im in enumerate(images)]
    assert ready[:3] == [[], [], []]
    assert ready[3] == [0, 1, 2, 3]  # frame 3 = 6 // 2 is the key frame
    assert ready[4:6] == [[4], [5]]
    assert ready[6:] == [[], []]  # the next segment waits for its key frame (or the end)
    assert [r.index for r in stream.flush()] == [6, 7]


def test_stream_rejects_out_of_order_and_size_changes(backends, detector):
    stream = create_pipeline(backends["torch"], key_interval=3, key_placement="first").stream()
    stream.push(0, video(detector, 1)[0].numpy())
    with pytest.raises(ValueError, match="increasing order"):
        stream.push(0, video(detector, 1)[0].numpy())
    other = sample_image(detector.cfg, height=96, width=96)
    with pytest.raises(ValueError, match="frame size changed"):
        stream.push(1, other.numpy())


def test_manifest_describes_stages_and_state(bundle):
    m = bundle.manifest
    assert m.method == "psla" and m.config_name == "psla_small"
    assert set(m.stages) == {"key", "nonkey", "perframe"}
    key = m.stages["key"]
    assert [t.name for t in key.inputs] == ["image", "temporal_in", "temporal_key_in", "has_state"]
    assert key.input("image").shape[2:] == ["H", "W"] and key.input("temporal_in").shape[2:] == ["h", "w"]
    wiring = {s.source: s.targets for s in m.state}
    assert wiring["key.temporal_out"] == ["key.temporal_in", "nonkey.temporal_in"]
    assert wiring["key.temporal_key_out"] == ["key.temporal_key_in", "nonkey.temporal_key_in"]
    assert m.schedule == {"key_interval": 10, "key_placement": "middle"}
    assert len(m.class_names) == 30 and m.preprocess["short_side"] == 160
    assert set(m.files) == {"key.onnx", "nonkey.onnx", "perframe.onnx", "model.ckpt"}
    assert all(r["ok"] for reports in m.verification.values() for r in reports)
    assert m.versions["plugins"]["PSLA"] == "1"


def test_run_video_writes_outputs(bundle, tmp_path):
    clip = write_clip(moving_shapes_clip(num_frames=12, height=120, width=160), tmp_path / "clip.mp4")
    collected = []
    summary = run_video(bundle, clip, out_dir=tmp_path / "out", collect=collected, progress=False)
    assert summary.frames == 12 and len(collected) == 12
    assert sum(len(v) for v in summary.stage_ms.values()) == 12
    lines = (tmp_path / "out" / "detections.jsonl").read_text().splitlines()
    assert [json.loads(line)["frame"] for line in lines] == list(range(12))
    for det in collected:  # original image coordinates
        assert (det.boxes[:, 2] <= 160).all() and (det.boxes[:, 3] <= 120).all()
    assert (tmp_path / "out" / "annotated.mp4").stat().st_size > 0
    assert (tmp_path / "out" / "imagenet_vid.txt").exists()


# ---------------------------------------------------------------- bad input


def test_missing_and_corrupt_video_leave_no_outputs(bundle, tmp_path):
    with pytest.raises(VideoError, match="does-not-exist.mp4"):
        run_video(bundle, tmp_path / "does-not-exist.mp4", out_dir=tmp_path / "a", progress=False)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(VideoError, match="corrupt.mp4"):
        run_video(bundle, corrupt, out_dir=tmp_path / "b", progress=False)
    for d in ("a", "b"):
        assert not (tmp_path / d).exists() or not any((tmp_path / d).iterdir())


def test_tampered_bundle_is_rejected(bundle, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(bundle.directory, copy)
    data = bytearray((copy / "nonkey.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "nonkey.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"nonkey\.onnx was modified after export"):
        load_bundle(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match="no manifest.json"):
        load_bundle(copy)


def test_checkpoint_errors(bundle, tmp_path):
    data = read_checkpoint(bundle.path("model.ckpt"))
    other = dict(data, method="troi")
    torch.save(other, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="is a 'troi' checkpoint"):
        method.METHOD.load_detector(checkpoint=tmp_path / "other.ckpt")

    state = dict(data["state_dict"])
    state["rpn.cls.weight"] = torch.zeros(3, 3, 1, 1)
    del state["embed_f.bias"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(dict(data, state_dict=state), tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError) as err:
        method.METHOD.load_detector(checkpoint=tmp_path / "bad.ckpt")
    message = str(err.value)
    assert "missing: embed_f.bias" in message and "unexpected: extra.weight" in message
    assert "rpn.cls.weight (expected [9, 32, 1, 1], got [3, 3, 1, 1])" in message

    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch file"):
        method.METHOD.load_detector(checkpoint=tmp_path / "junk.ckpt")


def test_checkpoint_round_trip_and_export_from_checkpoint(detector, tmp_path):
    save_checkpoint(tmp_path / "psla.ckpt", "psla", detector.cfg, detector)
    cfg, loaded = method.METHOD.load_detector(checkpoint=tmp_path / "psla.ckpt")
    assert cfg == detector.cfg
    for (k, a), (_, b) in zip(detector.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(CheckpointError, match="holds config 'psla_small'"):
        method.METHOD.load_detector("psla_r101_rfcn", checkpoint=tmp_path / "psla.ckpt")


def test_export_refuses_a_non_bundle_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="neither empty nor a bundle"):
        export_bundle("psla", tmp_path, config_name="psla_small", log=lambda _: None)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_key_stage_gets_has_state_exactly_as_documented(backends, detector):
    """``has_state`` is 0.0 on a video's first key frame and 1.0 on every later
    one (PslaKey's interface). The graph thresholds it at 0.5, so 2.0 or -1.0
    would run the same today; another implementation of the stage, or a server
    forwarding the flag, relies on the documented values."""
    from vidtrt.calibration.capture import RecordingBackend

    recording = RecordingBackend(backends["torch"])
    stream = create_pipeline(recording, key_interval=2, key_placement="first").stream()
    run_stream(stream, video(detector, 5))  # key frames 0, 2, 4
    stream.reset()
    run_stream(stream, video(detector, 3, seed=1))  # a new video: key frames 0, 2
    flags = [r["has_state"].tolist() for r in recording.records["key"]]
    assert flags == [[0.0], [1.0], [1.0], [0.0], [1.0]]


def test_frames_must_arrive_in_increasing_order(backends, detector):
    stream = create_pipeline(backends["torch"], key_interval=3, key_placement="first").stream()
    images = video(detector, 2)
    stream.push(4, images[0].numpy())
    for index in (4, 3, 0):  # the same index again, and earlier ones
        with pytest.raises(ValueError, match="increasing order"):
            stream.push(index, images[1].numpy())
    assert [r.index for r in stream.push(6, images[1].numpy())] == [6]  # gaps are allowed


def test_frames_after_flush_begin_a_new_segment(backends, detector):
    """flush() ends the segment too: with "first" placement the next frame is a key frame."""
    stream = create_pipeline(backends["torch"], key_interval=5, key_placement="first").stream()
    images = video(detector, 9)
    results = [r for i in range(7) for r in stream.push(i, images[i].numpy())]  # key frames 0 and 5
    results += stream.flush()
    results += stream.push(7, images[7].numpy()) + stream.push(8, images[8].numpy())
    assert [r.index for r in results] == list(range(9))
    assert [r.stage for r in results] == ["key"] + ["nonkey"] * 4 + ["key", "nonkey"] + ["key", "nonkey"]
