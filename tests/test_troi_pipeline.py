"""Temporal RoI Align end to end: bundle export, offline and online pipelines
on the torch and onnxruntime backends against the whole-video reference, and
the import of mmtracking checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidtrt.cli import main as cli_main
from vidtrt.export.exporter import export_bundle
from vidtrt.methods import get_method
from vidtrt.methods import troi as method
from vidtrt.methods.common import sample_image
from vidtrt.models.checkpoint import CheckpointError
from vidtrt.models.resnet import STAGE_BLOCKS
from vidtrt.models.troi import TroiDetector
from vidtrt.methods.troi import adaptive_stride_support, online_support
from vidtrt.models.troi_checkpoint import load_mmtracking_checkpoint, read_mmtracking_checkpoint
from vidtrt.runtime.backends import create_backend
from vidtrt.core.compare import compare_detections
from vidtrt.runtime.pipelines import create_pipeline
from vidtrt.runtime.synthetic import moving_shapes_clip, write_clip

DETECTIONS = ("boxes", "scores", "labels", "valid")
T = 3  # troi_small: num_support
STRIDE = 2  # troi_small: online_stride


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return export_bundle("troi", tmp_path_factory.mktemp("troi") / "bundle", config_name="troi_small", log=lambda _: None)


@pytest.fixture(scope="module")
def detector(bundle):
    return method.METHOD.load_detector(checkpoint=bundle.path(bundle.manifest.checkpoint))[1]


@pytest.fixture(scope="module")
def backends(bundle):
    return {name: create_backend(name, bundle) for name in ("torch", "onnxruntime")}


def run(stream, images):
    results = []
    for i, image in enumerate(images):
        results += stream.push(i, image.numpy())
    return results + stream.flush()


@pytest.mark.parametrize("backend_name", ["torch", "onnxruntime"])
@pytest.mark.parametrize("mode", ["offline", "online"])
@pytest.mark.parametrize("length", [6, 2])  # longer than T (spread support), shorter (repeated / masked support)
def test_pipeline_equals_whole_video_reference(backends, detector, backend_name, mode, length):
    images = [sample_image(detector.cfg, seed=i) for i in range(length)]
    reference = method.detect_video_reference(detector, images, T, mode)
    backend = backends[backend_name]
    backend.reset_timings()
    results = run(create_pipeline(backend, mode=mode).stream(), images)
    assert [r.index for r in results] == list(range(length))
    cfg = detector.cfg.detection
    for r in results:
        want = [t.numpy() for t in reference[r.index]]
        got = [r.detections[k] for k in DETECTIONS]
        assert want[3].any()
        if backend_name == "torch":
            for w, g in zip(want, got):
                np.testing.assert_array_equal(w, g)
        else:
            cmp = compare_detections(want, got, cfg.max_detections, cfg.nms_iou)
            assert cmp.ok and cmp.max_box_error < 0.05 and cmp.max_score_error < 1e-4, (r.index, cmp)
    calls = {k: len(v) for k, v in backend.timings.items()}
    assert calls["frame"] == length  # once per frame, although support frames are used by every target
    assert calls["head"] == length


def test_online_uses_past_frames_only(detector):
    """A later frame must not change an earlier frame's online detections, and
    the support set is what online_support says (changing a frame outside it
    changes nothing)."""
    images = [sample_image(detector.cfg, seed=i) for i in range(6)]
    full = method.detect_video_reference(detector, images, T, "online")
    prefix = method.detect_video_reference(detector, images[:4], T, "online")
    for a, b in zip(full[:4], prefix):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=0, atol=0)
    changed = list(images)
    changed[3] = sample_image(detector.cfg, seed=99)  # odd: never a support frame with stride 2
    other = method.detect_video_reference(detector, changed, T, "online")
    for t in (4, 5):
        torch.testing.assert_close(other[t][1], full[t][1], rtol=0, atol=0)
    changed[2] = sample_image(detector.cfg, seed=98)  # a support frame of frames 3..5
    assert not torch.equal(method.detect_video_reference(detector, changed, T, "online")[4][1], full[4][1])


def test_support_selection():
    # mmtracking: round(i · (L − 1) / (N − 1)), Python's round (half to even)
    assert adaptive_stride_support(100, 14) == [round(i * 99 / 13) for i in range(14)]
    assert adaptive_stride_support(27, 14) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26]
    assert adaptive_stride_support(4, 3) == [0, 2, 3]  # 1.5 → 2 (half to even), 3.0
    assert adaptive_stride_support(2, 3) == [0, 0, 1]  # 0.5 → 0: a short video repeats frames
    assert adaptive_stride_support(1, 14) == [0] * 14
    assert online_support(0, 3, 2) == []
    assert online_support(2, 3, 2) == [0]
    assert online_support(7, 3, 2) == [2, 4, 6]
    assert online_support(8, 3, 2) == [2, 4, 6]  # the target is not its own support: it is always added
    assert online_support(25, 14, 10) == [0, 10, 20]


def test_latency_of_each_mode(backends, detector):
    images = [sample_image(detector.cfg, seed=i) for i in range(3)]
    offline = create_pipeline(backends["torch"], mode="offline").stream()
    assert [offline.push(i, im.numpy()) for i, im in enumerate(images)] == [[], [], []]
    assert [r.index for r in offline.flush()] == [0, 1, 2]
    online = create_pipeline(backends["torch"], mode="online").stream()
    assert [[r.index for r in online.push(i, im.numpy())] for i, im in enumerate(images)] == [[0], [1], [2]]
    assert online.flush() == []


def test_manifest_and_bad_options(bundle, backends):
    m = bundle.manifest
    assert set(m.stages) == {"frame", "head"} and m.state == []
    assert m.schedule == {"num_support": T, "mode": "offline", "online_stride": STRIDE}
    head = m.stages["head"]
    assert [t.name for t in head.inputs] == [
        "image_size", "feature", "proposals", "proposal_valid", "roi_feats", "ref_keys", "ref_values",
        "support_features", "support_ref_keys", "support_ref_values", "support_proposal_valid", "support_valid",
    ]
    assert head.input("support_features").shape == [T, 32, "h", "w"]
    # 3 shared FCs of 64 channels, 12 proposals: the SELSA references' projections, not their RoI features
    assert head.input("support_ref_keys").shape == head.input("support_ref_values").shape == [T, 3, 12, 64]
    assert head.input("ref_keys").shape == [3, 12, 64]
    assert [t.name for t in m.stages["frame"].outputs][-2:] == ["ref_keys", "ref_values"]
    with pytest.raises(ValueError, match="exported for T = 3"):
        create_pipeline(backends["torch"], num_support=4)
    with pytest.raises(ValueError, match="mode must be one of"):
        create_pipeline(backends["torch"], mode="multi")
    with pytest.raises(ValueError, match="troi pipelines take mode, num_support, stride; not key_interval"):
        create_pipeline(backends["torch"], key_interval=3)
    with pytest.raises(CheckpointError, match="is a 'troi' checkpoint, not 'mfsa'"):
        from vidtrt.methods import mfsa

        mfsa.METHOD.load_detector(checkpoint=bundle.path("model.ckpt"))


# ------------------------------------------------------------ mmtracking checkpoints


def _bn(prefix: str, channels: int) -> dict:
    shapes = {f"{prefix}.{n}": [channels] for n in ("weight", "bias", "running_mean", "running_var")}
    shapes[f"{prefix}.num_batches_tracked"] = []
    return shapes


def upstream_shapes(depth: int, neck: int, rpn_mid: int, anchors: int, fc: int, num_shared_fcs: int = 3) -> dict:
    """Key → shape of an mmtracking SELSA + TRoI checkpoint, written from the
    mmdet/mmtracking module definitions (ResNet with out_indices=(3,) in
    torchvision naming, ChannelMapper, RPNHead, TemporalRoIAlign,
    SelsaBBoxHead with 31 classes and class-specific regression)."""
    s = {"backbone.conv1.weight": [64, 3, 7, 7], **_bn("backbone.bn1", 64)}
    bottleneck = depth >= 50
    in_ch = 64
    for stage, count in enumerate(STAGE_BLOCKS[depth], start=1):
        planes = 64 * 2 ** (stage - 1)
        out = planes * (4 if bottleneck else 1)
        for b in range(count):
            p = f"backbone.layer{stage}.{b}"
            if bottleneck:
                convs = {"conv1": [planes, in_ch, 1, 1], "conv2": [planes, planes, 3, 3], "conv3": [out, planes, 1, 1]}
            else:
                convs = {"conv1": [planes, in_ch, 3, 3], "conv2": [planes, planes, 3, 3]}
            for i, (name, shape) in enumerate(convs.items(), start=1):
                s[f"{p}.{name}.weight"] = shape
                s.update(_bn(f"{p}.bn{i}", shape[0]))
            if b == 0 and (stage > 1 or in_ch != out):
                s[f"{p}.downsample.0.weight"] = [out, in_ch, 1, 1]
                s.update(_bn(f"{p}.downsample.1", out))
            in_ch = out
    s["neck.convs.0.conv.weight"], s["neck.convs.0.conv.bias"] = [neck, in_ch, 3, 3], [neck]
    s["rpn_head.rpn_conv.weight"], s["rpn_head.rpn_conv.bias"] = [rpn_mid, neck, 3, 3], [rpn_mid]
    s["rpn_head.rpn_cls.weight"], s["rpn_head.rpn_cls.bias"] = [anchors, rpn_mid, 1, 1], [anchors]
    s["rpn_head.rpn_reg.weight"], s["rpn_head.rpn_reg.bias"] = [4 * anchors, rpn_mid, 1, 1], [4 * anchors]
    e = "roi_head.bbox_roi_extractor.embed_network.conv"
    s[f"{e}.weight"], s[f"{e}.bias"] = [neck, neck, 3, 3], [neck]
    h = "roi_head.bbox_head"
    for i in range(num_shared_fcs):
        s[f"{h}.shared_fcs.{i}.weight"] = [fc, neck * 49 if i == 0 else fc]
        s[f"{h}.shared_fcs.{i}.bias"] = [fc]
        for name in ("fc_embed", "ref_fc_embed", "fc", "ref_fc"):
            s[f"{h}.aggregator.{i}.{name}.weight"], s[f"{h}.aggregator.{i}.{name}.bias"] = [fc, fc], [fc]
    s[f"{h}.fc_cls.weight"], s[f"{h}.fc_cls.bias"] = [31, fc], [31]
    s[f"{h}.fc_reg.weight"], s[f"{h}.fc_reg.bias"] = [120, fc], [120]
    return {"detector." + k: v for k, v in s.items()}


def _fake_checkpoint(shapes: dict, path, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    # One random number per tensor, broadcast (stride 0): distinct per key, and a tiny file even for R-50.
    state = {
        k: torch.zeros((), dtype=torch.long) if k.endswith("num_batches_tracked") else torch.randn(1, generator=g).expand(v)
        for k, v in shapes.items()
    }
    torch.save({"meta": {"CLASSES": ["airplane"] * 30, "epoch": 7}, "state_dict": state}, path)
    return state


SMALL_SHAPES = dict(depth=18, neck=32, rpn_mid=32, anchors=9, fc=64)


@pytest.mark.parametrize("name, shapes", [("troi_small", SMALL_SHAPES), ("selsa_troi_r50_dc5", dict(depth=50, neck=512, rpn_mid=512, anchors=12, fc=1024))])
def test_mmtracking_checkpoint_maps_every_key(tmp_path, name, shapes):
    path = tmp_path / "mmtrack.pth"
    state = _fake_checkpoint(upstream_shapes(**shapes), path)
    # Upstream ResNets are 64 wide; loading through the method reads that from the checkpoint.
    detector = TroiDetector(get_method("troi").config(name, {"backbone_width": 64})).eval()
    load_mmtracking_checkpoint(detector, read_mmtracking_checkpoint(path), source=str(path))
    own = detector.state_dict()
    assert get_method("troi").load_detector(name, checkpoint=path)[0].backbone_width == 64
    for key, value in state.items():
        ours = key.removeprefix("detector.")
        if "num_batches_tracked" not in key:
            assert torch.equal(own[ours], value), key


def test_mmtracking_checkpoint_mismatch_names_every_key(tmp_path):
    shapes = upstream_shapes(**SMALL_SHAPES)
    del shapes["detector.roi_head.bbox_head.aggregator.1.ref_fc.bias"]
    shapes["detector.roi_head.bbox_head.shared_fcs.3.weight"] = [64, 64]
    shapes["detector.rpn_head.rpn_cls.weight"] = [3, 32, 1, 1]  # 3 anchors instead of 9
    path = tmp_path / "bad.pth"
    _fake_checkpoint(shapes, path)
    with pytest.raises(CheckpointError) as err:
        method.METHOD.load_detector("troi_small", checkpoint=path)
    text = str(err.value)
    assert "1 missing: roi_head.bbox_head.aggregator.1.ref_fc.bias" in text
    assert "1 unexpected: roi_head.bbox_head.shared_fcs.3.weight" in text
    assert "rpn_head.rpn_cls.weight (expected [9, 32, 1, 1], got [3, 32, 1, 1])" in text


def test_cli_export_and_run_mmtracking_checkpoint(tmp_path, capsys):
    path = tmp_path / "mmtrack.pth"
    state = _fake_checkpoint(upstream_shapes(**SMALL_SHAPES), path, seed=3)
    out = tmp_path / "bundle"
    code = cli_main(["export", "--method", "troi", "--config", "troi_small", "--checkpoint", str(path), "--out", str(out), "--no-verify", "--precisions", "fp32"])
    assert code == 0, capsys.readouterr()
    _, loaded = method.METHOD.load_detector(checkpoint=out / "model.ckpt")
    assert torch.equal(loaded.state_dict()["roi_head.bbox_head.fc_cls.weight"], state["detector.roi_head.bbox_head.fc_cls.weight"])
    clip = write_clip(moving_shapes_clip(num_frames=4, height=96, width=128), tmp_path / "clip.mp4")
    for mode in ("online", "offline"):
        code = cli_main(["run", str(out), str(clip), "--backend", "torch", "--out", str(tmp_path / mode), "--mode", mode, "--outputs", "jsonl", "--no-progress"])
        text = capsys.readouterr().out
        assert code == 0, text
        assert "4 frames" in text and "head" in text
        assert len((tmp_path / mode / "detections.jsonl").read_text().splitlines()) == 4


def test_frames_in_order_and_an_empty_video(backends, detector):
    image = sample_image(detector.cfg, seed=0).numpy()
    for mode in ("offline", "online"):
        stream = create_pipeline(backends["torch"], mode=mode).stream()
        assert stream.flush() == []  # a video without frames
        stream.push(0, image)
        for index in (0, 2):  # again, and one skipped
            with pytest.raises(ValueError, match=r"in order 0, 1, 2, \.\.\.: expected 1, got"):
                stream.push(index, image)
        assert [r.index for r in stream.push(1, image) + stream.flush()] == ([0, 1] if mode == "offline" else [1])


def test_mode_compared_by_value(backends, detector):
    """The mode as read from a manifest or built at run time, not a literal."""
    image = sample_image(detector.cfg, seed=0).numpy()
    default = create_pipeline(backends["torch"])  # "offline" from the manifest's JSON
    built = create_pipeline(backends["torch"], mode="".join(["off", "line"]))
    for pipeline in (default, built):
        stream = pipeline.stream()
        assert stream.push(0, image) == [] and stream.push(1, image) == []  # offline waits for the end
        assert [r.index for r in stream.flush()] == [0, 1]
    assert [r.index for r in create_pipeline(backends["torch"], mode="".join(["on", "line"])).stream().push(0, image)] == [0]


def test_online_memory_keeps_only_the_last_t_support_frames(backends, detector):
    """Online mode runs in constant memory: frames whose index is a multiple of
    the stride enter the memory, and only the last T stay (by hand: T = 3,
    stride 2, frames 0..9 → 4, 6, 8)."""
    image = sample_image(detector.cfg, seed=0).numpy()
    stream = create_pipeline(backends["torch"], mode="online").stream()
    for i in range(10):
        stream.push(i, image)
    assert sorted(stream._memory) == [4, 6, 8]


def test_frame_order_check_past_the_small_int_cache(backends, detector):
    """Frame 300 of a video is accepted: indices are compared as numbers (CPython
    shares int objects only up to 256). Offline push only keeps the frame."""
    image = sample_image(detector.cfg, seed=0).numpy()
    stream = create_pipeline(backends["torch"], mode="offline").stream()
    for i in range(300):
        assert stream.push(i, image) == []
    stream.reset()
