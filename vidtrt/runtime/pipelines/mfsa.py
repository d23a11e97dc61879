"""The MFSA schedule over a backend.

Every frame goes through the ``frame`` stage as it arrives. Multi-Focus
(the paper's MFSA): frames are grouped into consecutive batches of K; when a
batch is full — or the video ends, the last batch padded with invalid
regions, never dropped — one ``batch`` call detects all of its frames.
Single-Focus (SFSA): frame t is detected by its own ``batch`` call over the
K frames centred on it (``single_focus_window``), so it waits for the
ceil(K/2) − 1 frames after it; at the end of a video the window shifts back.
"""

from __future__ import annotations

import numpy as np

from ...core.bundle import DETECTION_OUTPUTS
from ...methods.mfsa import single_focus_window
from .base import FrameResult, Pipeline, PipelineStream


class MfsaPipeline(Pipeline):
    method_name = "mfsa"

    def __init__(self, backend, batch_frames: int | None = None, mode: str | None = None):
        super().__init__(backend, batch_frames=batch_frames, mode=mode)
        self.k = self.schedule["batch_frames"]
        self.mode = self.schedule["mode"]

    def stream(self) -> "MfsaStream":
        return MfsaStream(self)


class MfsaStream(PipelineStream):
    def reset(self) -> None:
        super().reset()
        self._frames: dict[int, dict] = {}  # frame index → frame-stage outputs (backend arrays)
        self._count = 0  # frames seen
        self._next_target = 0  # Single-Focus: next frame to detect
        self._group_start = 0  # Multi-Focus: first frame of the open batch

    def push(self, index: int, image: np.ndarray) -> list[FrameResult]:
        if index != self._count:
            raise ValueError(f"frames must arrive in order 0, 1, 2, ...: expected {self._count}, got {index}")
        self._check_size(image)
        backend = self.pipeline.backend
        self._frames[index] = backend.run("frame", {"image": backend.from_numpy(image)})
        self._count += 1
        k = self.pipeline.k
        if self.pipeline.mode == "multi":
            if self._count - self._group_start == k:
                return self._detect_group(list(range(self._group_start, self._count)))
            return []
        results = []
        # Target t can run once the last frame of its window has arrived: the
        # window is then the one the whole video would give it, however long.
        while max(self._next_target - k // 2, 0) + k - 1 < self._count:
            t = self._next_target
            start = max(t - k // 2, 0)
            results.append(self._detect_target(t, list(range(start, start + k))))
        return results

    def flush(self) -> list[FrameResult]:
        results = []
        if self.pipeline.mode == "multi":
            if self._count > self._group_start:
                results = self._detect_group(list(range(self._group_start, self._count)))
        else:
            while self._next_target < self._count:
                t = self._next_target
                results.append(self._detect_target(t, single_focus_window(t, self._count, self.pipeline.k)))
        self._frames.clear()
        return results

    # ------------------------------------------------------------ internals

    def _run_batch(self, frames: list[int]) -> dict[str, np.ndarray]:
        backend, k = self.pipeline.backend, self.pipeline.k
        parts = [self._frames[i] for i in frames]
        inputs = {}
        for name in ("proposals", "proposal_valid", "regions"):
            arrays = [backend.to_numpy(p[name]) for p in parts]
            pad = [np.zeros_like(arrays[0])] * (k - len(arrays))  # padded frames: no valid region
            inputs[name] = backend.from_numpy(np.stack(arrays + pad))
        inputs["image_size"] = backend.from_numpy(np.array(self._image_hw, dtype=np.float32))
        out = backend.run("batch", inputs)
        return {name: backend.to_numpy(out[name]) for name in DETECTION_OUTPUTS}

    def _detect_group(self, frames: list[int]) -> list[FrameResult]:
        out = self._run_batch(frames)
        for i in frames:
            del self._frames[i]
        self._group_start = frames[-1] + 1
        return [FrameResult(i, "batch", {n: out[n][j] for n in DETECTION_OUTPUTS}) for j, i in enumerate(frames)]

    def _detect_target(self, target: int, window: list[int]) -> FrameResult:
        out = self._run_batch(window)
        self._next_target = target + 1
        oldest_needed = max(self._next_target - self.pipeline.k // 2, 0)
        for i in [i for i in self._frames if i < min(oldest_needed, max(self._count - self.pipeline.k, 0))]:
            del self._frames[i]
        j = window.index(target)
        return FrameResult(target, "batch", {n: out[n][j] for n in DETECTION_OUTPUTS})
