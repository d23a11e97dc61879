"""The segment schedule that PSLA and Impression Network / DFF share: a key
frame every ``key_interval`` frames through the method's key stage, the other
frames of its segment through the non-key stage, after it.

Key frame placement "first" emits each frame as soon as it arrives. "middle"
(the papers') makes the frames before a segment's key frame wait for it:
they are buffered, the key frame runs, then they run and come out in order,
so frame i leaves after frame (segment start + interval // 2) has arrived.
At the end of a video a partial segment's key frame is its middle frame
(``vidtrt.models.key_frames.key_index``).

A method's stream implements ``_key`` and ``_nonkey`` (one frame each, with
its own state); this module decides which frame goes where, and when.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...core.bundle import concrete_shape, feature_sizes
from ...models.key_frames import key_index
from .base import FrameResult, Pipeline, PipelineStream


class KeyFramePipeline(Pipeline):
    """Shared, read-only part: backend, schedule (``key_interval``,
    ``key_placement`` and the method's other options), state shapes."""

    def __init__(self, backend, **options):
        super().__init__(backend, **options)
        self.key_interval = self.schedule["key_interval"]
        self.key_placement = self.schedule["key_placement"]
        manifest = backend.bundle.manifest
        self.state = {s.name: s for s in manifest.state}
        self.stride = manifest.feature_stride

    @property
    def key_position(self) -> int:
        """Where the key frame sits in a full segment."""
        return key_index(self.key_interval, self.key_interval, self.key_placement)


class KeyFrameStream(PipelineStream):
    def reset(self) -> None:
        """Forget the video: state, buffered frames and the segment position."""
        super().reset()
        self._state: dict[str, Any] | None = None
        self._pending: list[tuple[int, Any]] = []  # frames of this segment waiting for its key frame
        self._position = 0  # frames of the current segment seen so far
        self._key_done = False
        self._last_index: int | None = None

    # ------------------------------------------------------------ frames in

    def push(self, index: int, image: np.ndarray) -> list[FrameResult]:
        """Adds frame ``index`` (a preprocessed [1, 3, H, W] float32 array);
        returns the frames whose detections are ready, in frame order."""
        if self._last_index is not None and index <= self._last_index:
            raise ValueError(f"frames must arrive in increasing order: got {index} after {self._last_index}")
        self._last_index = index
        self._check_size(image)
        p = self.pipeline
        value = p.backend.from_numpy(image)
        results: list[FrameResult] = []
        if self._key_done:
            results.append(self._nonkey(index, value))
        elif self._position == p.key_position:
            results.extend(self._run_segment(self._pending, (index, value)))
            self._pending = []
        else:
            self._pending.append((index, value))
        self._position += 1
        if self._position == p.key_interval:
            self._position, self._key_done = 0, False
        return results

    def flush(self) -> list[FrameResult]:
        """End of the video: runs a partial segment still waiting for its key frame."""
        results: list[FrameResult] = []
        if self._pending:
            frames = self._pending
            k = key_index(len(frames), self.pipeline.key_interval, self.pipeline.key_placement)
            results = self._run_segment(frames[:k] + frames[k + 1 :], frames[k])
        self._pending, self._position, self._key_done = [], 0, False
        return results

    def _run_segment(self, waiting, key_frame) -> list[FrameResult]:
        key_result = self._key(*key_frame)
        self._key_done = True
        results = [self._nonkey(i, v) for i, v in waiting] + [key_result]
        return sorted(results, key=lambda r: r.index)

    # ------------------------------------------------------------ the method's part

    def _key(self, index: int, image) -> FrameResult:
        raise NotImplementedError

    def _nonkey(self, index: int, image) -> FrameResult:
        raise NotImplementedError

    def _zero_state(self) -> dict[str, Any]:
        """Every state of the manifest as zeros at this stream's frame size."""
        sizes = feature_sizes(self._image_hw, self.pipeline.stride)
        backend = self.pipeline.backend
        return {name: backend.zeros(list(concrete_shape(spec.shape, sizes)), spec.dtype) for name, spec in self.pipeline.state.items()}
