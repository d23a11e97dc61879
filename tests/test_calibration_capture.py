"""RecordingBackend (vidtrt/calibration/capture.py) on a stand-in backend whose
behaviour is known exactly: how many feeds it keeps, that they are copies, how
host arrays cross into the inner backend, and that outputs are kept only when
asked. (The survivors of the calibration mutation run, benchmarks/mutation/.)"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from vidtrt.calibration.capture import RecordingBackend
from vidtrt.runtime.backends.base import Backend


class Boxed:
    """A backend array that is not a numpy array (like an OrtValue)."""

    def __init__(self, array):
        self.array = array


class ReusingBackend(Backend):
    """Writes every output into one buffer it reuses, as engines do with their
    bindings; its to_numpy takes its own (Boxed) arrays only."""

    name = "stand-in"

    def __init__(self):
        stage = SimpleNamespace(inputs=[SimpleNamespace(name="x")])
        super().__init__(SimpleNamespace(stages={"s": stage}))
        self.buffer = np.zeros(3, dtype=np.float32)

    def _run(self, stage, inputs):
        x = inputs["x"]
        x = x if isinstance(x, Boxed) else self.from_numpy(x)  # run() takes host arrays too, as every backend does
        self.buffer[:] = x.array  # overwritten by the next call
        return {"y": Boxed(self.buffer)}

    def from_numpy(self, array):
        return Boxed(np.array(array))

    def to_numpy(self, value):
        assert isinstance(value, Boxed)
        return value.array


def test_keeps_exactly_max_per_stage_feeds_beyond_the_small_int_cache():
    inner = ReusingBackend()
    recorder = RecordingBackend(inner, max_per_stage=300)  # > 256: `is` on ints would differ from <
    for i in range(305):
        recorder.run("s", {"x": inner.from_numpy(np.full(3, i, dtype=np.float32))})
    assert len(recorder.records["s"]) == 300
    assert recorder.calls["s"] == 305
    assert [float(r["x"][0]) for r in recorder.records["s"]] == [float(i) for i in range(300)]


def test_host_arrays_are_recorded_through_the_inner_backends_own_arrays():
    inner = ReusingBackend()
    recorder = RecordingBackend(inner)
    out = recorder.run("s", {"x": np.array([1.0, 2.0, 3.0], dtype=np.float32)})
    np.testing.assert_array_equal(recorder.records["s"][0]["x"], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(recorder.to_numpy(out["y"]), [1.0, 2.0, 3.0])


def test_outputs_are_kept_only_when_asked_and_as_copies():
    inner = ReusingBackend()
    recorder = RecordingBackend(inner)
    recorder.run("s", {"x": inner.from_numpy(np.ones(3, dtype=np.float32))})
    assert recorder.outputs == {}, "outputs recorded without keep_outputs"
    recorder.keep_outputs = True
    for value in (2.0, 5.0):
        recorder.run("s", {"x": inner.from_numpy(np.full(3, value, dtype=np.float32))})
    # The inner backend reused its buffer: views would both read 5.
    assert [float(o["y"][0]) for o in recorder.outputs["s"]] == [2.0, 5.0]
