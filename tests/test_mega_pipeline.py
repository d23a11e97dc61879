"""MEGA end to end: the schedule's rules against hand-made tables, the
pipeline against the whole-video reference (offline with and without random
access, online; videos shorter than every pool and longer than all of
them; interleaved streams), latency, constant memory on a long video, the
memory's contents and effect checked by hand, mega.pytorch checkpoints
(every key, a corrupted one, the ``module.`` prefix), precision variants and
the CLI."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from vidtrt.cli import main as cli_main
from vidtrt.core.compare import compare_detections
from vidtrt.export.exporter import export_bundle
from vidtrt.methods import mega as method
from vidtrt.methods.common import sample_image
from vidtrt.models.checkpoint import CheckpointError
from vidtrt.models.mega import MegaDetector, OnlineGlobalPool, local_window, look_ahead, offline_global_pool
from vidtrt.runtime.backends import create_backend
from vidtrt.runtime.pipelines import create_pipeline
from vidtrt.runtime.synthetic import moving_shapes_clip, write_clip

DETECTIONS = ("boxes", "scores", "labels", "valid")
SMALL = method.CONFIGS["mega_small"]  # T_l = 5 (tau = 2), T_g = 3, T_m = 4


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return export_bundle("mega", tmp_path_factory.mktemp("b") / "mega_small", config_name="mega_small", log=lambda _: None)


@pytest.fixture(scope="module")
def detector(bundle):
    return method.METHOD.load_detector(checkpoint=bundle.path(bundle.manifest.checkpoint))[1]


@pytest.fixture(scope="module")
def backends(bundle):
    return {name: create_backend(name, bundle) for name in ("torch", "onnxruntime")}


def video(detector, length, seed=0):
    return [sample_image(detector.cfg, seed=seed * 1000 + i) for i in range(length)]


def run_stream(stream, images):
    results = []
    for i, image in enumerate(images):
        results += stream.push(i, image.numpy())
    return results + stream.flush()


def streaming(pipeline, images):
    """An offline stream with random access to ``images``."""
    return pipeline.stream(video_length=len(images), frame_source=lambda i: images[i].numpy())


def assert_matches(results, reference, backend_name, detector):
    assert [r.index for r in results] == list(range(len(reference)))
    cfg = detector.cfg.detection
    for r in results:
        want = [t.numpy() for t in reference[r.index]]
        got = [r.detections[k] for k in DETECTIONS]
        if backend_name == "torch":
            for w, g in zip(want, got):
                np.testing.assert_array_equal(w, g)
        else:
            cmp = compare_detections(want, got, cfg.max_detections, cfg.nms_iou)
            assert cmp.ok and cmp.max_box_error < 0.05 and cmp.max_score_error < 1e-4, (r.index, cmp)


# ------------------------------------------------------------ schedule rules by hand


def test_local_windows_by_hand():
    # Offline, T_l = 5: two frames each side, the first / last frame repeated at the ends.
    assert local_window(0, 7, 5, "offline") == [0, 0, 0, 1, 2]
    assert local_window(3, 7, 5, "offline") == [1, 2, 3, 4, 5]
    assert local_window(6, 7, 5, "offline") == [4, 5, 6, 6, 6]
    assert local_window(1, 2, 5, "offline") == [0, 0, 1, 1, 1]
    # mega.pytorch: 25 frames, key at 12; at frame 0, 13 copies of frame 0 then frames 1..12.
    assert local_window(0, 100, 25, "offline") == [0] * 13 + list(range(1, 13))
    # Online: the T_l frames ending at the key frame.
    assert local_window(1, None, 5, "online") == [0, 0, 0, 0, 1]
    assert local_window(9, None, 5, "online") == [5, 6, 7, 8, 9]
    assert look_ahead(25, "offline") == 12 and look_ahead(5, "offline") == 2 and look_ahead(5, "online") == 0


def test_offline_global_pool_by_hand():
    shuffled = np.random.default_rng(7).permutation(6)
    assert offline_global_pool(0, 6, 3, 7) == [shuffled[0], shuffled[1], shuffled[2]]
    assert offline_global_pool(4, 6, 3, 7) == [shuffled[4], shuffled[5], shuffled[0]]
    # Shorter than T_g: frames repeat, as upstream's modulo does.
    s2 = np.random.default_rng(1).permutation(2)
    assert offline_global_pool(0, 2, 3, 1) == [s2[0], s2[1], s2[0]]
    # Over a video every frame serves once per T_g key frames.
    counts = Counter(f for k in range(12) for f in offline_global_pool(k, 12, 3, 5))
    assert set(counts.values()) == {3}


def test_online_global_pool_is_a_uniform_sample_of_the_past():
    pool = OnlineGlobalPool(3, seed=0)
    assert [pool.add(i) for i in range(3)] == [0, 1, 2] and pool.slots == [0, 1, 2]
    hits = Counter()
    for seed in range(3000):
        pool = OnlineGlobalPool(3, seed)
        for i in range(10):
            pool.add(i)
            assert all(s is None or s <= i for s in pool.slots)  # past frames only
        hits.update(pool.slots)
    for frame in range(10):
        assert abs(hits[frame] / 3000 - 0.3) < 0.04, (frame, hits[frame])  # each frame with probability T_g / t


# ------------------------------------------------------------ pipeline vs reference


@pytest.mark.parametrize("backend_name", ["torch", "onnxruntime"])
@pytest.mark.parametrize("mode", ["offline", "online"])
@pytest.mark.parametrize("length", [2, 12])  # 2: shorter than T_l, T_g and T_m; 12: longer than all
def test_pipeline_equals_whole_video_reference(backends, detector, backend_name, mode, length):
    images = video(detector, length, seed=length)
    reference = method.detect_video_reference(detector, images, mode, seed=3)
    pipeline = create_pipeline(backends[backend_name], mode=mode, shuffle_seed=3)
    assert_matches(run_stream(pipeline.stream(), images), reference, backend_name, detector)
    if mode == "offline":
        assert_matches(run_stream(streaming(pipeline, images), images), reference, backend_name, detector)


def test_interleaved_streams(backends, detector):
    first, second = video(detector, 9, seed=1), video(detector, 6, seed=2)
    for mode in ("offline", "online"):
        pipeline = create_pipeline(backends["torch"], mode=mode)
        if mode == "offline":
            a, b = streaming(pipeline, first), streaming(pipeline, second)
        else:
            a, b = pipeline.stream(), pipeline.stream()
        out_a, out_b = [], []
        for i in range(9):
            out_a += a.push(i, first[i].numpy())
            if i < 6:
                out_b += b.push(i, second[i].numpy())
        out_a += a.flush()
        out_b += b.flush()
        assert_matches(out_a, method.detect_video_reference(detector, first, mode, 0), "torch", detector)
        assert_matches(out_b, method.detect_video_reference(detector, second, mode, 0), "torch", detector)


def test_latency(backends, detector):
    images = video(detector, 6)
    pipeline = create_pipeline(backends["torch"], mode="offline")
    stream = streaming(pipeline, images)
    ready = [[r.index for r in stream.push(i, im.numpy())] for i, im in enumerate(images)]
    assert ready == [[], [], [0], [1], [2], [3]]  # frame k once frame k + tau (2) has arrived
    assert [r.index for r in stream.flush()] == [4, 5]
    online = create_pipeline(backends["torch"], mode="online").stream()
    assert [[r.index for r in online.push(i, im.numpy())] for i, im in enumerate(images)] == [[i] for i in range(6)]
    assert online.flush() == []


@pytest.mark.parametrize("mode", ["online", "offline"])
def test_memory_is_constant_on_a_long_video(backends, detector, mode):
    frames = [sample_image(detector.cfg, seed=i % 7).numpy() for i in range(60)]
    pipeline = create_pipeline(backends["onnxruntime"], mode=mode)
    stream = pipeline.stream() if mode == "online" else pipeline.stream(video_length=60, frame_source=lambda i: frames[i])
    sizes = []
    for i, frame in enumerate(frames):
        stream.push(i, frame)
        sizes.append(stream.memory_size())
    bounds = {"local": SMALL.local_frames + look_ahead(SMALL.local_frames, mode), "global": SMALL.global_frames, "memory": SMALL.memory_frames}
    for size in sizes:
        assert all(size[k] <= bounds[k] for k in bounds), size
    assert sizes[20] == sizes[-1]  # reached its bound and stays there
    assert len(stream.flush()) == (0 if mode == "online" else look_ahead(SMALL.local_frames, mode))


def test_streaming_refuses_a_wrong_length(backends, detector):
    images = video(detector, 4)
    stream = create_pipeline(backends["torch"], mode="offline").stream(video_length=6, frame_source=lambda i: images[min(i, 3)].numpy())
    for i, image in enumerate(images):
        stream.push(i, image.numpy())
    with pytest.raises(ValueError, match="ended after 4 frames, but the stream was told video_length=6$"):
        stream.flush()
    with pytest.raises(ValueError, match="both video_length and frame_source"):
        create_pipeline(backends["torch"]).stream(video_length=3)
    with pytest.raises(ValueError, match="both video_length and frame_source"):
        create_pipeline(backends["torch"]).stream(frame_source=lambda i: images[i].numpy())


# ------------------------------------------------------------ the memory by hand


@torch.no_grad()
def test_memory_holds_the_oldest_local_frame_after_global_aggregation(backends, detector):
    """Online, frame 0: the local pool is frame 0 five times and the global
    pool frame 0 alone, so memory level 0 gains frame 0's first R box
    features plus the global relation over frame 0's R features — computed
    here without padding or masks."""
    images = video(detector, 2, seed=5)
    stream = create_pipeline(backends["torch"], mode="online").stream()
    stream.push(0, images[0].numpy())
    _, valid, features = detector.frame(images[0])
    r = SMALL.ref_proposals
    keep = valid[:r]
    ext = detector.extractor
    want = features[:r] + ext.relation(False, 0, features[:r], features[:r][keep], keep[keep])
    got = stream._memory[0][0][2]
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)
    assert [len(m) for m in stream._memory] == [1, 1, 1]
    assert stream._memory[1][0][2].shape == (SMALL.dis_proposals, SMALL.feat_dim)


@torch.no_grad()
def test_memory_is_read_from_the_next_frame_on(detector):
    """The base model (no memory) with the same weights detects frame 0 as
    MEGA does (the memory is still empty) and later frames differently."""
    base = MegaDetector(method.METHOD.config("mega_small", {"memory": False})).eval()
    base.load_state_dict(detector.state_dict())
    images = video(detector, 4, seed=6)
    with_memory = method.detect_video_reference(detector, images, "online", 0)
    without = method.detect_video_reference(base, images, "online", 0)
    for a, b in zip(with_memory[0], without[0]):
        torch.testing.assert_close(a, b)
    assert any(not torch.equal(with_memory[i][1], without[i][1]) for i in (1, 2, 3))


# ------------------------------------------------------------ mega.pytorch checkpoints

STAGE_BLOCKS = {18: (2, 2, 2, 2), 101: (3, 4, 23, 3)}


def upstream_mega_shapes(depth, rpn_mid, anchors, d, groups, embed, stages=3, global_stages=2, classes=31) -> dict:
    """Key → shape of a mega.pytorch MEGA checkpoint, written from its module
    definitions: ResNet C4 body (stem.conv1 / stem.bn1, FrozenBatchNorm with
    four buffers), RPNHead (conv, cls_logits, bbox_pred) and the anchor
    BufferList, the ResNetHead layer4, MEGAFeatureExtractor's l_* and g_*
    relation parameters, FPNPredictor (cls_score, bbox_pred for every class)."""
    s = {"backbone.body.stem.conv1.weight": [64, 3, 7, 7]}

    def bn(p, c):
        s.update({f"{p}.{n}": [c] for n in ("weight", "bias", "running_mean", "running_var")})

    bn("backbone.body.stem.bn1", 64)
    bottleneck = depth >= 50

    def stage(prefix, index, count, in_ch):
        planes = 64 * 2 ** (index - 1)
        out = planes * (4 if bottleneck else 1)
        for b in range(count):
            p = f"{prefix}.{b}"
            convs = [[planes, in_ch, 1, 1], [planes, planes, 3, 3], [out, planes, 1, 1]] if bottleneck else [[planes, in_ch, 3, 3], [planes, planes, 3, 3]]
            for i, shape in enumerate(convs, start=1):
                s[f"{p}.conv{i}.weight"] = shape
                bn(f"{p}.bn{i}", shape[0])
            if b == 0 and in_ch != out:
                s[f"{p}.downsample.0.weight"] = [out, in_ch, 1, 1]
                bn(f"{p}.downsample.1", out)
            in_ch = out
        return in_ch

    c = 64
    for index in (1, 2, 3):
        c = stage(f"backbone.body.layer{index}", index, STAGE_BLOCKS[depth][index - 1], c)
    s["rpn.anchor_generator.cell_anchors.0"] = [anchors, 4]
    s["rpn.head.conv.weight"], s["rpn.head.conv.bias"] = [rpn_mid, c, 3, 3], [rpn_mid]
    s["rpn.head.cls_logits.weight"], s["rpn.head.cls_logits.bias"] = [anchors, rpn_mid, 1, 1], [anchors]
    s["rpn.head.bbox_pred.weight"], s["rpn.head.bbox_pred.bias"] = [4 * anchors, rpn_mid, 1, 1], [4 * anchors]
    fe = "roi_heads.box.feature_extractor"
    res5 = stage(f"{fe}.head.layer4", 4, 3, c)
    for i in range(stages):
        s[f"{fe}.l_fcs.{i}.weight"], s[f"{fe}.l_fcs.{i}.bias"] = [d, res5 * 49 if i == 0 else d], [d]
        s[f"{fe}.l_Wgs.{i}.weight"], s[f"{fe}.l_Wgs.{i}.bias"] = [groups, embed, 1, 1], [groups]
        s[f"{fe}.l_us.{i}"] = [groups, 1, d // groups]
    for kind, count in (("l", stages), ("g", global_stages)):
        for i in range(count):
            for w in ("Wqs", "Wks"):
                s[f"{fe}.{kind}_{w}.{i}.weight"], s[f"{fe}.{kind}_{w}.{i}.bias"] = [d, d], [d]
            s[f"{fe}.{kind}_Wvs.{i}.weight"], s[f"{fe}.{kind}_Wvs.{i}.bias"] = [d, d, 1, 1], [d]  # groups: d·G inputs / G
            if kind == "g":
                s[f"{fe}.g_us.{i}"] = [groups, 1, d // groups]
    s["roi_heads.box.predictor.cls_score.weight"], s["roi_heads.box.predictor.cls_score.bias"] = [classes, d], [classes]
    s["roi_heads.box.predictor.bbox_pred.weight"], s["roi_heads.box.predictor.bbox_pred.bias"] = [4 * classes, d], [4 * classes]
    return s


SMALL_SHAPES = dict(depth=18, rpn_mid=32, anchors=9, d=32, groups=4, embed=16)
FULL_SHAPES = dict(depth=101, rpn_mid=1024, anchors=12, d=1024, groups=16, embed=64)


def fake_checkpoint(shapes, path, seed=0, prefix=""):
    g = torch.Generator().manual_seed(seed)
    state = {prefix + k: torch.randn(1, generator=g).expand(v) for k, v in shapes.items()}
    torch.save({"model": state, "optimizer": {}, "iteration": 120000}, path)
    return state


def test_upstream_layout_matches_the_model_zoo():
    shapes = upstream_mega_shapes(**FULL_SHAPES)
    assert len(shapes) == 578  # FACTS: mega.pytorch's MEGA R-101 checkpoint
    params = sum(int(np.prod(v)) for k, v in shapes.items() if "running_" not in k and "cell_anchors" not in k and ".bn" not in k and "downsample.1" not in k)
    assert abs(params / 1e6 - 172.7) < 0.2  # ≈172.7M parameters (frozen BN affine counted as buffers here)


@pytest.mark.parametrize("prefix", ["", "module."])
def test_mega_checkpoint_loads_every_key(tmp_path, prefix):
    path = tmp_path / "mega.pth"
    state = fake_checkpoint(upstream_mega_shapes(**SMALL_SHAPES), path, seed=4, prefix=prefix)
    cfg, detector = method.METHOD.load_detector("mega_small", checkpoint=path)
    own = detector.state_dict()
    for key, value in state.items():
        ours = key.removeprefix(prefix).replace("backbone.body.stem.", "backbone.body.")
        assert torch.equal(own[ours], value), key


def test_full_size_checkpoint_picks_mega_r101(tmp_path):
    path = tmp_path / "mega_r101.pth"
    fake_checkpoint(upstream_mega_shapes(**FULL_SHAPES), path)
    cfg, _ = method.METHOD.load_detector(checkpoint=path)
    assert cfg.name == "mega_r101"
    cfg, _ = method.METHOD.load_detector("mega_base_r101", checkpoint=path)  # the same keys
    assert not cfg.memory


def test_corrupted_mega_checkpoint_names_every_bad_key(tmp_path):
    shapes = upstream_mega_shapes(**SMALL_SHAPES)
    del shapes["roi_heads.box.feature_extractor.l_us.2"]
    del shapes["backbone.body.stem.bn1.running_var"]
    shapes["roi_heads.box.feature_extractor.l_fcs.3.weight"] = [32, 32]
    shapes["roi_heads.box.predictor.bbox_pred.weight"] = [120, 32]  # class-agnostic-free mmdet layout
    path = tmp_path / "bad.pth"
    fake_checkpoint(shapes, path)
    with pytest.raises(CheckpointError) as err:
        method.METHOD.load_detector("mega_small", checkpoint=path)
    text = str(err.value)
    assert "2 missing: backbone.body.stem.bn1.running_var, roi_heads.box.feature_extractor.l_us.2" in text
    assert "1 unexpected: roi_heads.box.feature_extractor.l_fcs.3.weight" in text
    assert "roi_heads.box.predictor.bbox_pred.weight (expected [124, 32], got [120, 32])" in text


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(moving_shapes_clip(num_frames=7, height=96, width=128), tmp_path_factory.mktemp("clip") / "clip.mp4")


def test_cli_export_and_run_a_mega_checkpoint(tmp_path, clip, capsys):
    path = tmp_path / "mega.pth"
    state = fake_checkpoint(upstream_mega_shapes(**SMALL_SHAPES), path, seed=2, prefix="module.")
    out = tmp_path / "bundle"
    code = cli_main(["export", "--method", "mega", "--config", "mega_small", "--checkpoint", str(path), "--out", str(out), "--no-verify", "--precisions", "fp32"])
    assert code == 0, capsys.readouterr()
    _, loaded = method.METHOD.load_detector(checkpoint=out / "model.ckpt")
    key = "roi_heads.box.feature_extractor.l_Wvs.1.weight"
    assert torch.equal(loaded.state_dict()[key], state["module." + key])
    code = cli_main(["run", str(out), str(clip), "--backend", "onnxruntime", "--out", str(tmp_path / "run"), "--outputs", "jsonl", "--no-progress"])
    assert code == 0, capsys.readouterr()
    assert len((tmp_path / "run" / "detections.jsonl").read_text().splitlines()) == 7


# ------------------------------------------------------------ CLI, demo, precision


def test_cli_export_run_both_modes_and_demo(tmp_path, clip, capsys):
    out = tmp_path / "mega"
    assert cli_main(["export", "--method", "mega", "--config", "mega_small", "--out", str(out)]) == 0
    capsys.readouterr()
    for backend in ("torch", "onnxruntime"):
        for mode in ("offline", "online"):
            target = tmp_path / f"{backend}-{mode}"
            code = cli_main(["run", str(out), str(clip), "--backend", backend, "--mode", mode, "--shuffle-seed", "4", "--out", str(target), "--outputs", "jsonl", "--no-progress"])
            assert code == 0, capsys.readouterr()
            lines = [json.loads(line) for line in (target / "detections.jsonl").read_text().splitlines()]
            assert [line["frame"] for line in lines] == list(range(7)) and {line["stage"] for line in lines} == {"head"}
    code = cli_main(["run", str(out), str(clip), "--local-frames", "9", "--out", str(tmp_path / "bad"), "--no-progress"])
    err = capsys.readouterr().err
    assert code != 0 and "fixed at export" in err and "Traceback" not in err
    assert cli_main(["demo", "--method", "mega", "--out", str(tmp_path / "demo"), "--frames", "10"]) == 0


def test_fp16_and_int8_variants(tmp_path, clip):
    import onnxruntime as ort

    from vidtrt.calibration.calibrate import calibrate_bundle
    from vidtrt.calibration.capture import RecordingBackend
    from vidtrt.core.bundle import load_bundle
    from vidtrt.export.precision import write_fp16_variants
    from vidtrt.runtime.runner import run_video

    bundle = export_bundle("mega", tmp_path / "b", config_name="mega_small", log=lambda _: None)
    write_fp16_variants(bundle, log=lambda _: None)
    calibrate_bundle(bundle, [clip], max_samples=4, progress=False, log=lambda _: None)
    bundle = load_bundle(bundle.directory)
    for precision in ("fp16", "int8"):
        assert run_video(bundle, clip, backend_options={"precision": precision}, outputs=(), progress=False).frames == 7
    recorder = RecordingBackend(create_backend("onnxruntime", bundle))
    run_video(bundle, clip, backend=recorder, outputs=(), progress=False, pipeline_options={"mode": "online"})
    feed = recorder.records["head"][-1]
    assert feed["memory0_valid"].any()  # a head call that reads a non-empty memory
    outs = {}
    for precision in ("fp32", "fp16", "int8"):
        session = ort.InferenceSession(str(bundle.stage_file("head", precision)), providers=["CPUExecutionProvider"])
        outs[precision] = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
    for precision, cosine in (("fp16", 0.999), ("int8", 0.95)):
        a, b = outs["fp32"]["memory2_update"].ravel(), outs[precision]["memory2_update"].ravel()
        assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > cosine, precision


def test_runner_reads_the_global_pool_from_the_file(bundle, clip, monkeypatch):
    """`vidtrt run` offline streams with random access to the file (constant
    memory); its detections equal a buffered stream's over the decoded frames."""
    from vidtrt.api import VideoDetector
    from vidtrt.runtime import video as video_module
    from vidtrt.runtime.runner import run_video

    reads = []
    original = video_module.RandomAccessVideo.__call__
    monkeypatch.setattr(video_module.RandomAccessVideo, "__call__", lambda self, i: reads.append(i) or original(self, i))
    collected = []
    run_video(bundle, clip, backend="torch", outputs=(), progress=False, collect=collected, pipeline_options={"mode": "offline", "shuffle_seed": 1})
    assert reads  # global frames not in the local cache were read from the file
    detector = VideoDetector(bundle, backend="torch", mode="offline", shuffle_seed=1)
    stream = detector.stream()  # no random access: keeps the video's outputs until flush
    with video_module.open_video(clip) as frames:
        buffered = [d for _, frame in frames for d in stream.push(frame)]
    buffered += stream.flush()
    assert [d.frame_index for d in collected] == [d.frame_index for d in buffered] == list(range(7))
    for a, b in zip(collected, buffered):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.scores, b.scores)
    with pytest.raises(ValueError, match="reads them in order"):
        VideoDetector(bundle, backend="torch", mode="online").stream(video_length=7, frame_source=lambda i: None)


def test_runner_reads_the_global_pool_from_an_image_folder(bundle, clip, tmp_path):
    """The same for a folder of images (the devkit's layout): random access
    reads the index's file, and the detections equal the video file's."""
    import cv2

    from vidtrt.runtime import video as video_module
    from vidtrt.runtime.runner import run_video

    folder = tmp_path / "frames"
    folder.mkdir()
    with video_module.open_video(clip) as frames:
        for i, frame in frames:
            cv2.imwrite(str(folder / f"{i:06d}.png"), frame)  # lossless: the same pixels as decoded
    with video_module.RandomAccessVideo(folder) as reader:
        assert reader.frame_count == 7
        np.testing.assert_array_equal(reader(3), cv2.imread(str(folder / "000003.png")))
        with pytest.raises(video_module.VideoError, match="no frame 7"):
            reader(7)
    from_folder, from_file = [], []
    options = {"mode": "offline", "shuffle_seed": 1}
    run_video(bundle, folder, backend="torch", outputs=(), progress=False, collect=from_folder, pipeline_options=options)
    run_video(bundle, clip, backend="torch", outputs=(), progress=False, collect=from_file, pipeline_options=options)
    assert len(from_folder) == len(from_file) == 7
    for a, b in zip(from_folder, from_file):
        np.testing.assert_array_equal(a.boxes, b.boxes)


def test_frames_in_order(backends, detector):
    images = video(detector, 2)
    stream = create_pipeline(backends["torch"], mode="online").stream()
    stream.push(0, images[0].numpy())
    for index in (0, 2):  # again, and one skipped
        with pytest.raises(ValueError, match=r"in order 0, 1, 2, \.\.\.: expected 1, got"):
            stream.push(index, images[1].numpy())


def test_offline_streaming_past_256_frames(backends, detector):
    """Indices and lengths compared as numbers: past CPython's shared small ints
    (256), frame k still comes out once frame k + tau has arrived, and a frame
    past video_length is refused."""
    frames = [sample_image(detector.cfg, seed=i).numpy() for i in range(5)]
    length, tau = 300, look_ahead(SMALL.local_frames, "offline")
    pipeline = create_pipeline(backends["onnxruntime"], mode="offline")
    stream = pipeline.stream(video_length=length, frame_source=lambda i: frames[i % 5])
    for i in range(length):
        assert [r.index for r in stream.push(i, frames[i % 5])] == ([i - tau] if i >= tau else [])
    with pytest.raises(ValueError, match=f"frame {length} is past the video_length given"):
        stream.push(int(str(length)), frames[0])  # equal to video_length, not the same int object
    assert [r.index for r in stream.flush()] == list(range(length - tau, length))


def test_stream_options_and_mode_by_value(backends, detector):
    images = video(detector, 12)
    with pytest.raises(ValueError, match="video_length must be >= 1, got 0"):
        create_pipeline(backends["torch"], mode="offline").stream(video_length=0, frame_source=lambda i: None)
    # An online stream given a length: every frame comes out of push, flush adds nothing and refuses nothing.
    online = create_pipeline(backends["torch"], mode="online").stream(video_length=6, frame_source=lambda i: None)
    assert [r.index for r in run_stream(online, images[:4])] == [0, 1, 2, 3]
    # The mode as read from a manifest or built at run time, not the literal:
    # offline without random access keeps every frame and detects at flush.
    literal = run_stream(create_pipeline(backends["torch"], mode="offline").stream(), images)
    built = run_stream(create_pipeline(backends["torch"], mode="".join(["off", "line"])).stream(), images)
    assert [r.index for r in built] == list(range(12))
    assert create_pipeline(backends["torch"], mode="".join(["off", "line"])).needs_random_access()
    for a, b in zip(literal, built):
        for name in DETECTIONS:
            np.testing.assert_array_equal(a.detections[name], b.detections[name])


def test_one_frame_streaming_a_wrong_frame_source_and_online_by_value(backends, detector):
    images = video(detector, 6)
    one = create_pipeline(backends["torch"], mode="offline").stream(video_length=1, frame_source=lambda i: images[0].numpy())
    assert [r.index for r in run_stream(one, images[:1])] == [0]
    # The global pool reads frames ahead of the stream: one of another size is named, with both sizes.
    h, w = images[0].shape[-2:]
    for wrong_hw in ((h + 32, w), (h, w - 32)):  # larger and smaller
        wrong = np.zeros((1, 3, *wrong_hw), np.float32)
        stream = create_pipeline(backends["torch"], mode="offline").stream(video_length=6, frame_source=lambda i: wrong)
        with pytest.raises(ValueError, match=rf"^frame_source\(\d+\) has size \({wrong_hw[0]}, {wrong_hw[1]}\), the video's frames \({h}, {w}\)$"):
            run_stream(stream, images)
    # Online, the mode built at run time, and the global pool's size as it fills.
    literal = create_pipeline(backends["torch"], mode="online").stream()
    built = create_pipeline(backends["torch"], mode="".join(["on", "line"])).stream()
    for i, image in enumerate(images):
        a, b = literal.push(i, image.numpy()), built.push(i, image.numpy())
        assert [r.index for r in a] == [r.index for r in b] == [i]
        for name in DETECTIONS:
            np.testing.assert_array_equal(a[0].detections[name], b[0].detections[name])
        assert built.memory_size()["global"] == min(i + 1, SMALL.global_frames)


def test_memory_entry_is_the_oldest_local_frame_with_its_own_validity(backends, detector):
    """Online at frame 5 the local pool is frames 1..5, so the memory entry added
    holds frame 1's first R proposals and validity. Frame 1's validity is
    thinned out here (every other proposal invalid) so that it differs from
    its neighbours' (all valid on these images)."""
    images = video(detector, 6, seed=3)
    stream = create_pipeline(backends["torch"], mode="online").stream()
    run_frame, seen = stream._run_frame, []

    def thinned_second_frame(image):
        proposals, valid, features = run_frame(image)
        if len(seen) == 1:
            valid = valid.copy()
            valid[::2] = False
        seen.append((proposals, valid))
        return proposals, valid, features

    stream._run_frame = thinned_second_frame
    for i in range(6):
        stream.push(i, images[i].numpy())
    r = SMALL.ref_proposals
    assert not np.array_equal(seen[1][1][:r], seen[2][1][:r])
    entry = stream._memory[0][-1]
    np.testing.assert_array_equal(entry[1], seen[1][1][:r])
    np.testing.assert_array_equal(entry[0], seen[1][0][:r])
    # A head without memory inputs (MEGA's base model): no memory levels, and none reported.
    base = create_pipeline(backends["torch"], mode="online")
    base.level_rows = []
    assert base.stream().memory_size()["memory"] == 0
