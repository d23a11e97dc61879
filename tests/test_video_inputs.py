"""Video inputs as people have them: frame folders, printf patterns and
globs (natural order, file names and timestamps carried into the outputs,
clear errors, keep-what-was-done on a bad image), an ImageNet-VID snippet
folder through `vidtrt run` and `vidtrt eval` with the devkit's frame ids,
a loopback HTTP stream that stops mid-way, and a battery of real encodings
made with FFmpeg (imageio-ffmpeg's binary) compared with the same frames as
a folder."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from vidtrt.cli import main as cli_main
from vidtrt.eval.synth_vid import SynthConfig, write_synth_vid
from vidtrt.runtime.synthetic import moving_shapes_clip, write_clip
from vidtrt.runtime.video import VideoError, image_sequence, natural_key, open_video


def _ffmpeg():
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # noqa: BLE001 - absent or without a binary for this platform
        return shutil.which("ffmpeg")


FFMPEG = _ffmpeg()
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="no FFmpeg binary (pip install imageio-ffmpeg, or put ffmpeg on PATH)")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / "psla"
    assert cli_main(["export", "--config", "psla_small", "--out", str(out), "--precisions", "fp32", "--no-verify", "-q"]) == 0
    return out


def write_frames(folder, frames, names):
    folder.mkdir(parents=True, exist_ok=True)
    for frame, name in zip(frames, names):
        assert cv2.imwrite(str(folder / name), frame)
    return folder


def jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------ image sequences


def test_natural_order_patterns_and_globs(tmp_path):
    frames = moving_shapes_clip(num_frames=12, height=64, width=80)
    names = [f"frame{i}.{'png' if i % 2 else 'JPG'}" for i in range(12)]
    folder = write_frames(tmp_path / "mixed", frames, names)
    (folder / "notes.txt").write_text("not an image")
    assert [p.name for p in image_sequence(folder)] == names  # frame2 before frame10, any case of suffix
    assert sorted(["f10", "f2", "f1"], key=natural_key) == ["f1", "f2", "f10"]
    numbered = write_frames(tmp_path / "num", frames[:5], [f"{i:06d}.png" for i in range(1, 6)])
    assert [p.name for p in image_sequence(numbered / "%06d.png")] == [f"{i:06d}.png" for i in range(1, 6)]  # starts at 1
    assert len(image_sequence(str(numbered / "00000[2-4].png"))) == 3
    with open_video(folder) as source:
        got = [(i, source.last_meta) for i, _ in source]
    assert [m.name for _, m in got] == names and got[3][1].timestamp == pytest.approx(3 / 25)


def test_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoError, match="holds no images"):
        open_video(tmp_path / "empty")
    with pytest.raises(VideoError, match="no file matches the pattern"):
        open_video(str(tmp_path / "empty" / "%04d.jpg"))
    with pytest.raises(VideoError, match="no file matches the glob"):
        open_video(str(tmp_path / "empty" / "*.jpg"))


def test_run_on_a_folder_carries_names_and_keeps_work_on_a_bad_image(bundle, tmp_path, capsys):
    frames = moving_shapes_clip(num_frames=6, height=96, width=128)
    folder = write_frames(tmp_path / "snippet", frames, [f"{i:06d}.JPEG" for i in range(6)])
    out = tmp_path / "ok"
    assert cli_main(["run", str(bundle), str(folder), "--out", str(out), "--outputs", "jsonl", "--no-progress", "--key-placement", "first"]) == 0
    lines = jsonl(out / "detections.jsonl")
    assert [line["file"] for line in lines] == [f"{i:06d}.JPEG" for i in range(6)]
    assert [line["time"] for line in lines] == pytest.approx([i / 25 for i in range(6)])
    capsys.readouterr()
    (folder / "000003.JPEG").write_bytes(b"not a jpeg")
    out = tmp_path / "bad"
    assert cli_main(["run", str(bundle), str(folder), "--out", str(out), "--outputs", "jsonl", "--no-progress", "--key-placement", "first"]) == 1
    err = capsys.readouterr().err
    assert "000003.JPEG (frame 3) cannot be read" in err and "Traceback" not in err
    assert [line["file"] for line in jsonl(out / "detections.jsonl")] == ["000000.JPEG", "000001.JPEG", "000002.JPEG"]


def test_mixed_sizes_are_an_error_unless_allowed(bundle, tmp_path, capsys):
    frames = moving_shapes_clip(num_frames=4, height=96, width=128)
    folder = write_frames(tmp_path / "mixed", frames, [f"{i}.png" for i in range(4)])
    cv2.imwrite(str(folder / "2.png"), cv2.resize(frames[2], (100, 80)))
    assert cli_main(["run", str(bundle), str(folder), "--out", str(tmp_path / "a"), "--outputs", "jsonl", "--no-progress"]) == 1
    assert "2.png (frame 2) is 100x80, the first image 128x96" in capsys.readouterr().err
    assert cli_main(["run", str(bundle), str(folder), "--out", str(tmp_path / "b"), "--outputs", "jsonl", "--no-progress", "--allow-mixed-sizes"]) == 0
    assert len(jsonl(tmp_path / "b" / "detections.jsonl")) == 4


def test_vid_snippet_folders_through_run_and_eval(bundle, tmp_path, capsys):
    """Two devkit snippets run as folders (the VID txt offset by the frames
    before each), their results concatenated: `vidtrt eval` reads the txt by
    the devkit's frame index and the JSON lines by file name, and agrees."""
    data = tmp_path / "vid"
    write_synth_vid(data, SynthConfig(videos=2, frames=5, seed=2))
    snippets = sorted((data / "Data" / "VID" / "val").iterdir())
    txt, lines, offset = [], [], 0
    for snippet in snippets:
        out = tmp_path / snippet.name
        code = cli_main(["run", str(bundle), str(snippet), "--out", str(out), "--outputs", "jsonl,vid", "--no-progress", "--vid-frame-offset", str(offset)])
        assert code == 0, capsys.readouterr().err
        txt.append((out / "imagenet_vid.txt").read_text())
        lines.append((out / "detections.jsonl").read_text())
        offset += 5
    (tmp_path / "all.txt").write_text("".join(txt))
    (tmp_path / "all.jsonl").write_text("".join(lines))
    indices = {int(line.split()[0]) for line in "".join(txt).splitlines()}
    assert indices <= set(range(1, 11)) and max(indices) > 5  # the second snippet's frames are 6..10
    capsys.readouterr()
    maps = []
    for name in ("all.txt", "all.jsonl"):
        assert cli_main(["eval", str(tmp_path / name), "--data", str(data), "--json", str(tmp_path / f"{name}.json")]) == 0
        maps.append(json.loads((tmp_path / f"{name}.json").read_text())["map"]["all"])
    assert maps[0] == pytest.approx(maps[1], abs=1e-9)


# ------------------------------------------------------------ network streams


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_ffmpeg
def test_http_stream_that_stops_keeps_the_work_done(bundle, tmp_path):
    """FFmpeg serves MPEG-TS over HTTP (-listen 1) in real time and is killed
    mid-stream: the run reconnects a bounded number of times, stops with a
    clear message, and keeps (and had flushed) the frames done."""
    clip = write_clip(moving_shapes_clip(num_frames=250, height=96, width=128), tmp_path / "long.mp4")
    port = _free_port()
    server = subprocess.Popen(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-re", "-i", str(clip), "-c:v", "mpeg2video", "-q:v", "3", "-f", "mpegts", "-listen", "1", f"http://127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    out = tmp_path / "out"
    try:
        time.sleep(1.0)
        run = subprocess.Popen(
            [sys.executable, "-m", "vidtrt.cli", "run", str(bundle), f"http://127.0.0.1:{port}", "--out", str(out), "--outputs", "jsonl", "--no-progress", "--key-placement", "first"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        partial = []
        deadline = time.time() + 60
        while time.time() < deadline and not partial:
            files = list(out.glob(".detections.partial-*.jsonl")) if out.exists() else []
            partial = [f for f in files if f.read_text().count("\n") >= 3]
            time.sleep(0.2)
        assert partial, "results were not flushed while the stream ran"
        server.kill()  # the server goes away mid-stream
        stdout, stderr = run.communicate(timeout=90)
    finally:
        server.kill()
    assert run.returncode == 1, stderr
    assert "the stream stopped after frame" in stderr and "reconnect attempts failed" in stderr and "Traceback" not in stderr
    lines = jsonl(out / "detections.jsonl")
    assert 3 <= len(lines) < 250 and [line["frame"] for line in lines] == list(range(len(lines)))
    assert all(line["time"] is not None for line in lines)


# ------------------------------------------------------------ a battery of real encodings

# name: (file suffix, ffmpeg output options, frame size (w, h))
ENCODINGS = {
    "h264": (".mp4", ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18"], (128, 96)),
    "hevc-10bit": (".mp4", ["-c:v", "libx265", "-pix_fmt", "yuv420p10le", "-crf", "18", "-x265-params", "log-level=error"], (128, 96)),
    "vp9": (".webm", ["-c:v", "libvpx-vp9", "-pix_fmt", "yuv420p", "-crf", "20", "-b:v", "0"], (128, 96)),
    "mjpeg": (".avi", ["-c:v", "mjpeg", "-q:v", "2", "-pix_fmt", "yuvj420p"], (128, 96)),
    "odd-444": (".mp4", ["-c:v", "libx264", "-pix_fmt", "yuv444p", "-crf", "18"], (131, 97)),
    "rotated": (".mp4", ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18"], (128, 96)),
    "vfr": (".mkv", ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18", "-fps_mode", "vfr"], (128, 96)),
}


def _encode(name, frames_dir, out_dir):
    suffix, options, (w, h) = ENCODINGS[name]
    video = out_dir / f"{name}{suffix}"
    source = ["-framerate", "25", "-i", str(frames_dir / "%04d.png")]
    filters = [f"scale={w}:{h}"]
    if name == "vfr":  # frames 5.. come 3x slower: presentation times no index·1/fps gives
        filters.append("setpts='if(lt(N,5),N,5+(N-5)*3)/25/TB'")
    quiet = [FFMPEG, "-hide_banner", "-loglevel", "error", "-y"]
    plain = out_dir / f"{name}_plain{suffix}" if name == "rotated" else video
    subprocess.run([*quiet, *source, "-vf", ",".join(filters), *options, str(plain)], check=True, capture_output=True)
    if name == "rotated":  # a display matrix on the stream, pixels as encoded (a phone's portrait video)
        subprocess.run([*quiet, "-display_rotation", "90", "-i", str(plain), "-c", "copy", str(video)], check=True, capture_output=True)
    decoded = out_dir / f"{name}_frames"
    decoded.mkdir()
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-i", str(video), "-fps_mode", "passthrough", str(decoded / "%04d.png")], check=True)
    return video, decoded


@needs_ffmpeg
@pytest.mark.parametrize("name", list(ENCODINGS))
def test_encodings_equal_their_frames_as_a_folder(bundle, tmp_path, name, capsys):
    frames_dir = write_frames(tmp_path / "src", moving_shapes_clip(num_frames=12, height=96, width=128), [f"{i:04d}.png" for i in range(1, 13)])
    try:
        video, decoded = _encode(name, frames_dir, tmp_path)
    except subprocess.CalledProcessError as err:
        pytest.skip(f"this FFmpeg cannot make {name}: {err.stderr.decode(errors='replace')[-200:]}")
    with open_video(video) as a, open_video(decoded) as b:
        ours = [(f, a.last_meta.timestamp) for _, f in a]
        theirs = [f for _, f in b]
    assert len(ours) == len(theirs) == 12
    identical = True
    for (frame, _), reference in zip(ours, theirs):
        assert frame.shape == reference.shape  # rotation applied, odd sizes kept
        # OpenCV's FFmpeg and the FFmpeg CLI convert 8-bit video identically; 10-bit
        # to 8-bit conversion dithers differently (about 1.2 levels on average).
        assert np.abs(frame.astype(int) - reference.astype(int)).mean() < 2.0
        identical &= np.array_equal(frame, reference)
    times = [t for _, t in ours]
    if name == "vfr":
        assert times[6] - times[5] == pytest.approx(3 / 25, abs=2e-3) and times[3] - times[2] == pytest.approx(1 / 25, abs=2e-3)
    if name == "rotated":
        assert ours[0][0].shape[:2] == (128, 96)
    outs = {}
    for label, source in (("video", video), ("folder", decoded)):
        out = tmp_path / f"run_{label}"
        assert cli_main(["run", str(bundle), str(source), "--out", str(out), "--outputs", "jsonl", "--no-progress"]) == 0, capsys.readouterr().err
        outs[label] = jsonl(out / "detections.jsonl")
    if name == "vfr":
        assert outs["video"][6]["time"] - outs["video"][5]["time"] == pytest.approx(3 / 25, abs=2e-3)
    assert len(outs["video"]) == len(outs["folder"]) == 12
    if identical:  # the same pixels: the same detections
        assert [line["detections"] for line in outs["video"]] == [line["detections"] for line in outs["folder"]]
