"""The PSLA schedule: a key frame every ``key_interval`` frames through the
``key`` stage (N_f + RFU), the others through ``nonkey`` (N_l + DenseFT), with
F_t and f(F_t) carried in the backend's arrays.

Key frame placement "first" emits each frame as soon as it arrives. "middle"
(the paper's) makes the frames before a segment's key frame wait for it:
they are buffered, the key frame runs, then they run and come out in order,
so frame i leaves after frame (segment start + interval // 2) has arrived.
At the end of a video a partial segment's key frame is its middle frame
(``vidtrt.methods.psla.key_index``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...methods.psla import key_index
from .base import FrameResult, Pipeline, PipelineStream


class PslaPipeline(Pipeline):
    """Shared, read-only part: backend, schedule parameters, state shapes."""

    method_name = "psla"

    def __init__(self, backend, key_interval: int | None = None, key_placement: str | None = None):
        super().__init__(backend, key_interval=key_interval, key_placement=key_placement)
        self.key_interval = self.schedule["key_interval"]
        self.key_placement = self.schedule["key_placement"]
        manifest = backend.bundle.manifest
        self.state = {s.name: s for s in manifest.state}
        self.stride = manifest.feature_stride

    def stream(self) -> "PslaStream":
        """An independent video stream (own state and buffer) over the shared backend."""
        return PslaStream(self)

    @property
    def key_position(self) -> int:
        """Where the key frame sits in a full segment."""
        return key_index(self.key_interval, self.key_interval, self.key_placement)


class PslaStream(PipelineStream):
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

    # ------------------------------------------------------------ stages

    def _run_segment(self, waiting, key_frame) -> list[FrameResult]:
        key_result = self._key(*key_frame)
        self._key_done = True
        results = [self._nonkey(i, v) for i, v in waiting] + [key_result]
        return sorted(results, key=lambda r: r.index)

    def _key(self, index: int, image) -> FrameResult:
        backend = self.pipeline.backend
        has_state = self._state is not None
        if not has_state:
            self._state = self._zero_state()
        out = backend.run(
            "key",
            {
                "image": image,
                "temporal_in": self._state["temporal"],
                "temporal_key_in": self._state["temporal_key"],
                "has_state": backend.from_numpy(np.array([1.0 if has_state else 0.0], dtype=np.float32)),
            },
        )
        self._state = {"temporal": out["temporal_out"], "temporal_key": out["temporal_key_out"]}
        return FrameResult(index, "key", self._detections(out))

    def _nonkey(self, index: int, image) -> FrameResult:
        out = self.pipeline.backend.run(
            "nonkey",
            {"image": image, "temporal_in": self._state["temporal"], "temporal_key_in": self._state["temporal_key"]},
        )
        return FrameResult(index, "nonkey", self._detections(out))

    def _zero_state(self) -> dict[str, Any]:
        h, w = self._image_hw
        stride = self.pipeline.stride
        sizes = {"h": -(-h // stride), "w": -(-w // stride)}
        state = {}
        for name, spec in self.pipeline.state.items():
            shape = [sizes.get(d, d) if isinstance(d, str) else d for d in spec.shape]
            state[name] = self.pipeline.backend.zeros(shape, spec.dtype)
        return state
