"""The Temporal RoI Align schedule over a backend.

Offline (mmtracking's ``test_with_adaptive_stride``): the support set is
spread over the whole video, so nothing can be detected before the video
ends. ``push`` only keeps the frames; ``flush`` runs two passes — pass 1 runs
``frame`` on the support frames and caches their outputs, pass 2 runs
``frame`` on every other frame (reusing the cached ones) and ``head`` on
every frame. The frame stage thus runs once per frame, never per use, and
the support inputs of ``head`` are assembled once for the whole video.

Online: past frames only. The frames whose index is a multiple of the
stride enter a memory of the last T of them after they have been detected;
frame t is detected at once from that memory (missing slots masked) and
itself.
"""

from __future__ import annotations

import numpy as np

from ...methods.troi import adaptive_stride_support, online_support
from .base import FrameResult, Pipeline, PipelineStream

FRAME_OUTPUTS = ("feature", "proposals", "proposal_valid", "roi_feats", "ref_keys", "ref_values")
# head input of a support slot -> the frame output it is stacked from
SUPPORT_SOURCES = {
    "support_features": "feature", "support_ref_keys": "ref_keys", "support_ref_values": "ref_values",
    "support_proposal_valid": "proposal_valid",
}  # fmt: skip


class TroiPipeline(Pipeline):
    method_name = "troi"

    def __init__(self, backend, mode: str | None = None, num_support: int | None = None, stride: int | None = None):
        super().__init__(backend, mode=mode, num_support=num_support, stride=stride)
        self.num_support = self.schedule["num_support"]
        self.mode = self.schedule["mode"]
        self.stride = self.schedule["stride"]

    def stream(self) -> "TroiStream":
        return TroiStream(self)


class TroiStream(PipelineStream):
    def reset(self) -> None:
        super().reset()
        self._images: list[np.ndarray] = []  # offline: the whole video
        self._memory: dict[int, dict] = {}  # online: frame index → frame-stage outputs
        self._count = 0

    def push(self, index: int, image: np.ndarray) -> list[FrameResult]:
        if index != self._count:
            raise ValueError(f"frames must arrive in order 0, 1, 2, ...: expected {self._count}, got {index}")
        self._check_size(image)
        self._count += 1
        if self.pipeline.mode == "offline":
            self._images.append(image)
            return []
        p = self.pipeline
        outputs = self._run_frame(image)
        support = [self._memory[i] for i in online_support(index, p.num_support, p.stride)]
        result = self._detect(index, outputs, self._support_inputs(support, like=outputs))
        if index % p.stride == 0:  # only what a support slot reads (not the frame's RoI features)
            self._memory[index] = {name: outputs[name] for name in SUPPORT_SOURCES.values()}
            for old in sorted(self._memory)[: -p.num_support]:
                del self._memory[old]
        return [result]

    def flush(self) -> list[FrameResult]:
        if self.pipeline.mode == "online" or not self._images:
            self._memory.clear()
            return []
        images, self._images = self._images, []
        chosen = adaptive_stride_support(len(images), self.pipeline.num_support)
        cached = {i: self._run_frame(images[i]) for i in sorted(set(chosen))}  # pass 1
        support = self._support_inputs([cached[i] for i in chosen])
        results = []
        for t, image in enumerate(images):  # pass 2
            outputs = cached[t] if t in cached else self._run_frame(image)
            results.append(self._detect(t, outputs, support))
        return results

    # ------------------------------------------------------------ internals

    def _run_frame(self, image: np.ndarray) -> dict:
        backend = self.pipeline.backend
        return backend.run("frame", {"image": backend.from_numpy(image)})

    def _support_inputs(self, frames: list[dict], like: dict | None = None) -> dict:
        """T support slots from frame-stage outputs; slots past ``frames`` are
        zeros shaped like ``like`` (the target's outputs), masked."""
        backend, t = self.pipeline.backend, self.pipeline.num_support
        inputs = {}
        for name, source in SUPPORT_SOURCES.items():
            arrays = [backend.to_numpy(f[source]) for f in frames]
            if len(arrays) < t:
                template = arrays[0] if arrays else backend.to_numpy(like[source])
                arrays += [np.zeros_like(template)] * (t - len(arrays))
            if name == "support_features":
                arrays = [a[0] for a in arrays]  # [1, C, h, w] each → [T, C, h, w]
            inputs[name] = backend.from_numpy(np.stack(arrays))
        inputs["support_valid"] = backend.from_numpy(np.arange(t) < len(frames))
        return inputs

    def _detect(self, index: int, outputs: dict, support: dict) -> FrameResult:
        backend = self.pipeline.backend
        inputs = dict(support)
        inputs.update({name: outputs[name] for name in FRAME_OUTPUTS})
        inputs["image_size"] = backend.from_numpy(np.array(self._image_hw, dtype=np.float32))
        out = backend.run("head", inputs)
        return FrameResult(index, "head", self._detections(out))
