"""Video input (vidtrt.runtime.video) and the synthetic clip it is tested with."""

from __future__ import annotations

import threading
import weakref

import cv2
import numpy as np
import pytest

from vidtrt.runtime import video
from vidtrt.runtime.synthetic import SHAPE_CLASSES, moving_shapes_clip, moving_shapes_ground_truth, write_clip
from vidtrt.runtime.video import DEFAULT_FPS, VideoError, open_video

NUM_FRAMES, HEIGHT, WIDTH = 24, 96, 128


def decode_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("vidtrt-decode") and t.is_alive()]


@pytest.fixture(autouse=True)
def no_thread_left_behind():
    yield
    assert decode_threads() == [], "a decode thread outlived its test"


@pytest.fixture(scope="module")
def clip():
    return moving_shapes_clip(NUM_FRAMES, HEIGHT, WIDTH, seed=3)


@pytest.fixture(scope="module")
def clip_path(clip, tmp_path_factory):
    return write_clip(clip, tmp_path_factory.mktemp("video") / "clip.mp4", fps=30)


def smooth(frame: np.ndarray) -> np.ndarray:
    # Compare structure, not the per-pixel grain the codec is free to smear.
    return cv2.GaussianBlur(frame, (5, 5), 0).astype(np.float32)


# --- synthetic clip -----------------------------------------------------------------


def test_synthetic_clip_is_deterministic_and_moves(clip):
    again = moving_shapes_clip(NUM_FRAMES, HEIGHT, WIDTH, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(clip, again))
    other_seed = moving_shapes_clip(NUM_FRAMES, HEIGHT, WIDTH, seed=4)
    assert not np.array_equal(clip[0], other_seed[0])
    assert len(clip) == NUM_FRAMES
    assert all(f.shape == (HEIGHT, WIDTH, 3) and f.dtype == np.uint8 for f in clip)
    assert not np.array_equal(clip[0], clip[-1])


def test_synthetic_ground_truth_stays_inside_and_bounces():
    truth = moving_shapes_ground_truth(120, 64, 80, seed=1)
    boxes = np.stack([b for b, _ in truth])  # [T, K, 4]
    assert boxes[..., 0].min() >= 0 and boxes[..., 1].min() >= 0
    assert boxes[..., 2].max() <= 80 and boxes[..., 3].max() <= 64
    dx = np.diff(boxes[:, :, 0], axis=0)
    assert ((dx[1:] * dx[:-1]) < 0).any(), "no shape ever reversed direction over 120 frames"
    labels = np.concatenate([lab for _, lab in truth])
    assert set(labels.tolist()) == set(range(len(SHAPE_CLASSES)))


def test_write_clip_rejects_odd_sizes_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="even"):
        write_clip(moving_shapes_clip(2, 33, 48), tmp_path / "odd.mp4")
    with pytest.raises(ValueError, match="frame 1"):
        write_clip([np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32), np.uint8)], tmp_path / "bad.mp4")
    assert list(tmp_path.iterdir()) == []


# --- files ---------------------------------------------------------------------------


def test_round_trip_through_mp4(clip, clip_path):
    with open_video(clip_path) as source:
        info = source.info
        decoded = list(source)
    assert (info.width, info.height, info.frame_count) == (WIDTH, HEIGHT, NUM_FRAMES)
    assert info.fps == pytest.approx(30.0)
    assert [i for i, _ in decoded] == list(range(NUM_FRAMES))
    for index, frame in decoded:
        assert frame.shape == (HEIGHT, WIDTH, 3) and frame.dtype == np.uint8
        errors = [np.abs(smooth(frame) - smooth(original)).mean() for original in clip]
        assert errors[index] < 4.0, f"frame {index} differs from its original by {errors[index]:.1f}"
        # Decoded in order: each frame is closest to its own original.
        assert int(np.argmin(errors)) == index


def test_reading_again_gives_identical_frames(clip_path):
    first = [f for _, f in open_video(clip_path)]
    second = [f for _, f in open_video(clip_path, queue_size=1)]
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "no_such_video.mp4"
    with pytest.raises(VideoError, match="not found") as caught:
        open_video(missing)
    assert str(missing) in str(caught.value)


def test_directory_without_images_is_refused(tmp_path):
    # A folder is read as an image sequence (tests/test_video_inputs.py); one with no images says so.
    (tmp_path / "notes.txt").write_text("no frames here")
    with pytest.raises(VideoError, match="holds no images"):
        open_video(tmp_path)


def test_corrupt_file_names_the_path(tmp_path):
    corrupt = tmp_path / "random_bytes.mp4"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(VideoError, match="unreadable or corrupt") as caught:
        open_video(corrupt)
    assert str(corrupt) in str(caught.value)


def test_decoding_that_stops_mid_way_raises(clip_path, tmp_path):
    # mp4v files from OpenCV keep the index (moov) after the data (mdat): zeroing
    # the second half of the data keeps the file openable, with a frame count
    # the decoder can no longer reach.
    data = bytearray(clip_path.read_bytes())
    start, end = data.find(b"mdat"), data.find(b"moov")
    assert 0 < start < end, "unexpected mp4 layout"
    middle = (start + end) // 2
    data[middle : end - 8] = bytes(end - 8 - middle)
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))

    seen = []
    with pytest.raises(VideoError, match="corrupt or truncated") as caught:
        with open_video(damaged) as source:
            assert source.info.frame_count == NUM_FRAMES
            for index, _ in source:
                seen.append(index)
    assert str(damaged) in str(caught.value)
    assert 0 < len(seen) < NUM_FRAMES
    assert seen == list(range(len(seen)))
    assert f"frame {len(seen)}" in str(caught.value)


def test_camera_that_does_not_exist():
    with pytest.raises(VideoError, match="camera 97"):
        open_video(97)


# --- stopping the decode thread ---------------------------------------------------


def test_close_stops_thread_and_ends_iteration(clip_path):
    source = open_video(clip_path, queue_size=2)
    assert source.thread.ident is not None, "the decode thread starts when the source opens"
    assert next(source)[0] == 0
    source.close()
    assert not source.thread.is_alive()
    assert source.closed
    with pytest.raises(StopIteration):
        next(source)
    source.close()  # idempotent


def test_break_inside_with_stops_thread(clip_path):
    with open_video(clip_path, queue_size=2) as source:
        for index, _ in source:
            if index == 2:
                break
    assert not source.thread.is_alive()


def test_break_from_bare_loop_stops_thread(clip_path):
    source = open_video(clip_path, queue_size=2)
    thread, alive_ref = source.thread, weakref.ref(source)
    for index, _ in source:
        if index == 2:
            break
    del source
    assert alive_ref() is None, "something still references the source"
    assert not thread.is_alive()

    for index, _ in open_video(clip_path, queue_size=2):
        if index == 1:
            break
    assert decode_threads() == []


def test_exception_in_consumer_leaves_no_thread(clip_path):
    with pytest.raises(KeyError):
        with open_video(clip_path, queue_size=2) as source:
            for index, _ in source:
                if index == 3:
                    raise KeyError("consumer failed")
    assert not source.thread.is_alive()

    def consume_without_with():
        for index, _ in open_video(clip_path, queue_size=2):
            if index == 3:
                raise KeyError("consumer failed")

    with pytest.raises(KeyError):
        consume_without_with()
    assert decode_threads() == []


# --- errors raised inside the decode thread (fake captures) -----------------------


class FakeCapture:
    """Stands in for cv2.VideoCapture: frames from a list, then a failed read or an exception."""

    def __init__(self, frames, *, frame_count=0.0, fps=0.0, fail_with=None):
        self.frames, self.frame_count, self.fps, self.fail_with = list(frames), frame_count, fps, fail_with
        self.position, self.released = 0, False

    def isOpened(self):
        return True

    def read(self):
        if self.position == len(self.frames):
            if self.fail_with is not None:
                raise self.fail_with
            return False, None
        self.position += 1
        return True, self.frames[self.position - 1].copy()

    def get(self, prop):
        return {cv2.CAP_PROP_FRAME_COUNT: self.frame_count, cv2.CAP_PROP_FPS: self.fps}.get(prop, 0.0)

    def release(self):
        self.released = True


@pytest.fixture
def fake_capture(monkeypatch, tmp_path):
    made = []

    def install(**kwargs):
        def factory(target):
            made.append(FakeCapture(**kwargs))
            return made[-1]

        monkeypatch.setattr(video.cv2, "VideoCapture", factory)
        placeholder = tmp_path / "fake.mp4"
        placeholder.write_bytes(b"")
        return placeholder, made

    return install


def test_exception_in_decode_thread_reaches_consumer(fake_capture, clip):
    path, made = fake_capture(frames=clip[:4], frame_count=float(NUM_FRAMES), fail_with=MemoryError("decoder blew up"))
    seen = []
    with pytest.raises(VideoError, match="decoder blew up") as caught:
        for index, _ in open_video(path):
            seen.append(index)
    assert seen == [0, 1, 2, 3]
    assert isinstance(caught.value.__cause__, MemoryError)
    assert made[0].released


def test_unknown_frame_count_ends_cleanly_and_fps_defaults(fake_capture, clip):
    path, made = fake_capture(frames=clip[:5], frame_count=0.0, fps=0.0)
    with open_video(path) as source:
        assert source.info.frame_count is None
        assert source.info.fps == DEFAULT_FPS
        assert [i for i, _ in source] == [0, 1, 2, 3, 4]
    assert made[0].released
    path, _ = fake_capture(frames=clip[:2], fps=float("nan"))
    with open_video(path, fps=12.5) as source:
        assert source.info.fps == 12.5


def test_file_whose_first_frame_does_not_decode(fake_capture):
    path, made = fake_capture(frames=[], frame_count=10.0)
    with pytest.raises(VideoError, match="first frame cannot be decoded.*unreadable or corrupt") as caught:
        open_video(path)
    assert str(path) in str(caught.value)
    assert made[0].released


def test_camera_that_stops_delivering_raises(fake_capture, clip):
    fake_capture(frames=clip[:3])
    with pytest.raises(VideoError, match="camera 0: .*stopped delivering frames after frame 2"):
        for _ in open_video(0):
            pass


def test_decoder_frame_size_change_raises(fake_capture, clip):
    path, _ = fake_capture(frames=[clip[0], clip[1], clip[2][:, :64]], frame_count=3.0)
    with pytest.raises(VideoError, match="frame 2 has shape"):
        list(open_video(path))


# --- in-memory sources -------------------------------------------------------------


def test_list_source_yields_the_frames_themselves(clip):
    with open_video(clip[:6], fps=10) as source:
        assert source.info == video.VideoInfo(fps=10.0, width=WIDTH, height=HEIGHT, frame_count=6)
        got = list(source)
    assert [i for i, _ in got] == list(range(6))
    assert all(np.array_equal(frame, clip[i]) for i, frame in got)


def test_generator_and_array_sources(clip):
    closed = []

    def generate():
        try:
            yield from clip[:5]
        finally:
            closed.append(True)

    with open_video(generate()) as source:
        assert source.info.frame_count is None and source.info.fps == DEFAULT_FPS
        assert next(source)[0] == 0
    assert closed == [True], "closing the source should close the generator"

    stacked = np.stack(clip[:3])
    assert [i for i, _ in open_video(stacked)] == [0, 1, 2]
    with pytest.raises(VideoError, match=r"\[N, H, W, 3\]"):
        open_video(clip[0])


@pytest.mark.parametrize(
    "bad, problem",
    [
        ("not a frame", "is a str"),
        (np.zeros((HEIGHT, WIDTH, 3), np.float32), "dtype float32"),
        (np.zeros((HEIGHT, WIDTH), np.uint8), r"shape \(96, 128\)"),
        (np.zeros((HEIGHT, WIDTH, 4), np.uint8), r"shape \(96, 128, 4\)"),
        (np.zeros((HEIGHT, WIDTH // 2, 3), np.uint8), "frame 0 had"),
    ],
)
def test_bad_frames_from_an_iterable_name_the_frame(clip, bad, problem):
    frames = [clip[0], clip[1], bad, clip[3]]
    seen = []
    with pytest.raises(VideoError, match=f"frame 2 .*{problem}|frame 2 {problem}"):
        for index, _ in open_video(iter(frames)):
            seen.append(index)
    assert seen == [0, 1]


def test_bad_first_frame_and_empty_iterable(clip):
    with pytest.raises(VideoError, match="frame 0 has dtype int64"):
        open_video([np.zeros((4, 4, 3), np.int64)])
    with pytest.raises(VideoError, match="no frames"):
        open_video([])


def test_argument_errors(clip):
    with pytest.raises(ValueError, match="queue_size"):
        open_video(clip, queue_size=0)
    with pytest.raises(TypeError):
        open_video(None)
    with pytest.raises(TypeError):
        open_video(True)
    with pytest.raises(TypeError):
        open_video(b"bytes")
