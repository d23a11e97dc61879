"""The parts of every pipeline that need no model: the segment schedule of
PSLA and Impression Network at any interval, the frame-size rule and the
method check. Expected values are written out by hand."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from vidtrt.core.bundle import DETECTION_OUTPUTS
from vidtrt.runtime.pipelines.base import FrameResult, Pipeline, checked_image_size
from vidtrt.runtime.pipelines.key_frames import KeyFramePipeline, KeyFrameStream


class _ScheduleOnly(KeyFrameStream):
    """The schedule with the stages replaced by labels."""

    def _key(self, index, image):
        return FrameResult(index, "key", {})

    def _nonkey(self, index, image):
        return FrameResult(index, "nonkey", {})


IMAGE = np.zeros((1, 3, 2, 2), np.float32)


def _stream(interval: int, placement: str) -> _ScheduleOnly:
    pipeline = object.__new__(KeyFramePipeline)  # no bundle: only what the schedule reads
    pipeline.key_interval, pipeline.key_placement = interval, placement
    pipeline.backend = SimpleNamespace(from_numpy=lambda array: array)
    return _ScheduleOnly(pipeline)


def _key_frames(interval: int, placement: str, length: int) -> list[int]:
    stream = _stream(interval, placement)
    results = [r for i in range(length) for r in stream.push(i, IMAGE)] + stream.flush()
    assert [r.index for r in results] == list(range(length))
    return [r.index for r in results if r.stage == "key"]


@pytest.mark.parametrize(
    "interval, placement, length, keys",
    [
        (4, "first", 10, [0, 4, 8]),
        (4, "middle", 10, [2, 6, 9]),  # the tail 8, 9 is 2 frames, not more than 4 // 2: its frame 2 // 2
        # Intervals past CPython's small-int cache (256): positions and
        # intervals are equal as numbers, not the same objects.
        (300, "first", 700, [0, 300, 600]),
        (600, "middle", 1300, [300, 900, 1250]),  # the tail 1200..1299 (100 frames): 1200 + 50
    ],
)
def test_segment_schedule_by_hand(interval, placement, length, keys):
    assert _key_frames(interval, placement, length) == keys


@pytest.mark.parametrize("placement, keys", [("first", [0, 5, 7, 12]), ("middle", [2, 6, 9, 13])])
def test_flush_ends_the_segment(placement, keys):
    """Frames pushed after flush() (without reset) begin a new segment. By hand,
    l = 5: "middle" keys frame 2 of 0..4, frame 1 of the tail 5, 6 (2 frames do
    not pass 5 // 2), frame 2 of 7..11 and frame 1 of the tail 12, 13."""
    stream = _stream(5, placement)
    results = [r for i in range(7) for r in stream.push(i, IMAGE)] + stream.flush()  # the tail 5, 6 ends here
    results += [r for i in range(7, 14) for r in stream.push(i, IMAGE)] + stream.flush()
    assert [r.index for r in results] == list(range(14))
    assert [r.index for r in results if r.stage == "key"] == keys


@pytest.mark.parametrize("shape", [(3, 8, 8), (1, 3, 8), (1, 3, 8, 8, 1), (1, 1, 3, 8, 8), (1, 4, 8, 8), (2, 3, 8, 8), (1, 1, 8, 8), (0, 3, 8, 8)])
def test_preprocessed_image_shape_is_checked(shape):
    with pytest.raises(ValueError, match=r"\[1, 3, H, W\]"):
        checked_image_size(np.zeros(shape, np.float32), None)


def test_frame_size_must_not_change_within_a_video():
    assert checked_image_size(np.zeros((1, 3, 6, 8), np.float32), None) == (6, 8)
    assert checked_image_size(np.zeros((1, 3, 6, 8), np.float32), (6, 8)) == (6, 8)
    for other in ((1, 3, 4, 8), (1, 3, 8, 8), (1, 3, 6, 6), (1, 3, 6, 10)):  # smaller and larger, each side
        with pytest.raises(ValueError, match="frame size changed"):
            checked_image_size(np.zeros(other, np.float32), (6, 8))


@pytest.mark.parametrize("bundle_method", ["impression", "troi"])  # sorting before and after "psla"
def test_pipeline_refuses_another_methods_bundle(bundle_method):
    from vidtrt.runtime.pipelines.psla import PslaPipeline

    backend = SimpleNamespace(bundle=SimpleNamespace(manifest=SimpleNamespace(method=bundle_method)))
    with pytest.raises(ValueError, match=f"needs a psla bundle, got method '{bundle_method}'"):
        PslaPipeline(backend)
    assert issubclass(PslaPipeline, Pipeline)


class _StubMfsaBackend:
    """Stands in for a backend. The frame stage gives each frame's parts, tagged
    with the frame's image value (index + 1; padding is 0); the batch stage
    records which frames it got and answers each slot's tag as its score."""

    def __init__(self):
        self.batches: list[list[int]] = []

    def from_numpy(self, array):
        return array

    def to_numpy(self, value):
        return np.asarray(value)

    def run(self, stage, inputs):
        if stage == "frame":
            tag = float(inputs["image"].flat[0])
            return {"proposals": np.zeros((2, 4), np.float32), "proposal_valid": np.zeros(2, bool), "regions": np.full((2, 3), tag, np.float32)}
        tags = inputs["regions"][:, 0, 0]
        self.batches.append([int(t) - 1 for t in tags if t > 0])
        out = {name: np.zeros((len(tags), 1), np.float32) for name in DETECTION_OUTPUTS}
        out["scores"] = tags[:, None].copy()
        return out


def _frame(index: int) -> np.ndarray:
    return np.full((1, 3, 2, 2), index + 1, np.float32)


def _mfsa_stream(k: int, mode: str):
    from vidtrt.runtime.pipelines.mfsa import MfsaPipeline, MfsaStream

    pipeline = object.__new__(MfsaPipeline)  # no bundle: only what the schedule reads
    pipeline.k, pipeline.mode, pipeline.backend = k, mode, _StubMfsaBackend()
    return MfsaStream(pipeline)


@pytest.mark.parametrize("k", [3, 4])
def test_mfsa_single_focus_keeps_at_most_one_window_of_frames(k):
    stream = _mfsa_stream(k, "single")
    results = []
    for i in range(20):
        results += stream.push(i, IMAGE)
        assert len(stream._frames) <= k, (i, sorted(stream._frames))
    results += stream.flush()
    assert [r.index for r in results] == list(range(20))


def test_mfsa_multi_focus_video_ending_on_a_full_batch_past_256_frames():
    """260 frames in batches of 4: the last batch runs in push, and flush has
    nothing left (frame counts are compared as numbers, not int objects)."""
    stream = _mfsa_stream(4, "multi")
    results = [r for i in range(260) for r in stream.push(i, IMAGE)]
    assert [r.index for r in results] == list(range(260))
    assert stream.flush() == []


@pytest.mark.parametrize("mode, length", [("single", 1), ("single", 300), ("multi", 5), ("multi", 1)])
def test_mfsa_short_tails_long_videos_and_mode_by_value(mode, length):
    """A batch of one real frame (the rest padding), a Single-Focus video past
    256 frames, and the mode as a string built at run time (as read from a
    manifest), not the literal."""
    stream = _mfsa_stream(4, "".join(list(mode)))  # a new string object equal to the literal
    results = [r for i in range(length) for r in stream.push(i, IMAGE)]
    if mode == "multi":  # whole batches come out of push
        assert [r.index for r in results] == list(range(length // 4 * 4))
    results += stream.flush()
    assert [r.index for r in results] == list(range(length))
    assert stream.flush() == []


@pytest.mark.parametrize(
    "mode, length, batches",
    [
        # Single-Focus, K = 5: the 5 frames centred on each target (2 before),
        # shifted to stay inside the 8-frame video.
        ("single", 8, [[0, 1, 2, 3, 4]] * 3 + [[1, 2, 3, 4, 5], [2, 3, 4, 5, 6]] + [[3, 4, 5, 6, 7]] * 3),
        # Multi-Focus, K = 5: consecutive groups, the last one padded.
        ("multi", 12, [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11]]),
    ],
)
def test_mfsa_batches_by_hand(mode, length, batches):
    stream = _mfsa_stream(5, mode)
    results = [r for i in range(length) for r in stream.push(i, _frame(i))] + stream.flush()
    assert stream.pipeline.backend.batches == batches
    assert [r.index for r in results] == list(range(length))
    assert [float(r.detections["scores"][0]) for r in results] == [i + 1.0 for i in range(length)]  # each frame's own slot


@pytest.mark.parametrize("mode", ["single", "multi"])
def test_mfsa_frames_in_order_and_at_most_k_kept(mode):
    stream = _mfsa_stream(4, mode)
    for i in range(12):
        stream.push(i, IMAGE)
        assert len(stream._frames) <= 4, (i, sorted(stream._frames))
    for index in (11, 13):  # again, and one skipped
        with pytest.raises(ValueError, match=r"in order 0, 1, 2, \.\.\.: expected 12, got"):
            stream.push(index, IMAGE)
