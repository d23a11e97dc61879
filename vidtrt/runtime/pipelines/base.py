"""What every pipeline shares: the method and its resolved schedule, the
per-frame result type, the frame-size rule and reading detections back.

A pipeline is the shared, read-only part (backend, method, schedule); its
``stream()`` gives independent video streams (own state, own buffers) over
the same backend. Streams ``push(index, image)`` preprocessed [1, 3, H, W]
frames and ``flush()`` at the end of a video; both return the FrameResults
that became ready, in frame order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ...core.bundle import DETECTION_OUTPUTS, BundleError
from ...methods import Method, get_method
from ..backends.base import Backend


@dataclass
class FrameResult:
    index: int
    stage: str  # which stage produced it
    detections: dict[str, np.ndarray]  # boxes, scores, labels, valid in network-input coordinates


def checked_image_size(image: np.ndarray, previous: tuple[int, int] | None) -> tuple[int, int]:
    """(H, W) of a preprocessed [1, 3, H, W] frame; a stream's frames must keep
    one size, because what it carries or caches has that size."""
    if image.ndim != 4 or image.shape[:2] != (1, 3):
        raise ValueError(f"expected a preprocessed image [1, 3, H, W], got shape {tuple(image.shape)}")
    hw = (int(image.shape[2]), int(image.shape[3]))
    if previous is not None and hw != previous:
        raise ValueError(
            f"frame size changed within a video ({previous} → {hw}); the stream's state has the old size. "
            "Call reset() before a new video."
        )
    return hw


class Pipeline:
    """A method's schedule over a backend. ``options`` override the bundle's
    schedule (None keeps it) and are validated by the method."""

    method_name: str  # the method whose bundles this pipeline runs

    def __init__(self, backend: Backend, **options: Any):
        manifest = backend.bundle.manifest
        if manifest.method != self.method_name:
            raise ValueError(f"{type(self).__name__} needs a {self.method_name} bundle, got method {manifest.method!r}")
        self.backend = backend
        self.method: Method = get_method(manifest.method)
        needed = set(self.method.stages) - {self.method.baseline_stage}
        missing = sorted(needed - set(manifest.stages))
        if missing:
            raise BundleError(
                f"bundle {backend.bundle.directory} has no stage {', '.join(missing)}, which the {self.method.name} "
                f"schedule runs (it has {', '.join(manifest.stages)}); re-export it"
            )
        self.schedule: dict[str, Any] = self.method.resolve_schedule(manifest.schedule, options)

    def stream(self):
        raise NotImplementedError

    def needs_random_access(self) -> bool:
        """Whether the schedule reads frames out of order (MEGA offline's
        global pool): then ``stream(video_length=, frame_source=)`` runs in
        constant memory, and a plain ``stream()`` keeps the whole video."""
        return False


class PipelineStream:
    """Per-stream bookkeeping shared by every method's stream."""

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline
        self.reset()

    def reset(self) -> None:
        self._image_hw: tuple[int, int] | None = None

    def _check_size(self, image: np.ndarray) -> None:
        self._image_hw = checked_image_size(image, self._image_hw)

    def _detections(self, outputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        to_numpy = self.pipeline.backend.to_numpy
        return {name: to_numpy(outputs[name]) for name in DETECTION_OUTPUTS}
