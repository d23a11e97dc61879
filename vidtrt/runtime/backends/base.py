"""The backend interface every pipeline is written against."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any, Mapping

import numpy as np

from ...core.bundle import Bundle


class Backend:
    """Runs the stages of one bundle.

    ``run(stage, inputs)`` takes and returns backend arrays keyed by the
    stage's I/O names; ``from_numpy``/``to_numpy`` cross the host boundary;
    ``zeros`` allocates a state buffer. Per-stage wall times are recorded in
    ``timings`` (milliseconds per call).
    """

    name = "base"

    def __init__(self, bundle: Bundle):
        self.bundle = bundle
        self.timings: dict[str, list[float]] = defaultdict(list)

    def run(self, stage: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        spec = self.bundle.stages.get(stage)
        if spec is None:
            raise KeyError(f"bundle has no stage {stage!r}; it has {', '.join(self.bundle.stages)}")
        missing = [t.name for t in spec.inputs if t.name not in inputs]
        if missing:
            raise ValueError(f"stage {stage!r} needs inputs {missing}")
        start = time.perf_counter()
        outputs = self._run(stage, inputs)
        self.timings[stage].append((time.perf_counter() - start) * 1e3)
        return outputs

    def _run(self, stage: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def from_numpy(self, array: np.ndarray) -> Any:
        raise NotImplementedError

    def to_numpy(self, value: Any) -> np.ndarray:
        raise NotImplementedError

    def zeros(self, shape, dtype: str) -> Any:
        return self.from_numpy(np.zeros(shape, dtype=dtype))

    def reset_timings(self) -> None:
        self.timings.clear()
