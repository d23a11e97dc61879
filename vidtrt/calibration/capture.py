"""Recording stage inputs while the FP32 pipeline runs.

INT8 scales must come from what each stage sees in service: the key and
non-key stages of PSLA receive the propagated temporal state, not something
derived from a fresh image. ``RecordingBackend`` wraps any backend and keeps
a host copy of the inputs of every call.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..core.bundle import Bundle
from ..runtime.backends.base import Backend


class RecordingBackend(Backend):
    """Delegates to ``inner`` and records up to ``max_per_stage`` input feeds per stage."""

    def __init__(self, inner: Backend, max_per_stage: int | None = None):
        super().__init__(inner.bundle)
        self.inner = inner
        self.name = inner.name
        self.max_per_stage = max_per_stage
        self.records: dict[str, list[dict[str, np.ndarray]]] = {}
        self.calls: dict[str, int] = {}
        self.outputs: dict[str, list[dict[str, np.ndarray]]] = {}
        self.keep_outputs = False

    def _run(self, stage: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        self.calls[stage] = self.calls.get(stage, 0) + 1
        records = self.records.setdefault(stage, [])
        if self.max_per_stage is None or len(records) < self.max_per_stage:
            records.append({name: np.array(self.inner.to_numpy(self._as_backend(v)), copy=True) for name, v in inputs.items()})
        out = self.inner.run(stage, inputs)
        if self.keep_outputs:
            self.outputs.setdefault(stage, []).append({k: np.array(self.inner.to_numpy(v), copy=True) for k, v in out.items()})
        return out

    def _as_backend(self, value):
        return value if not isinstance(value, np.ndarray) else self.inner.from_numpy(value)

    def from_numpy(self, array):
        return self.inner.from_numpy(array)

    def to_numpy(self, value):
        return self.inner.to_numpy(value)

    def zeros(self, shape, dtype):
        return self.inner.zeros(shape, dtype)


def fill_unscheduled(bundle: Bundle, records: dict[str, list[dict[str, np.ndarray]]]) -> None:
    """Stages the schedule never calls (e.g. PSLA's ``perframe`` baseline) get
    samples built from what the scheduled stages received under the same input
    names (their images)."""
    for name, spec in bundle.stages.items():
        if records.get(name):
            continue
        wanted = [t.name for t in spec.inputs]
        derived = []
        for feeds in records.values():
            for feed in feeds:
                if all(w in feed for w in wanted):
                    derived.append({w: feed[w] for w in wanted})
        records[name] = derived
