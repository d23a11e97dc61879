"""Impression Network and Deep Feature Flow end to end: Algorithm 1 written
out by hand for a short video, key frames against hand-made tables, the
DFF path (mmtracking's layout) against its whole-video reference, the
memory gate, mmtracking DFF checkpoints (every key, and a corrupted one),
precision variants, and the CLI (export, run, demo)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vidtrt.cli import main as cli_main
from vidtrt.core.compare import compare_detections
from vidtrt.export.exporter import export_bundle
from vidtrt.methods import impression as method
from vidtrt.methods.common import sample_image
from vidtrt.models.checkpoint import CheckpointError
from vidtrt.models.impression import ImpressionDetector
from vidtrt.runtime.backends import create_backend
from vidtrt.runtime.pipelines import create_pipeline
from vidtrt.runtime.synthetic import moving_shapes_clip, write_clip

DETECTIONS = ("boxes", "scores", "labels", "valid")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    out = {}
    for name in ("impression_small", "dff_small"):
        out[name] = export_bundle("impression", tmp_path_factory.mktemp("b") / name, config_name=name, log=lambda _: None)
    return out


@pytest.fixture(scope="module")
def detectors(bundles):
    return {name: method.METHOD.load_detector(checkpoint=b.path(b.manifest.checkpoint))[1] for name, b in bundles.items()}


@pytest.fixture(scope="module")
def backends(bundles):
    return {(name, kind): create_backend(kind, b) for name, b in bundles.items() for kind in ("torch", "onnxruntime")}


def video(detector, length, seed=0):
    return [sample_image(detector.cfg, seed=seed * 1000 + i) for i in range(length)]


def run_stream(stream, images):
    results = []
    for i, image in enumerate(images):
        results += stream.push(i, image.numpy())
    return results + stream.flush()


def assert_close_detections(want, got, detector, exact: bool):
    if exact:
        for w, g in zip(want, got):
            np.testing.assert_array_equal(np.asarray(w), np.asarray(g))
        return
    cfg = detector.cfg.detection
    cmp = compare_detections([np.asarray(w) for w in want], [np.asarray(g) for g in got], cfg.max_detections, cfg.nms_iou)
    assert cmp.ok and cmp.max_box_error < 0.05 and cmp.max_score_error < 1e-4, cmp


# ------------------------------------------------------------ Algorithm 1 by hand


@torch.no_grad()
def algorithm_1_by_hand(d: ImpressionDetector, images, g: float):
    """Four frames, l = 2, key frame first: keys 0 and 2, written out step by
    step from the paper (Algorithm 1, Eq. 2-4), the quality-net softmax as
    exponentials."""
    q = d.fusion.quality

    def n_q(x):
        return q.conv3(torch.relu(q.conv2(torch.relu(q.conv1(x)))))

    f0 = d.features(images[0])
    task0 = imp0 = f0  # the first segment: f_imp = f_task = f
    det = {0: d.detect(task0, images[0]), 1: d.detect(d.propagate(task0, images[1], images[0]), images[1])}
    f2 = d.features(images[2])
    imp_warped = d.propagate(imp0, images[2], images[0])
    e_imp, e_f = torch.exp(n_q(imp_warped)), torch.exp(n_q(f2))
    w = e_f / (e_f + e_imp)
    task2 = (1 - w) * imp_warped + w * f2
    det[2] = d.detect(task2, images[2])
    det[3] = d.detect(d.propagate(task2, images[3], images[2]), images[3])
    imp2 = (1 - g) * f2 + g * task2
    return det, imp2, float(w.std())


@pytest.mark.parametrize("backend_name", ["torch", "onnxruntime"])
def test_pipeline_equals_algorithm_1_written_by_hand(bundles, detectors, backends, backend_name):
    d = detectors["impression_small"]
    images = video(d, 4, seed=3)
    want, _, w_spread = algorithm_1_by_hand(d, images, 0.5)
    assert w_spread > 0.01  # the fusion weights really vary per position
    stream = create_pipeline(backends["impression_small", backend_name], key_interval=2, key_placement="first", memory_gate=0.5).stream()
    results = run_stream(stream, images)
    assert [(r.index, r.stage) for r in results] == [(0, "key"), (1, "nonkey"), (2, "key"), (3, "nonkey")]
    for r in results:
        # The hand-written loop rounds differently from the graph (exp ratio vs softmax): close, not equal.
        assert_close_detections([t.numpy() for t in want[r.index]], [r.detections[k] for k in DETECTIONS], d, exact=False)
    # The carried impression is Eq. 4's.
    _, imp2, _ = algorithm_1_by_hand(d, images, 0.5)
    np.testing.assert_allclose(backends["impression_small", backend_name].to_numpy(stream._state["impression"]), imp2.numpy(), atol=2e-4, rtol=1e-3)


# Key frames by hand: (length, l, placement) → key frame indices.
KEY_TABLE = [
    (7, 10, "middle", [5]),  # shorter than one segment but reaching frame l // 2: that one (decidable online)
    (4, 10, "middle", [2]),  # not reaching it: its own middle frame, 4 // 2
    (7, 10, "first", [0]),
    (12, 5, "middle", [2, 7, 11]),  # the 2-frame tail's key is its second frame (2 // 2)
    (12, 4, "first", [0, 4, 8]),
    (9, 4, "middle", [2, 6, 8]),  # a 1-frame tail is its own key frame
    (5, 1, "middle", [0, 1, 2, 3, 4]),  # l = 1: every frame a key frame
    (6, 3, "middle", [1, 4]),
]


@pytest.mark.parametrize("length, interval, placement, keys", KEY_TABLE)
def test_key_frames_by_hand(detectors, backends, length, interval, placement, keys):
    d = detectors["dff_small"]
    images = video(d, length, seed=4)
    stream = create_pipeline(backends["dff_small", "torch"], key_interval=interval, key_placement=placement).stream()
    results = run_stream(stream, images)
    assert [r.index for r in results] == list(range(length))
    assert [r.index for r in results if r.stage == "key"] == keys


def test_middle_placement_latency(detectors, backends):
    d = detectors["impression_small"]
    stream = create_pipeline(backends["impression_small", "torch"], key_interval=6, key_placement="middle").stream()
    ready = [[r.index for r in stream.push(i, im.numpy())] for i, im in enumerate(video(d, 8))]
    assert ready == [[], [], [], [0, 1, 2, 3], [4], [5], [], []]
    assert [r.index for r in stream.flush()] == [6, 7]


# ------------------------------------------------------------ DFF


@pytest.mark.parametrize("backend_name", ["torch", "onnxruntime"])
@pytest.mark.parametrize("placement", ["first", "middle"])
def test_dff_pipeline_equals_whole_video_reference(detectors, backends, backend_name, placement):
    d = detectors["dff_small"]
    images = video(d, 9, seed=5)
    schedule = {"key_interval": 4, "key_placement": placement, "memory_gate": 1.0}
    reference = method.METHOD.video_reference(d, images, schedule)
    results = run_stream(create_pipeline(backends["dff_small", backend_name], **schedule).stream(), images)
    assert [r.index for r in results] == list(range(9))
    for r in results:
        assert_close_detections([t.numpy() for t in reference[r.index]], [r.detections[k] for k in DETECTIONS], d, backend_name == "torch")


@torch.no_grad()
def test_dff_nonkey_frame_is_the_key_feature_warped(detectors):
    """DFF by hand: a non-key frame's detections are N_task on the key
    frame's N_feat warped by the flow from the key frame, with no scale map
    and no fusion."""
    d = detectors["dff_small"]
    images = video(d, 3, seed=6)
    reference = method.detect_video_reference(d, images, 3, "first", 1.0)
    feature = d.detector.neck(d.detector.backbone(images[0]))
    flow = d.motion(torch.cat([images[2], images[0]], dim=1))
    flow = torch.nn.functional.interpolate(flow, scale_factor=1 / 16, mode="bilinear", align_corners=False) / 16
    _, _, h, w = feature.shape
    gx = (torch.arange(w).view(1, 1, w) + flow[:, 0]) / w * 2 - 1
    gy = (torch.arange(h).view(1, h, 1) + flow[:, 1]) / h * 2 - 1
    warped = torch.nn.functional.grid_sample(feature, torch.stack((gx, gy), -1), padding_mode="border", align_corners=True)
    for got, want in zip(reference[2], d.detect(warped, images[2])):
        torch.testing.assert_close(got, want)


def test_memory_gate(detectors, backends, bundles):
    d = detectors["impression_small"]
    images = video(d, 7, seed=7)
    runs = {}
    for g in (1.0, 0.0):
        stream = create_pipeline(backends["impression_small", "torch"], key_interval=2, key_placement="first", memory_gate=g).stream()
        runs[g] = {r.index: r.detections["scores"] for r in run_stream(stream, images)}
    # g shapes the impression after the second key frame: frames of the third segment on differ.
    for i in range(4):
        np.testing.assert_array_equal(runs[1.0][i], runs[0.0][i])
    assert any(not np.array_equal(runs[1.0][i], runs[0.0][i]) for i in (4, 5, 6))
    with pytest.raises(ValueError, match="memory_gate must be <= 1.0"):
        create_pipeline(backends["impression_small", "torch"], memory_gate=1.5)
    with pytest.raises(ValueError, match="no impression"):
        create_pipeline(backends["dff_small", "torch"], memory_gate=0.5)
    assert bundles["impression_small"].manifest.schedule["memory_gate"] == 0.8


def test_manifest_state(bundles):
    imp = {s.name: s for s in bundles["impression_small"].manifest.state}
    assert set(imp) == {"key_image", "task_feature", "impression"}
    assert imp["key_image"].source == "key.key_image_out"
    assert sorted(imp["key_image"].targets) == ["key.prev_key_image", "nonkey.key_image"]
    assert imp["impression"].targets == ["key.impression_in"] and imp["impression"].shape == [1, 64, "h", "w"]
    dff = {s.name: s for s in bundles["dff_small"].manifest.state}
    assert set(dff) == {"key_image", "task_feature"}
    assert [t.name for t in bundles["dff_small"].manifest.stages["key"].inputs] == ["image"]


# ------------------------------------------------------------ mmtracking DFF checkpoints

STAGE_BLOCKS = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def upstream_dff_shapes(depth: int, neck: int, rpn_mid: int, anchors: int, fc: int, flow: tuple, flow_deconv: tuple) -> dict:
    """Key → shape of an mmtracking DFF checkpoint, written from mmtracking's
    and mmdet's module definitions: ``detector.`` ResNet (out_indices (3,),
    torchvision naming), ChannelMapper (ConvModule → ``.conv``), RPNHead,
    Shared2FCBBoxHead (31 classes, class-specific deltas); ``motion.``
    FlowNetSimple (arch_setting: conv kernels 7,5,5,3,3,3 with 1,1,2,2,2,2
    convs and the group-3 3x3 override; biased encoder convs, bias-free
    deconvs and flow predictors)."""
    s = {"backbone.conv1.weight": [64, 3, 7, 7]}

    def bn(p, c):
        s.update({f"{p}.{n}": [c] for n in ("weight", "bias", "running_mean", "running_var")})
        s[f"{p}.num_batches_tracked"] = []

    bn("backbone.bn1", 64)
    bottleneck, in_ch = depth >= 50, 64
    for stage, count in enumerate(STAGE_BLOCKS[depth], start=1):
        planes = 64 * 2 ** (stage - 1)
        out = planes * (4 if bottleneck else 1)
        for b in range(count):
            p = f"backbone.layer{stage}.{b}"
            convs = [[planes, in_ch, 1, 1], [planes, planes, 3, 3], [out, planes, 1, 1]] if bottleneck else [[planes, in_ch, 3, 3], [planes, planes, 3, 3]]
            for i, shape in enumerate(convs, start=1):
                s[f"{p}.conv{i}.weight"] = shape
                bn(f"{p}.bn{i}", shape[0])
            if b == 0 and (stage > 1 or in_ch != out):
                s[f"{p}.downsample.0.weight"] = [out, in_ch, 1, 1]
                bn(f"{p}.downsample.1", out)
            in_ch = out
    s["neck.convs.0.conv.weight"], s["neck.convs.0.conv.bias"] = [neck, in_ch, 3, 3], [neck]
    s["rpn_head.rpn_conv.weight"], s["rpn_head.rpn_conv.bias"] = [rpn_mid, neck, 3, 3], [rpn_mid]
    s["rpn_head.rpn_cls.weight"], s["rpn_head.rpn_cls.bias"] = [anchors, rpn_mid, 1, 1], [anchors]
    s["rpn_head.rpn_reg.weight"], s["rpn_head.rpn_reg.bias"] = [4 * anchors, rpn_mid, 1, 1], [4 * anchors]
    h = "roi_head.bbox_head"
    s[f"{h}.shared_fcs.0.weight"], s[f"{h}.shared_fcs.0.bias"] = [fc, neck * 49], [fc]
    s[f"{h}.shared_fcs.1.weight"], s[f"{h}.shared_fcs.1.bias"] = [fc, fc], [fc]
    s[f"{h}.fc_cls.weight"], s[f"{h}.fc_cls.bias"] = [31, fc], [31]
    s[f"{h}.fc_reg.weight"], s[f"{h}.fc_reg.bias"] = [120, fc], [120]
    shapes = {"detector." + k: v for k, v in s.items()}

    m, chans = {}, (6,) + tuple(flow)
    for i, (kernel, n) in enumerate(zip((7, 5, 5, 3, 3, 3), (1, 1, 2, 2, 2, 2))):
        for j in range(n):
            k = 3 if (i == 2 and j == 1) else kernel
            m[f"conv{i + 1}.{j}.conv.weight"] = [chans[i + 1], chans[i + 1] if j else chans[i], k, k]
            m[f"conv{i + 1}.{j}.conv.bias"] = [chans[i + 1]]
    top = flow[5]
    for step, level in enumerate((5, 4, 3, 2)):
        m[f"deconv{level}.conv.weight"] = [top, flow_deconv[step], 4, 4]
        m[f"predict_flow{level + 1}.conv.weight"] = [2, top, 3, 3]
        m[f"upsample_flow{level}.conv.weight"] = [2, 2, 4, 4]
        top = flow[level - 1] + flow_deconv[step] + 2
    m["predict_flow.conv.weight"] = [2, top, 3, 3]
    shapes.update({"motion." + k: v for k, v in m.items()})
    return shapes


def fake_checkpoint(shapes: dict, path, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    # One random number per tensor, broadcast: distinct per key and a tiny file even for R-101.
    state = {k: torch.zeros((), dtype=torch.long) if k.endswith("num_batches_tracked") else torch.randn(1, generator=g).expand(v) for k, v in shapes.items()}
    torch.save({"meta": {"CLASSES": ["airplane"] * 30, "epoch": 7}, "state_dict": state}, path)
    return state


SMALL = dict(depth=18, neck=32, rpn_mid=32, anchors=9, fc=64, flow=(8, 16, 16, 32, 32, 64), flow_deconv=(32, 16, 8, 8))
FULL = dict(neck=512, rpn_mid=512, anchors=12, fc=1024, flow=(64, 128, 256, 512, 512, 1024), flow_deconv=(512, 256, 128, 64))


def test_upstream_key_counts_match_the_model_zoo():
    # FACTS: mmtracking's DFF R-101 checkpoint has 673 keys, R-50 367 (33 of them motion.*).
    assert len(upstream_dff_shapes(101, **FULL)) == 673
    assert len(upstream_dff_shapes(50, **FULL)) == 367
    assert len([k for k in upstream_dff_shapes(50, **FULL) if k.startswith("motion.")]) == 33


@pytest.mark.parametrize("depth, name", [(18, "dff_small"), (50, "dff_r50_dc5"), (101, None)])
def test_mmtracking_dff_checkpoint_loads_every_key(tmp_path, depth, name):
    shapes = upstream_dff_shapes(**SMALL) if depth == 18 else upstream_dff_shapes(depth, **FULL)
    path = tmp_path / "dff.pth"
    state = fake_checkpoint(shapes, path, seed=depth)
    cfg, detector = method.METHOD.load_detector(name, checkpoint=path)
    assert cfg.name == (name or "dff_r101_dc5")  # R-101 recognised by its layer3 depth
    own = detector.state_dict()
    for key, value in state.items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(own[key], value), key
    if depth == 101:
        assert abs(sum(p.numel() for p in detector.parameters()) / 1e6 - 120) < 1  # FACTS: ≈120M


def test_corrupted_dff_checkpoint_names_every_bad_key(tmp_path):
    shapes = upstream_dff_shapes(**SMALL)
    del shapes["motion.predict_flow4.conv.weight"]
    shapes["detector.roi_head.bbox_head.shared_fcs.2.weight"] = [64, 64]
    shapes["detector.roi_head.bbox_head.fc_cls.weight"] = [30, 64]  # background dropped
    path = tmp_path / "bad.pth"
    fake_checkpoint(shapes, path)
    with pytest.raises(CheckpointError) as err:
        method.METHOD.load_detector("dff_small", checkpoint=path)
    text = str(err.value)
    assert "1 missing: motion.predict_flow4.conv.weight" in text
    assert "1 unexpected: detector.roi_head.bbox_head.shared_fcs.2.weight" in text
    assert "detector.roi_head.bbox_head.fc_cls.weight (expected [31, 64], got [30, 64])" in text


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(moving_shapes_clip(num_frames=6, height=96, width=128), tmp_path_factory.mktemp("clip") / "clip.mp4")


def test_cli_export_and_run_a_dff_checkpoint(tmp_path, clip, capsys):
    path = tmp_path / "dff.pth"
    state = fake_checkpoint(upstream_dff_shapes(**SMALL), path, seed=3)
    out = tmp_path / "bundle"
    code = cli_main(["export", "--method", "impression", "--config", "dff_small", "--checkpoint", str(path), "--out", str(out), "--no-verify", "--precisions", "fp32"])
    assert code == 0, capsys.readouterr()
    _, loaded = method.METHOD.load_detector(checkpoint=out / "model.ckpt")
    assert torch.equal(loaded.state_dict()["motion.conv1.0.conv.weight"], state["motion.conv1.0.conv.weight"])
    code = cli_main(["run", str(out), str(clip), "--backend", "onnxruntime", "--out", str(tmp_path / "run"), "--outputs", "jsonl", "--no-progress"])
    text = capsys.readouterr().out
    assert code == 0, text
    lines = [json.loads(line) for line in (tmp_path / "run" / "detections.jsonl").read_text().splitlines()]
    assert [line["stage"] for line in lines] == ["key"] + ["nonkey"] * 5  # key_interval 10, first


# ------------------------------------------------------------ CLI, demo, precision


def test_cli_export_run_and_demo(tmp_path, clip, capsys):
    out = tmp_path / "impression"
    assert cli_main(["export", "--method", "impression", "--config", "impression_small", "--out", str(out), "--precisions", "fp32,fp16"]) == 0
    capsys.readouterr()
    for backend in ("torch", "onnxruntime"):
        code = cli_main(["run", str(out), str(clip), "--backend", backend, "--out", str(tmp_path / backend), "--outputs", "jsonl", "--no-progress", "--memory-gate", "0.5", "--key-interval", "4"])
        text = capsys.readouterr().out
        assert code == 0, text
        stages = [json.loads(line)["stage"] for line in (tmp_path / backend / "detections.jsonl").read_text().splitlines()]
        assert stages == ["nonkey", "nonkey", "key", "nonkey", "nonkey", "key"]  # l = 4, middle: keys 2 and 5 (tail of 2)
    code = cli_main(["run", str(out), str(clip), "--out", str(tmp_path / "bad"), "--memory-gate", "2", "--no-progress"])
    captured = capsys.readouterr()
    assert code != 0 and "memory_gate must be <= 1.0" in captured.err and "Traceback" not in captured.err
    assert not (tmp_path / "bad" / "detections.jsonl").exists()
    code = cli_main(["demo", "--method", "impression", "--out", str(tmp_path / "demo"), "--frames", "12"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "impression" in text


def test_fp16_and_int8_variants_track_fp32(tmp_path, clip):
    """Variants run the whole schedule, and the carried state of the key
    stage (f_task, the impression) stays near FP32's on real recorded inputs."""
    import onnxruntime as ort

    from vidtrt.calibration.calibrate import calibrate_bundle
    from vidtrt.calibration.capture import RecordingBackend
    from vidtrt.core.bundle import load_bundle
    from vidtrt.export.precision import write_fp16_variants
    from vidtrt.runtime.runner import run_video

    bundle = export_bundle("impression", tmp_path / "b", config_name="impression_small", log=lambda _: None)
    write_fp16_variants(bundle, log=lambda _: None)
    calibrate_bundle(bundle, [clip], max_samples=4, progress=False, log=lambda _: None)
    bundle = load_bundle(bundle.directory)
    assert set(bundle.manifest.variants["int8"]["calibration"]["samples"]) == {"key", "nonkey", "perframe"}
    for precision in ("fp16", "int8"):
        summary = run_video(bundle, clip, backend_options={"precision": precision}, outputs=(), progress=False)
        assert summary.frames == 6
    recorder = RecordingBackend(create_backend("onnxruntime", bundle))
    run_video(bundle, clip, backend=recorder, outputs=(), progress=False, pipeline_options={"key_interval": 2})
    feed = recorder.records["key"][-1]
    assert float(feed["has_state"][0]) == 1.0  # a key frame with an impression to fuse
    outs = {}
    for precision in ("fp32", "fp16", "int8"):
        session = ort.InferenceSession(str(bundle.stage_file("key", precision)), providers=["CPUExecutionProvider"])
        outs[precision] = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
    # INT8: 4 calibration samples of seeded weights through a 16-channel stem (impression_small).
    for precision, cosine in (("fp16", 0.9999), ("int8", 0.93)):
        for name in ("task_feature_out", "impression_out"):
            a, b = outs["fp32"][name].ravel(), outs[precision][name].ravel()
            similarity = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
            assert similarity > cosine, (precision, name, similarity)


def test_memory_gate_refused_either_side_of_a_dff_bundles_own(bundles, backends, monkeypatch):
    """A bundle without an impression refuses any gate but its own, above or
    below it. dff_small's is 1.0, the largest allowed; a DFF bundle exported
    with 0.5 stands in for one whose gate has room above."""
    backend = backends["dff_small", "torch"]
    assert backend.bundle.manifest.schedule["memory_gate"] == 1.0
    monkeypatch.setitem(backend.bundle.manifest.schedule, "memory_gate", 0.5)
    for gate in (0.0, 1.0):
        with pytest.raises(ValueError, match="no impression"):
            create_pipeline(backend, memory_gate=gate)
    assert create_pipeline(backend, memory_gate=0.5).memory_gate == 0.5


def test_key_stage_gets_has_state_exactly_as_documented(detectors, backends):
    """``has_state`` is 0.0 on a video's first key frame and 1.0 after (the key
    stage's interface; the graph thresholds it at 0.5)."""
    from vidtrt.calibration.capture import RecordingBackend

    recording = RecordingBackend(backends["impression_small", "torch"])
    stream = create_pipeline(recording, key_interval=2, key_placement="first").stream()
    run_stream(stream, video(detectors["impression_small"], 5))  # key frames 0, 2, 4
    stream.reset()
    run_stream(stream, video(detectors["impression_small"], 3, seed=1))  # a new video: key frames 0, 2
    assert [r["has_state"].tolist() for r in recording.records["key"]] == [[0.0], [1.0], [1.0], [0.0], [1.0]]
