"""The PSLA schedule (pipelines/key_frames.py): key frames through ``key``
(N_f + RFU), the others through ``nonkey`` (N_l + DenseFT), with F_t and
f(F_t) carried in the backend's arrays."""

from __future__ import annotations

import numpy as np

from .base import FrameResult
from .key_frames import KeyFramePipeline, KeyFrameStream


class PslaPipeline(KeyFramePipeline):
    method_name = "psla"

    def __init__(self, backend, key_interval: int | None = None, key_placement: str | None = None):
        super().__init__(backend, key_interval=key_interval, key_placement=key_placement)

    def stream(self) -> "PslaStream":
        """An independent video stream (own state and buffer) over the shared backend."""
        return PslaStream(self)


class PslaStream(KeyFrameStream):
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
