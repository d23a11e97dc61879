"""Frame preprocessing (vidtrt.core.preprocess): sizes, values, the inverse box map."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vidtrt.core.preprocess import IMAGENET_MEAN_BGR, IMAGENET_STD_BGR, Preprocessor, to_original


def random_frame(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "original, resized, padded",
    [
        ((480, 640), (600, 800), (608, 800)),  # 4:3 landscape: short side binds
        ((640, 480), (800, 600), (800, 608)),  # portrait
        ((300, 300), (600, 600), (608, 608)),  # square, upscaled
        ((720, 1280), (563, 1000), (576, 1008)),  # 16:9: long side binds (600 would make it 1067)
        ((200, 2000), (100, 1000), (112, 1008)),  # very wide: long side binds hard
        ((2000, 300), (1000, 150), (1008, 160)),  # very tall
        ((600, 1000), (600, 1000), (608, 1008)),  # already the target size: no resampling
    ],
)
def test_sizes(original, resized, padded):
    prepared = Preprocessor()(random_frame(*original))
    assert prepared.original_hw == original
    assert prepared.resized_hw == resized
    assert prepared.padded_hw == padded
    assert prepared.tensor.shape == (1, 3, *padded) and prepared.tensor.dtype == np.float32
    assert prepared.tensor.flags.c_contiguous


@settings(max_examples=200, deadline=None)
@given(
    height=st.integers(1, 4000),
    width=st.integers(1, 4000),
    short_side=st.integers(1, 1200),
    extra=st.one_of(st.none(), st.integers(0, 1200)),
    multiple=st.sampled_from([1, 8, 16, 32]),
)
def test_size_rule_holds_for_any_frame(height, width, short_side, extra, multiple):
    max_long = None if extra is None else short_side + extra
    pre = Preprocessor(short_side=short_side, max_long_side=max_long, pad_to_multiple=multiple)
    scale, (rh, rw), (ph, pw) = pre.plan(height, width)
    assert (rh, rw) == (max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5)))
    short, long_ = sorted((rh, rw))
    if max_long is None or max(height, width) * short_side / min(height, width) <= max_long:
        assert short == short_side
    else:
        assert long_ == max_long and short <= short_side
    if max_long is not None:
        assert long_ <= max_long
    # One scale for both axes, so the aspect ratio is kept up to the rounding of
    # each side (except where a side would round to zero and is kept at 1 px).
    if min(height, width) * scale >= 0.5:
        assert abs(rh - height * scale) <= 0.5 and abs(rw - width * scale) <= 0.5
    assert ph % multiple == 0 and pw % multiple == 0
    assert 0 <= ph - rh < multiple and 0 <= pw - rw < multiple


def test_resize_is_cv2_bilinear_and_padding_is_zero():
    frame = random_frame(240, 320, seed=1)
    pre = Preprocessor(short_side=300, max_long_side=None, mean=(0, 0, 0), std=(1, 1, 1), pad_to_multiple=32)
    prepared = pre(frame)
    rh, rw = prepared.resized_hw
    assert (rh, rw) == (300, 400) and prepared.padded_hw == (320, 416)
    expected = cv2.resize(frame, (rw, rh), interpolation=cv2.INTER_LINEAR).astype(np.float32).transpose(2, 0, 1)
    assert np.array_equal(prepared.tensor[0, :, :rh, :rw], expected)
    assert not prepared.tensor[0, :, rh:, :].any() and not prepared.tensor[0, :, :, rw:].any()
    unpadded = Preprocessor(short_side=300, max_long_side=None, pad_to_multiple=1)(frame)
    assert unpadded.padded_hw == unpadded.resized_hw == (300, 400)


def test_normalisation_values():
    frame = np.empty((50, 60, 3), np.uint8)
    frame[:] = (10, 100, 200)  # B, G, R
    bgr = Preprocessor(short_side=50, pad_to_multiple=1)(frame).tensor[0]
    pixel = np.array([10, 100, 200], np.float32)
    expected = (pixel - np.array(IMAGENET_MEAN_BGR, np.float32)) / np.array(IMAGENET_STD_BGR, np.float32)
    assert np.array_equal(bgr[:, 0, 0], expected)
    assert np.array_equal(bgr, np.broadcast_to(expected[:, None, None], bgr.shape))

    # mean/std are in the network's channel order: with to_rgb, channel 0 is red.
    rgb_pre = Preprocessor(short_side=50, pad_to_multiple=1, mean=(1, 2, 3), std=(2, 4, 8), to_rgb=True)
    rgb = rgb_pre(frame).tensor[0]
    assert rgb[:, 0, 0].tolist() == [(200 - 1) / 2, (100 - 2) / 4, (10 - 3) / 8]


def test_default_equals_mmdetection_rgb_config_up_to_channel_order():
    frame = random_frame(90, 120, seed=2)
    ours = Preprocessor()(frame).tensor
    mmdet = Preprocessor(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375), to_rgb=True)(frame).tensor
    assert np.array_equal(ours[:, ::-1], mmdet)


def test_deterministic_and_layout_independent():
    frame = random_frame(333, 517, seed=3)
    pre = Preprocessor()
    first = pre(frame)
    assert np.array_equal(first.tensor, pre(frame).tensor)
    assert np.array_equal(first.tensor, Preprocessor.from_dict(pre.as_dict())(frame).tensor)
    # A non-contiguous view of the same pixels gives the same tensor.
    wide = np.zeros((333, 517 * 2, 3), np.uint8)
    wide[:, ::2] = frame
    assert np.array_equal(first.tensor, pre(wide[:, ::2]).tensor)
    assert np.array_equal(frame, random_frame(333, 517, seed=3)), "the input frame was modified"


@pytest.mark.parametrize("original", [(480, 640), (640, 480), (720, 1280), (200, 2000), (333, 517), (7, 5)])
def test_to_original_inverts_the_resize(original):
    height, width = original
    prepared = Preprocessor()(random_frame(height, width))
    rng = np.random.default_rng(4)
    x = np.sort(rng.uniform(0, width, (50, 2)), axis=1)
    y = np.sort(rng.uniform(0, height, (50, 2)), axis=1)
    boxes = np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1).astype(np.float32)
    # Forward with the nominal scale, as a network predicting in input pixels would.
    back = to_original(boxes * np.float32(prepared.scale), prepared)
    assert back.dtype == np.float32 and back.shape == boxes.shape
    assert np.abs(back - boxes).max() <= 1.0
    # With the exact per-axis factors the round trip is exact to float precision.
    factors = np.array([prepared.resized_hw[1] / width, prepared.resized_hw[0] / height] * 2, np.float32)
    assert np.allclose(to_original(boxes * factors, prepared), boxes, atol=1e-3)


def test_to_original_finds_a_drawn_rectangle():
    frame = np.zeros((480, 640, 3), np.uint8)
    x1, y1, x2, y2 = 101, 57, 389, 300  # covers pixels x1..x2-1, y1..y2-1
    frame[y1:y2, x1:x2] = 255
    pre = Preprocessor(mean=(0, 0, 0), std=(1, 1, 1))
    prepared = pre(frame)
    bright = prepared.tensor[0, 0] > 127.5
    rows, cols = np.nonzero(bright)
    found = np.array([[cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]], np.float32)
    assert np.abs(pre.to_original(found, prepared) - [[x1, y1, x2, y2]]).max() <= 1.0


def test_to_original_clips_to_the_image():
    prepared = Preprocessor()(random_frame(480, 640))  # resized 600x800, padded 608x800
    boxes = np.array([[-20, -5, 900, 607], [10, 10, 20, 20]], np.float32)
    back = to_original(boxes, prepared)
    assert back[0].tolist() == [0, 0, 640, 480]
    assert np.allclose(back[1], [8, 8, 16, 16])
    assert to_original(np.zeros((0, 4)), prepared).shape == (0, 4)
    with pytest.raises(ValueError, match=r"\[K, 4\]"):
        to_original(np.zeros(4), prepared)


def test_config_round_trip():
    pre = Preprocessor(short_side=512, max_long_side=None, mean=[1, 2, 3], std=np.array([4.0, 5, 6]), to_rgb=True)
    stored = json.loads(json.dumps(pre.as_dict()))
    assert Preprocessor.from_dict(stored) == pre
    assert stored == {
        "short_side": 512,
        "max_long_side": None,
        "mean": [1.0, 2.0, 3.0],
        "std": [4.0, 5.0, 6.0],
        "to_rgb": True,
        "pad_to_multiple": 16,
    }
    with pytest.raises(ValueError, match="missing std"):
        Preprocessor.from_dict({k: v for k, v in stored.items() if k != "std"})
    with pytest.raises(ValueError, match="unknown interpolation"):
        Preprocessor.from_dict({**stored, "interpolation": "cubic"})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"short_side": 0}, "short_side"),
        ({"max_long_side": -1}, "max_long_side"),
        ({"std": (1, 0, 1)}, "std must be positive"),
        ({"mean": (1, 2)}, "mean must be three"),
        ({"pad_to_multiple": 0}, "pad_to_multiple"),
        ({"to_rgb": "yes"}, "to_rgb"),
    ],
)
def test_invalid_configs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Preprocessor(**kwargs)


@pytest.mark.parametrize(
    "frame, message",
    [
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        (np.zeros((10, 10), np.uint8), r"\(H, W, 3\)"),
        (np.zeros((0, 10, 3), np.uint8), r"\(H, W, 3\)"),
        ([[0, 0, 0]], "uint8"),
    ],
)
def test_bad_frames(frame, message):
    with pytest.raises(ValueError, match=message):
        Preprocessor()(frame)
