"""The Triton Python-backend model behind a repository's ``model.py``.

``model.py`` in the repository only makes vidtrt importable (the site
directories recorded in the config) and forwards to :class:`StreamModel`,
which is given Triton's ``triton_python_backend_utils`` module so that this
file imports without Triton.

One request = one frame of one stream; the sequence's correlation id (control
input CORRID) names the stream, START and END its first and last request.
The frame is either ``IMAGE`` (uint8 [N]: the bytes of a JPEG/PNG/... file,
decoded by OpenCV into BGR) or ``FRAME`` (raw BGR uint8 [H, W, 3]); an END
request may carry an empty IMAGE: it only flushes. The response carries the
detections of every frame that became ready, concatenated:

    FRAME_INDEX int64 [F]   which frames (of this stream, from 0) they are
    STAGES      uint8 [S]   UTF-8 text: the pipeline stage that detected each frame, one line each
    COUNTS      int32 [F]   detections per frame (the split of the arrays below)
    BOXES       fp32  [K,4] x1, y1, x2, y2 in the original frame's pixels
    SCORES      fp32  [K]
    LABELS      int64 [K]   0-based class index (background excluded)

each with the leading batch dimension 1 of a batched model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .streams import ExpiryTimer, StreamError, StreamTable

OUTPUT_NAMES = ("FRAME_INDEX", "STAGES", "COUNTS", "BOXES", "SCORES", "LABELS")


def decode_image(data: bytes) -> np.ndarray:
    """An encoded image's bytes → BGR uint8 (H, W, 3); ValueError if they are none."""
    import cv2

    if not data:
        raise ValueError("the IMAGE input is empty")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"the IMAGE input ({len(data)} bytes) is not an image OpenCV can decode (JPEG, PNG, ...)")
    return image


def detections_arrays(detections) -> dict[str, np.ndarray]:
    """A list of Detections → the response's arrays (without the batch dimension)."""
    counts = np.array([len(d) for d in detections], np.int32)
    return {
        "FRAME_INDEX": np.array([d.frame_index for d in detections], np.int64),
        "STAGES": np.frombuffer("".join(f"{d.stage or ''}\n" for d in detections).encode(), np.uint8).copy(),
        "COUNTS": counts,
        "BOXES": np.concatenate([d.boxes for d in detections]).astype(np.float32) if detections else np.zeros((0, 4), np.float32),
        "SCORES": np.concatenate([d.scores for d in detections]).astype(np.float32) if detections else np.zeros(0, np.float32),
        "LABELS": np.concatenate([d.labels for d in detections]).astype(np.int64) if detections else np.zeros(0, np.int64),
    }


def _batch_of_one(array: np.ndarray) -> np.ndarray:
    """array[None] in a fresh buffer: the stub wants C-order strides in every
    dimension, and a view's new axis has stride 0."""
    out = np.empty((1, *array.shape), array.dtype)
    out[0] = array
    return out


def _input_array(tensor) -> np.ndarray | None:
    """A request's tensor as a numpy array of its own (None when absent).

    Through DLPack, not ``tensor.as_numpy()``: the stub builds that array
    for numpy 1's struct layout, and under numpy 2 it reads as zeros."""
    if tensor is None:
        return None
    shape = tuple(int(d) for d in tensor.shape())
    if 0 in shape:
        return np.zeros(shape, np.uint8)  # nothing to read (and the stub exports no empty DLPack)
    return np.from_dlpack(_LegacyDLPack(tensor)).copy()


class _LegacyDLPack:
    """A CPU tensor of the stub offered to numpy as a legacy (unversioned)
    DLPack capsule: numpy 2 asks for a versioned one first, and the stub's
    unversioned answer then logs a capsule-name error per tensor."""

    def __init__(self, tensor):
        self.tensor = tensor

    def __dlpack__(self, stream=None, max_version=None, **unused):
        if max_version is not None:
            raise TypeError("unversioned DLPack only")  # numpy retries without max_version
        return self.tensor.to_dlpack()

    def __dlpack_device__(self):
        return (1, 0)  # kDLCPU, device 0


def _tensor(pb, name: str, array: np.ndarray):
    # The stub refuses an empty array's DLPack strides as "not contiguous";
    # an empty array has no bytes to get wrong the other way.
    # Handed over as a torch tensor (same memory): the stub renames the
    # capsule it consumes, and numpy 2's capsule destructor then logs a
    # capsule-name error per tensor, where torch's checks the name first.
    import torch

    return pb.Tensor.from_dlpack(name, torch.from_numpy(array)) if array.size else pb.Tensor(name, array)


def parameters(model_config: dict) -> dict[str, str]:
    return {key: value.get("string_value", "") for key, value in model_config.get("parameters", {}).items()}


def refuse_offline(detector) -> None:
    """A schedule that keeps the whole video before answering cannot serve a stream."""
    schedule = detector.schedule
    if detector.pipeline.needs_random_access() or schedule.get("mode") == "offline":
        raise ValueError(
            f"the {detector.method} schedule {schedule} is offline: it answers only at the end of the video "
            "and keeps all of it; serve an online schedule (--mode online)"
        )


class StreamModel:
    """What ``TritonPythonModel`` does: load the bundle, keep the stream table, answer requests."""

    def __init__(self, args: dict, pb_utils):
        from ..api import VideoDetector

        self.pb = pb_utils
        config = json.loads(args["model_config"])
        params = parameters(config)
        version_dir = Path(args["model_repository"]) / args["model_version"]
        schedule = json.loads(params.get("schedule", "{}") or "{}")
        options = {}
        if int(params.get("threads", "0") or 0):
            options["threads"] = int(params["threads"])
        self.detector = VideoDetector(
            version_dir / params.get("bundle", "bundle"),
            params.get("backend", "onnxruntime"),
            params.get("precision", "fp32"),
            backend_options=options,
            **schedule,
        )
        refuse_offline(self.detector)
        self._metrics = self._make_metrics(config.get("name", ""), args.get("model_instance_name", ""))
        self.table = StreamTable(
            self.detector.stream, float(params.get("idle_timeout_s", "60")), on_change=self._update_metrics
        )
        self._timer = ExpiryTimer(self.table, min(1.0, self.table.idle_timeout_s / 4))

    # ------------------------------------------------------------ metrics

    def _make_metrics(self, model: str, instance: str):
        pb = self.pb
        if not hasattr(pb, "MetricFamily"):
            return None
        labels = {"model": model, "instance": instance}
        live = pb.MetricFamily(
            name="vidtrt_streams_live", description="video streams whose state this model instance holds",
            kind=pb.MetricFamily.GAUGE,
        )  # fmt: skip
        started = pb.MetricFamily(
            name="vidtrt_streams_started_total", description="video streams started (START requests)",
            kind=pb.MetricFamily.COUNTER,
        )  # fmt: skip
        ended = pb.MetricFamily(
            name="vidtrt_streams_ended_total", description="video streams ended by their client (END requests)",
            kind=pb.MetricFamily.COUNTER,
        )  # fmt: skip
        expired = pb.MetricFamily(
            name="vidtrt_streams_expired_total",
            description="video streams dropped after the idle timeout (client gone without END)",
            kind=pb.MetricFamily.COUNTER,
        )
        self._seen = {"started": 0, "ended": 0, "expired": 0}
        return {
            "families": (live, started, ended, expired),  # kept alive as long as their metrics
            "live": live.Metric(labels=labels),
            "started": started.Metric(labels=labels),
            "ended": ended.Metric(labels=labels),
            "expired": expired.Metric(labels=labels),
        }

    def _update_metrics(self, counts) -> None:
        if self._metrics is None:
            return
        self._metrics["live"].set(counts.live)
        for name in ("started", "ended", "expired"):
            value = getattr(counts, name)
            if value > self._seen[name]:
                self._metrics[name].increment(value - self._seen[name])
                self._seen[name] = value

    # ------------------------------------------------------------ requests

    def execute(self, requests):
        return [self._answer(request) for request in requests]

    def _answer(self, request):
        pb = self.pb
        try:
            stream_id, start, end, frame, bad_frame = self._read(request)
            detections = self.table.handle(stream_id, frame, start=start, end=end, bad_frame=bad_frame)
        except (StreamError, ValueError) as err:
            return pb.InferenceResponse(output_tensors=[], error=pb.TritonError(str(err)))
        except Exception as err:  # noqa: BLE001 - one failed request must not take the model down
            return pb.InferenceResponse(output_tensors=[], error=pb.TritonError(f"{type(err).__name__}: {err}"))
        arrays = detections_arrays(detections)
        # Through DLPack, not pb.Tensor(name, array): the stub reads a numpy
        # array's size through numpy 1's struct layout and sends empty tensors
        # for numpy 2 arrays; DLPack is layout-independent. (Likewise STAGES is
        # UTF-8 text in uint8 rather than a BYTES tensor of numpy objects.)
        return pb.InferenceResponse(
            output_tensors=[_tensor(pb, name, _batch_of_one(arrays[name])) for name in OUTPUT_NAMES]
        )

    def _read(self, request):
        pb = self.pb

        def scalar(name: str) -> int:
            array = _input_array(pb.get_input_tensor_by_name(request, name))
            return 0 if array is None or array.size == 0 else int(array.reshape(-1)[0])

        stream_id = scalar("CORRID")
        if stream_id == 0 and hasattr(request, "correlation_id"):
            stream_id = int(request.correlation_id())
        if stream_id == 0:
            raise ValueError("the request has no sequence (correlation) id; send frames with sequence_id=...")
        start, end = bool(scalar("START")), bool(scalar("END"))
        frame = bad_frame = None
        raw = pb.get_input_tensor_by_name(request, "FRAME")
        encoded = pb.get_input_tensor_by_name(request, "IMAGE")
        if raw is not None and encoded is not None:
            raise ValueError("send a frame either as FRAME (raw BGR) or as IMAGE (encoded), not both")
        if raw is not None:
            array = _input_array(raw)
            if array.ndim == 4 and array.shape[0] == 1:
                array = array[0]
            frame = array  # the stream checks dtype and shape
        elif encoded is not None:
            data = _input_array(encoded).tobytes()
            if data or not end:
                try:
                    frame = decode_image(data)
                except ValueError as err:
                    bad_frame = str(err)
        return stream_id, start, end, frame, bad_frame

    def finalize(self) -> None:
        self._timer.stop()
        self.table.clear()
