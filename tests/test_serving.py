"""Serving many video streams (vidtrt.serving): the stream table without a
server, then a real tritonserver on loopback started and stopped here: many
concurrent streams give a local run's detections, a vanished client's state
expires (seen on the metrics endpoint), a malformed frame fails alone, END
frees at once, a killed server gives the client an error and no hang."""

from __future__ import annotations

import json
import threading
import time

import cv2
import numpy as np
import pytest

from vidtrt.serving.streams import StreamError, StreamTable
from vidtrt.serving.triton_model import decode_image, detections_arrays

HEIGHT, WIDTH = 120, 160


# ---------------------------------------------------------------- the stream table, no server


class FakeStream:
    """Holds every frame back until a third one comes (a delay like PSLA's middle key frame)."""

    def __init__(self):
        self.waiting: list[int] = []
        self.pushed = 0

    def push(self, frame):
        if not isinstance(frame, np.ndarray):
            raise ValueError("not a frame")
        self.waiting.append(self.pushed)
        self.pushed += 1
        if len(self.waiting) < 3:
            return []
        ready, self.waiting = self.waiting, []
        return ready

    def flush(self):
        ready, self.waiting = self.waiting, []
        return ready


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def make_table(timeout=2.0):
    clock, seen = FakeClock(), []
    table = StreamTable(FakeStream, timeout, clock=clock, on_change=seen.append)
    return table, clock, seen


FRAME = np.zeros((4, 4, 3), np.uint8)


def test_table_keeps_state_by_id_and_end_frees_at_once():
    table, clock, seen = make_table()
    assert table.handle(1, FRAME, start=True) == []
    assert table.handle(2, FRAME, start=True) == []
    assert table.handle(1, FRAME) == []
    assert table.handle(1, FRAME) == [0, 1, 2]  # stream 1's three frames; stream 2 has one
    assert table.handle(2, None, end=True) == [0]  # an empty END only flushes
    assert 2 not in table and 1 in table and len(table) == 1
    assert seen[-1].live == 1 and seen[-1].ended == 1 and seen[-1].started == 2
    with pytest.raises(StreamError, match="never started .* ended, .* expired"):
        table.handle(2, FRAME)
    assert table.handle(1, FRAME, end=True) == [3]  # frame and flush in one request
    assert len(table) == 0 and table.counts().ended == 2


def test_table_start_replaces_a_live_stream_and_bad_frames_fail_alone():
    table, clock, seen = make_table()
    table.handle(7, FRAME, start=True)
    table.handle(7, FRAME, start=True)  # a new video under the same id: old state dropped
    assert table.handle(7, FRAME) == []
    with pytest.raises(StreamError, match="stream 7: not a frame"):
        table.handle(7, "garbage")
    with pytest.raises(StreamError, match="stream 7: undecodable"):
        table.handle(7, None, bad_frame="undecodable")
    assert table.handle(7, FRAME) == [0, 1, 2]  # the stream went on as if the bad requests never came
    with pytest.raises(StreamError, match="carries no frame"):
        table.handle(7, None)
    with pytest.raises(StreamError, match="ended all the same"):
        table.handle(7, "garbage", end=True)
    assert 7 not in table


def test_table_expires_idle_streams_only():
    table, clock, seen = make_table(timeout=2.0)
    table.handle(1, FRAME, start=True)
    table.handle(2, FRAME, start=True)
    clock.now = 1.5
    table.handle(2, FRAME)  # stream 2 is alive
    clock.now = 2.1
    assert table.expire() == [1]
    assert 1 not in table and 2 in table
    assert seen[-1].expired == 1 and seen[-1].live == 1
    clock.now = 10.0
    with pytest.raises(StreamError, match="expired"):
        table.handle(2, FRAME)  # handle() expires first: stream 2 idled out too
    assert table.counts().expired == 2 and len(table) == 0
    with pytest.raises(ValueError, match="idle_timeout_s"):
        StreamTable(FakeStream, 0)


def test_frame_decoding_and_response_arrays():
    frame = (np.arange(HEIGHT * WIDTH * 3) % 251).astype(np.uint8).reshape(HEIGHT, WIDTH, 3)
    ok, png = cv2.imencode(".png", frame)
    np.testing.assert_array_equal(decode_image(png.tobytes()), frame)
    with pytest.raises(ValueError, match="not an image"):
        decode_image(b"\x00\x01 not an image")
    with pytest.raises(ValueError, match="empty"):
        decode_image(b"")
    from vidtrt.runtime.outputs import Detections

    dets = [
        Detections(np.ones((2, 4)), [0.5, 0.25], [1, 0], 3, stage="key"),
        Detections(np.zeros((0, 4)), [], [], 4, stage="nonkey"),
    ]
    arrays = detections_arrays(dets)
    assert arrays["FRAME_INDEX"].tolist() == [3, 4] and arrays["COUNTS"].tolist() == [2, 0]
    assert arrays["STAGES"].tobytes().decode().split("\n")[:-1] == ["key", "nonkey"]
    assert arrays["BOXES"].shape == (2, 4) and arrays["LABELS"].dtype == np.int64
    assert detections_arrays([])["BOXES"].shape == (0, 4)


# ---------------------------------------------------------------- bundles and repositories


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    from vidtrt.export.exporter import export_bundle

    root = tmp_path_factory.mktemp("serving_bundles")
    return {
        method: export_bundle(method, root / f"{method}_small", config_name=f"{method}_small", verify=False, log=lambda _: None)
        for method in ("psla", "troi", "mfsa", "impression", "mega")
    }


def test_repository_layout_and_refusals(bundles, tmp_path, capsys):
    from vidtrt.cli import main

    psla = str(bundles["psla"].directory)
    assert main(["triton-repo", psla, str(tmp_path / "repo"), "--instances", "2", "--idle-timeout", "5", "--max-streams", "4"]) == 0
    model = tmp_path / "repo" / "psla_small"
    config = (model / "config.pbtxt").read_text()
    for text in ("sequence_batching", "max_sequence_idle_microseconds: 5000000", "CONTROL_SEQUENCE_START",
                 "CONTROL_SEQUENCE_END", "CONTROL_SEQUENCE_CORRID", "max_candidate_sequences: 4",
                 "count: 2 kind: KIND_CPU", 'backend: "python"'):  # fmt: skip
        assert text in config, text
    assert (model / "1" / "bundle" / "manifest.json").is_file() and (model / "1" / "model.py").is_file()
    capsys.readouterr()
    # The plain per-stage models (for Triton's own backends; not loadable here).
    assert main(["triton-repo", psla, str(tmp_path / "repo"), "--force", "--stage-models", str(tmp_path / "stages")]) == 0
    key = (tmp_path / "stages" / "psla_small_key" / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in key and "temporal_in" in key and "dims: [ 1, 3, -1, -1 ]" in key
    assert (tmp_path / "stages" / "psla_small_nonkey" / "1" / "model.onnx").is_file()
    capsys.readouterr()
    # Again without --force: one line, non-zero.
    assert main(["triton-repo", psla, str(tmp_path / "repo")]) == 1
    assert "exists; give --force" in capsys.readouterr().err
    # An offline schedule cannot serve a stream.
    assert main(["triton-repo", str(bundles["troi"].directory), str(tmp_path / "repo2")]) == 1
    err = capsys.readouterr().err
    assert "offline" in err and "--mode online" in err and len(err.strip().splitlines()) == 1


def test_stage_state_kept_by_one_stage_becomes_implicit_state(bundles):
    import copy

    from vidtrt.core.bundle import Bundle
    from vidtrt.serving.repository import stage_model_config

    bundle = bundles["psla"]
    manifest = copy.deepcopy(bundle.manifest)
    for state in manifest.state:  # as if only the key stage read the memory it writes
        state.targets = [t for t in state.targets if t.startswith("key.")]
    config = stage_model_config(Bundle(bundle.directory, manifest), "key", "k", "onnxruntime_onnx", 2.0)
    assert 'input_name: "temporal_in" output_name: "temporal_out"' in config
    assert "CONTROL_SEQUENCE_START" in config and "max_sequence_idle_microseconds: 2000000" in config
    inputs = config.split("input [")[1].split("]\noutput")[0]
    assert "temporal_in" not in inputs and "image" in inputs  # state is Triton's, not the caller's


def test_serve_without_a_server_binary_is_one_line(bundles, monkeypatch, capsys):
    from vidtrt.cli import main

    monkeypatch.setenv("VIDTRT_TRITONSERVER", "/nonexistent/tritonserver")
    assert main(["serve", str(bundles["psla"].directory)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("vidtrt serve: error:") and "tritonserver" in err and len(err.splitlines()) == 1


# ---------------------------------------------------------------- a real server on loopback


def _server_or_skip():
    pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] not installed (the serve extra)")
    from vidtrt.serving.server import ServingUnavailable, find_tritonserver

    try:
        find_tritonserver()
    except ServingUnavailable as err:
        pytest.skip(f"no tritonserver: {err}")


IDLE_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def server(bundles, tmp_path_factory):
    """One server with three models: psla (2 s idle timeout), troi online, mfsa."""
    _server_or_skip()
    from vidtrt.serving.repository import write_repository
    from vidtrt.serving.server import TritonServer

    root = tmp_path_factory.mktemp("serving")
    repo = root / "repository"
    write_repository(bundles["psla"], repo, idle_timeout_s=IDLE_TIMEOUT_S, max_streams=16)
    write_repository(bundles["troi"], repo, schedule={"mode": "online"})
    write_repository(bundles["mfsa"], repo)
    write_repository(bundles["impression"], repo)
    write_repository(bundles["mega"], repo, schedule={"mode": "online"})
    running = TritonServer(repo, root)
    running.start()
    try:
        running.wait_ready(timeout_s=150)
        yield running
    finally:
        running.stop()
        print(running.log_tail(5))


def clip(num_frames, seed):
    from vidtrt.runtime.synthetic import moving_shapes_clip

    return moving_shapes_clip(num_frames=num_frames, height=HEIGHT, width=WIDTH, seed=seed)


def local_run(bundle, frames, **schedule):
    from vidtrt.api import VideoDetector

    return list(VideoDetector(bundle, **schedule).detect_video(frames))


def assert_same(got, want):
    assert [d.frame_index for d in got] == [d.frame_index for d in want]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.boxes, w.boxes)
        np.testing.assert_array_equal(g.scores, w.scores)
        np.testing.assert_array_equal(g.labels, w.labels)
        assert g.stage == w.stage and g.image_hw == w.image_hw


def remote(bundle, server, timeout_s=60.0):
    from vidtrt.serving.client import RemoteDetector

    return RemoteDetector(bundle.directory, server.grpc_url, timeout_s=timeout_s)


def metric(server, name, model="psla_small"):
    from vidtrt.serving.server import read_metric

    return read_metric(server.metrics_url, name, model)


def wait_for(condition, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} not seen within {timeout_s} s")


def test_eight_concurrent_streams_give_eight_local_runs(bundles, server):
    bundle = bundles["psla"]
    clips = [clip(14, seed) for seed in range(8)]
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def feed(k):
        try:
            stream = remote(bundle, server).stream()
            got = []
            for frame in clips[k]:
                got += stream.push(frame)
            results[k] = got + stream.flush()
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=feed, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    for k in range(8):
        assert_same(results[k], local_run(bundle, clips[k]))
    assert sum(len(d) for r in results.values() for d in r) > 0
    assert metric(server, "vidtrt_streams_live") == 0  # every END freed its stream


@pytest.mark.parametrize("method", ["troi", "mfsa", "impression", "mega"])
def test_run_server_writes_what_a_local_run_writes(bundles, server, tmp_path, method):
    from vidtrt.cli import main
    from vidtrt.runtime.synthetic import write_clip

    video = write_clip(clip(10, seed=11), tmp_path / "clip.mp4")
    bundle = str(bundles[method].directory)
    schedule = ["--mode", "online"] if method in ("troi", "mega") else []
    common = [video.as_posix(), "--outputs", "jsonl,vid", "--no-progress", "-q", *schedule]
    assert main(["run", bundle, *common, "--out", str(tmp_path / "local")]) == 0
    assert main(["run", bundle, *common, "--out", str(tmp_path / "served"), "--server", server.grpc_url]) == 0
    for name in ("detections.jsonl", "imagenet_vid.txt"):
        assert (tmp_path / "served" / name).read_text() == (tmp_path / "local" / name).read_text(), name
    lines = (tmp_path / "served" / "detections.jsonl").read_text().splitlines()
    assert [json.loads(line)["frame"] for line in lines] == list(range(10))


def test_run_server_refuses_another_schedule_or_bundle(bundles, server, tmp_path, capsys):
    from vidtrt.cli import main

    args = [str(bundles["troi"].directory), "unused.mp4", "--out", str(tmp_path / "o"), "--server", server.grpc_url]
    assert main(["run", *args, "--mode", "online", "--stride", "1"]) == 1
    assert "runs the schedule" in capsys.readouterr().err
    assert main(["run", *args, "--model", "psla_small"]) == 1
    assert "does not run bundle" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_vanished_client_does_not_disturb_others_and_expires(bundles, server):
    from vidtrt.serving.client import ServingError

    bundle = bundles["psla"]
    expired_before = metric(server, "vidtrt_streams_expired_total")
    gone = remote(bundle, server).stream()
    for frame in clip(3, seed=20):
        gone.push(frame)  # ... and never another request: the client vanished
    assert metric(server, "vidtrt_streams_live") == 1
    frames = clip(12, seed=21)
    stream = remote(bundle, server).stream()
    got = [d for frame in frames for d in stream.push(frame)] + stream.flush()
    assert_same(got, local_run(bundle, frames))
    wait_for(
        lambda: metric(server, "vidtrt_streams_live") == 0
        and metric(server, "vidtrt_streams_expired_total") == expired_before + 1,
        IDLE_TIMEOUT_S + 6, "the vanished stream's expiry",
    )  # fmt: skip
    with pytest.raises(ServingError, match="refused"):
        gone.push(clip(1, seed=20)[0])  # its sequence is gone on the server too


def test_malformed_frame_fails_alone_and_the_stream_goes_on(bundles, server):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from vidtrt.serving.client import ServingError

    bundle = bundles["psla"]
    frames = clip(8, seed=30)
    stream = remote(bundle, server).stream()
    got = []
    for frame in frames[:4]:
        got += stream.push(frame)
    # Not an image: that request fails with a clear message.
    garbage = grpcclient.InferInput("IMAGE", [1, 9], "UINT8")
    garbage.set_data_from_numpy(np.frombuffer(b"not a png", np.uint8)[None])
    with pytest.raises(InferenceServerException, match="not an image OpenCV can decode"):
        stream.detector.client.infer("psla_small", [garbage], sequence_id=stream.sequence_id, client_timeout=30)
    # A frame of another size: refused by the stream, which stays as it was.
    with pytest.raises(ServingError, match="has shape .* but this video's frames have"):
        stream.push(np.zeros((HEIGHT // 2, WIDTH, 3), np.uint8))
    # The encoded form of a good frame is accepted (PNG is lossless: same detections).
    png = np.frombuffer(cv2.imencode(".png", frames[4])[1].tobytes(), np.uint8)
    encoded = grpcclient.InferInput("IMAGE", [1, png.size], "UINT8")
    encoded.set_data_from_numpy(png[None])
    result = stream.detector.client.infer("psla_small", [encoded], sequence_id=stream.sequence_id, client_timeout=30)
    stream._next_index += 1  # the frame went around the stream object
    got += stream._detections(result)
    for frame in frames[5:]:
        got += stream.push(frame)
    got += stream.flush()
    assert_same(got, local_run(bundle, frames))


def test_end_frees_the_state_at_once(bundles, server):
    bundle = bundles["psla"]
    ended = metric(server, "vidtrt_streams_ended_total")
    stream = remote(bundle, server).stream()
    for frame in clip(3, seed=40):
        stream.push(frame)
    assert metric(server, "vidtrt_streams_live") == 1
    started = time.monotonic()
    assert [d.frame_index for d in stream.flush()] == [0, 1, 2]
    assert metric(server, "vidtrt_streams_live") == 0  # not after the idle timeout: now
    assert metric(server, "vidtrt_streams_ended_total") == ended + 1
    assert time.monotonic() - started < IDLE_TIMEOUT_S


def test_killed_server_gives_the_client_an_error_not_a_hang(bundles, tmp_path):
    _server_or_skip()
    from vidtrt.serving.client import ServingError
    from vidtrt.serving.repository import write_repository
    from vidtrt.serving.server import TritonServer

    write_repository(bundles["psla"], tmp_path / "repository")
    doomed = TritonServer(tmp_path / "repository", tmp_path)
    doomed.start()
    try:
        doomed.wait_ready(timeout_s=150)
        stream = remote(bundles["psla"], doomed, timeout_s=20).stream()
        frames = clip(4, seed=50)
        stream.push(frames[0])
        stream.push(frames[1])
        doomed.kill()
        started = time.monotonic()
        with pytest.raises(ServingError, match="not reachable or went away"):
            stream.push(frames[2])
        assert time.monotonic() - started < 20
    finally:
        doomed.stop()
    assert doomed.process.poll() is not None
