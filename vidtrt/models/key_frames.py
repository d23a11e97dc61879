"""Key frames of a segment-based schedule (PSLA, Impression Network / DFF):
the video is cut into segments of ``interval`` frames (the last may be
shorter) and one frame of each is the key frame. No torch here: pipelines
and configs both use it."""

from __future__ import annotations

KEY_PLACEMENTS = ("first", "middle")


def key_index(segment_length: int, interval: int, placement: str) -> int:
    """Index of the key frame inside a segment of ``segment_length`` ≤ ``interval`` frames.

    "first": frame 0. "middle": frame interval // 2 (5 of 10, the papers'
    middle frame) when the segment reaches it, else segment_length // 2. The
    rule is decidable online: a pipeline either sees frame interval // 2
    arrive, or reaches the end of the video knowing the segment's length.
    """
    if placement not in KEY_PLACEMENTS:
        raise ValueError(f"key placement must be one of {KEY_PLACEMENTS}, got {placement!r}")
    if placement == "first":
        return 0
    return interval // 2 if segment_length > interval // 2 else segment_length // 2
