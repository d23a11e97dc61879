"""A video streamed to a vidtrt Triton model over gRPC (`vidtrt run --server`).

:class:`RemoteDetector` has the surface of :class:`vidtrt.api.VideoDetector`
that :func:`vidtrt.runtime.runner.run_video` uses (``bundle``, ``backend``,
``pipeline``, ``stream()``), so a remote run goes through the same writers
as a local one. It loads the bundle locally for its class names and checks
that the server's model runs that very bundle (``bundle_sha256``).

:class:`RemoteStream` is one sequence: a random correlation id, START on the
first frame, END on an empty last request that flushes. Every request has a
deadline (``timeout_s``): a server that dies or hangs gives a
:class:`ServingError` (a RuntimeError, one line), never a wait for ever.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field

import numpy as np

from ..core.bundle import load_bundle
from ..runtime.outputs import Detections
from .server import INSTALL_HINT, ServingUnavailable


class ServingError(RuntimeError):
    """The server refused a request, went away, or did not answer in time."""


def _grpc():
    try:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException
    except ImportError:
        raise ServingUnavailable(f"tritonclient[grpc] is not installed; {INSTALL_HINT}") from None
    return grpcclient, InferenceServerException


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def explain(err, url: str, what: str, timeout_s: float) -> ServingError:
    """A tritonclient exception → one line saying what happened."""
    status = str(getattr(err, "status", lambda: "")() or "")
    message = _one_line(getattr(err, "message", lambda: str(err))() or str(err))
    if "UNAVAILABLE" in status or "Connection refused" in message or "Socket closed" in message:
        return ServingError(f"the server at {url} is not reachable or went away ({what}): {message}")
    if "DEADLINE_EXCEEDED" in status or "Deadline Exceeded" in message:
        return ServingError(f"the server at {url} did not answer within {timeout_s:g} s ({what})")
    return ServingError(f"the server at {url} refused {what}: {message}")


@dataclass
class RemoteBackend:
    """What run_video reports about the backend of a remote run."""

    name: str
    precision: str
    timings: dict = field(default_factory=dict)


class _RemotePipeline:
    def needs_random_access(self) -> bool:
        return False  # the server refuses the offline schedules that would


class RemoteDetector:
    """A vidtrt model served by Triton at ``url`` (HOST:PORT, gRPC) running ``bundle``.

    ``model``: the model's name (default: the bundle's config name). Checks,
    in one line each: the server answers, the model is ready, it runs this
    bundle; ``expect`` ({"backend", "precision", "schedule"}), when given,
    must match what the model runs."""

    def __init__(self, bundle, url: str, *, model: str | None = None, timeout_s: float = 60.0, expect: dict | None = None):
        grpcclient, InferenceServerException = _grpc()
        self.bundle = load_bundle(bundle)
        self.url = url
        self.model = model or self.bundle.manifest.config_name
        self.timeout_s = float(timeout_s)
        self.class_names = tuple(self.bundle.manifest.class_names)
        try:
            self.client = grpcclient.InferenceServerClient(url)
        except Exception as err:  # noqa: BLE001 - a bad address is a ValueError-like user error
            raise ServingError(f"cannot connect to {url}: {_one_line(err)}") from None
        try:
            if not self.client.is_server_live(client_timeout=self.timeout_s):
                raise ServingError(f"the server at {url} is not live")
            if not self.client.is_model_ready(self.model, client_timeout=self.timeout_s):
                raise ServingError(f"the server at {url} has no ready model {self.model!r}")
            config = self.client.get_model_config(self.model, as_json=True, client_timeout=self.timeout_s)["config"]
        except InferenceServerException as err:
            raise explain(err, url, f"the check of model {self.model!r}", self.timeout_s) from None
        from .repository import bundle_identity
        from .triton_model import parameters

        params = parameters(config)

        if params.get("bundle_sha256") != bundle_identity(self.bundle):
            raise ServingError(
                f"model {self.model!r} at {url} does not run bundle {self.bundle.directory} "
                "(its bundle_sha256 differs); give the bundle the server was made from"
            )
        self.schedule = json.loads(params.get("schedule", "{}") or "{}")
        self.backend = RemoteBackend(f"triton {url} ({params.get('backend', '?')})", params.get("precision", "fp32"))
        for key, want in (expect or {}).items():
            have = {"backend": params.get("backend"), "precision": params.get("precision")}.get(key, None)
            if key == "schedule":
                differ = {k: (v, self.schedule.get(k)) for k, v in want.items() if self.schedule.get(k) != v}
                if differ:
                    raise ServingError(
                        f"model {self.model!r} at {url} runs the schedule {self.schedule}; asked for "
                        + ", ".join(f"{k}={v[0]}" for k, v in differ.items())
                    )
            elif have != want:
                raise ServingError(f"model {self.model!r} at {url} runs {key} {have}, not {want}")
        self.pipeline = _RemotePipeline()

    @property
    def method(self) -> str:
        return self.bundle.manifest.method

    def stream(self, video_length=None, frame_source=None) -> "RemoteStream":
        if video_length is not None or frame_source is not None:
            raise ValueError("a served stream reads frames in order; video_length and frame_source do not apply")
        return RemoteStream(self)

    def close(self) -> None:
        self.client.close()


class RemoteStream:
    """One video as one sequence on the server (see the module docstring)."""

    def __init__(self, detector: RemoteDetector, sequence_id: int | None = None):
        self.detector = detector
        self.sequence_id = sequence_id or (secrets.randbits(63) or 1)
        self._grpc, self._error = _grpc()
        self._meta: dict[int, tuple] = {}
        self._next_index = 0
        self._image_hw: tuple[int, int] | None = None

    @property
    def frames_pushed(self) -> int:
        return self._next_index

    @property
    def waiting(self) -> int:
        return len(self._meta)

    def push(self, frame: np.ndarray, *, timestamp: float | None = None, file: str | None = None) -> list[Detections]:
        """Sends the next frame (BGR uint8 (H, W, 3), raw, so the server sees the
        very pixels a local run would); returns the detections that became ready."""
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            described = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
            raise ValueError(f"frame {self._next_index}: expected a BGR uint8 array (H, W, 3), got {described}")
        frame_input = self._grpc.InferInput("FRAME", [1, *frame.shape], "UINT8")
        frame_input.set_data_from_numpy(np.ascontiguousarray(frame)[None])
        index = self._next_index
        self._meta[index] = (timestamp, file)
        if self._image_hw is None:
            self._image_hw = (int(frame.shape[0]), int(frame.shape[1]))
        try:
            results = self._infer([frame_input], start=index == 0, end=False, what=f"frame {index}")
        except BaseException:
            del self._meta[index]
            raise
        self._next_index = index + 1
        return results

    def flush(self) -> list[Detections]:
        """Ends the sequence: the detections of every frame still waiting; the
        server frees the stream's state. The next push starts a new sequence."""
        if self._next_index == 0:
            return []
        empty = self._grpc.InferInput("IMAGE", [1, 0], "UINT8")
        empty.set_data_from_numpy(np.zeros((1, 0), np.uint8))
        try:
            return self._infer([empty], start=False, end=True, what="the end of the stream")
        finally:
            self._meta.clear()
            self._next_index = 0
            self._image_hw = None
            self.sequence_id = secrets.randbits(63) or 1

    def _infer(self, inputs, *, start: bool, end: bool, what: str) -> list[Detections]:
        detector = self.detector
        try:
            result = detector.client.infer(
                detector.model, inputs, sequence_id=self.sequence_id, sequence_start=start, sequence_end=end,
                client_timeout=detector.timeout_s,
            )  # fmt: skip
        except self._error as err:
            raise explain(err, detector.url, f"{what} of stream {self.sequence_id}", detector.timeout_s) from None
        return self._detections(result)

    def _detections(self, result) -> list[Detections]:
        from .triton_model import OUTPUT_NAMES

        arrays = {name: result.as_numpy(name) for name in OUTPUT_NAMES}
        frames = arrays["FRAME_INDEX"].reshape(-1)
        counts = arrays["COUNTS"].reshape(-1)
        boxes = arrays["BOXES"].reshape(-1, 4)
        scores, labels = arrays["SCORES"].reshape(-1), arrays["LABELS"].reshape(-1)
        stages = arrays["STAGES"].reshape(-1).tobytes().decode().split("\n")[:-1]
        out, offset = [], 0
        for index, count, stage in zip(frames, counts, stages):
            index, count = int(index), int(count)
            timestamp, file = self._meta.pop(index, (None, None))
            out.append(
                Detections(
                    boxes[offset : offset + count], scores[offset : offset + count], labels[offset : offset + count], index,
                    stage=stage or None, image_hw=self._image_hw, class_names=self.detector.class_names,
                    timestamp=timestamp, file=file,
                )  # fmt: skip
            )
            offset += count
        return out
