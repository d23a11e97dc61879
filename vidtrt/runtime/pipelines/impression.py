"""The Impression Network / DFF schedule (pipelines/key_frames.py): key
frames through ``key``, the others through ``nonkey``; the key frame's image
and f_task, and the impression, carried in the backend's arrays. The memory
gate g is fed to every ``key`` call."""

from __future__ import annotations

import numpy as np

from .base import FrameResult
from .key_frames import KeyFramePipeline, KeyFrameStream

class ImpressionPipeline(KeyFramePipeline):
    method_name = "impression"

    def __init__(self, backend, key_interval: int | None = None, key_placement: str | None = None, memory_gate: float | None = None):
        super().__init__(backend, key_interval=key_interval, key_placement=key_placement, memory_gate=memory_gate)
        self.memory_gate = self.schedule["memory_gate"]
        self.has_impression = "impression" in self.state
        if not self.has_impression and self.memory_gate != backend.bundle.manifest.schedule["memory_gate"]:
            raise ValueError(
                f"impression: memory_gate has no effect on bundle {backend.bundle.manifest.config_name!r}: "
                "it has no impression (aggregation none, Deep Feature Flow)"
            )

    def stream(self) -> "ImpressionStream":
        """An independent video stream (own state and buffer) over the shared backend."""
        return ImpressionStream(self)

class ImpressionStream(KeyFrameStream):
    def _key(self, index: int, image) -> FrameResult:
        p = self.pipeline
        backend = p.backend
        inputs = {"image": image}
        if p.has_impression:
            has_state = self._state is not None
            state = self._state if has_state else self._zero_state()
            inputs.update(
                prev_key_image=state["key_image"],
                impression_in=state["impression"],
                has_state=backend.from_numpy(np.array([1.0 if has_state else 0.0], dtype=np.float32)),
                memory_gate=backend.from_numpy(np.array([p.memory_gate], dtype=np.float32)),
            )
        out = backend.run("key", inputs)
        self._state = {"key_image": out["key_image_out"], "task_feature": out["task_feature_out"]}
        if p.has_impression:
            self._state["impression"] = out["impression_out"]
        return FrameResult(index, "key", self._detections(out))

    def _nonkey(self, index: int, image) -> FrameResult:
        out = self.pipeline.backend.run(
            "nonkey", {"image": image, "key_image": self._state["key_image"], "task_feature_in": self._state["task_feature"]}
        )
        return FrameResult(index, "nonkey", self._detections(out))
