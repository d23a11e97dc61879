"""MFSA end to end: bundle export, Multi-Focus and Single-Focus pipelines on
the torch and onnxruntime backends against the whole-video reference."""

from __future__ import annotations

import numpy as np
import pytest

from vidtrt.cli import main as cli_main
from vidtrt.export.exporter import export_bundle
from vidtrt.methods import mfsa as method
from vidtrt.methods.common import sample_image
from vidtrt.models.checkpoint import CheckpointError
from vidtrt.methods.mfsa import single_focus_window
from vidtrt.runtime.backends import create_backend
from vidtrt.core.compare import compare_detections
from vidtrt.runtime.pipelines import create_pipeline
from vidtrt.runtime.synthetic import moving_shapes_clip, write_clip

DETECTIONS = ("boxes", "scores", "labels", "valid")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return export_bundle("mfsa", tmp_path_factory.mktemp("mfsa") / "bundle", config_name="mfsa_small", log=lambda _: None)


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
@pytest.mark.parametrize("mode", ["multi", "single"])
@pytest.mark.parametrize("length", [7, 4, 2])  # K = 4: not a multiple, exactly one batch, shorter than K
def test_pipeline_equals_whole_video_reference(backends, detector, backend_name, mode, length):
    images = [sample_image(detector.cfg, seed=i) for i in range(length)]
    reference = method.detect_video_reference(detector, images, 4, mode)
    backend = backends[backend_name]
    backend.reset_timings()
    results = run(create_pipeline(backend, mode=mode).stream(), images)
    assert [r.index for r in results] == list(range(length))
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
    calls = {k: len(v) for k, v in backend.timings.items()}
    assert calls["frame"] == length  # the frame stage runs once per frame, never per use
    assert calls["batch"] == (-(-length // 4) if mode == "multi" else length)


def test_single_focus_window():
    assert single_focus_window(0, 10, 4) == [0, 1, 2, 3]
    assert single_focus_window(5, 10, 4) == [3, 4, 5, 6]
    assert single_focus_window(9, 10, 4) == [6, 7, 8, 9]
    assert single_focus_window(1, 2, 4) == [0, 1]
    assert single_focus_window(10, 21, 21) == list(range(21))


def test_latency_of_each_mode(backends, detector):
    images = [sample_image(detector.cfg, seed=i) for i in range(6)]
    multi = create_pipeline(backends["torch"], mode="multi").stream()
    ready = [[r.index for r in multi.push(i, im.numpy())] for i, im in enumerate(images)]
    assert ready == [[], [], [], [0, 1, 2, 3], [], []]
    assert [r.index for r in multi.flush()] == [4, 5]
    single = create_pipeline(backends["torch"], mode="single").stream()
    ready = [[r.index for r in single.push(i, im.numpy())] for i, im in enumerate(images)]
    # frame t waits for the last frame of its window, frames max(t − 2, 0) .. +3
    assert ready == [[], [], [], [0, 1, 2], [3], [4]]
    assert [r.index for r in single.flush()] == [5]


def test_manifest_and_bad_options(bundle, backends):
    m = bundle.manifest
    assert set(m.stages) == {"frame", "batch", "perframe"} and m.state == []
    assert m.schedule == {"batch_frames": 4, "mode": "multi"}
    batch = m.stages["batch"]
    assert [t.name for t in batch.inputs] == ["proposals", "proposal_valid", "regions", "image_size"]
    assert batch.input("regions").shape == [4, 16, 64]
    with pytest.raises(ValueError, match="exported for K = 4"):
        create_pipeline(backends["torch"], batch_frames=5)
    with pytest.raises(ValueError, match="mfsa pipelines take mode, batch_frames; not key_interval"):
        create_pipeline(backends["torch"], key_interval=3)
    with pytest.raises(CheckpointError, match="is a 'mfsa' checkpoint, not 'psla'"):
        from vidtrt.methods import psla

        psla.METHOD.load_detector(checkpoint=bundle.path("model.ckpt"))


def test_cli_run_single_focus(bundle, tmp_path, capsys):
    clip = write_clip(moving_shapes_clip(num_frames=5, height=96, width=128), tmp_path / "clip.mp4")
    code = cli_main(["run", str(bundle.directory), str(clip), "--out", str(tmp_path / "o"), "--mode", "single", "--outputs", "jsonl", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "5 frames" in out and "batch" in out
    assert len((tmp_path / "o" / "detections.jsonl").read_text().splitlines()) == 5


@pytest.mark.parametrize("residual", [True, False])
def test_head_reads_regions_plus_relation_or_relation_alone(residual):
    """What classification and regression read, against Eq. 1-3 written out
    in float64 here: R + Â·R with ``relation_residual`` (the default), Â·R
    alone without; Â = rownorm(A·A + A) over the valid regions, A_ij =
    max(0, cos(σ(R_i), φ(R_j))), σ and φ ReLU'd linear maps."""
    import dataclasses

    import torch

    cfg = dataclasses.replace(method.CONFIGS["mfsa_small"], relation_residual=residual)
    detector = method.MfsaDetector(cfg).eval()
    g = torch.Generator().manual_seed(3)
    regions = torch.rand(9, cfg.region_dim, generator=g)
    valid = torch.tensor([1, 1, 0, 1, 1, 1, 0, 1, 1], dtype=torch.bool)
    with torch.no_grad():
        got = detector.head_input(regions, valid).double()
        sigma = torch.relu(detector.sigma(regions)).double()
        phi = torch.relu(detector.phi(regions)).double()
    r = regions.double()
    n = len(r)
    a = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            if valid[i] and valid[j]:
                a[i, j] = max(0.0, float(sigma[i] @ phi[j] / (sigma[i].norm() * phi[j].norm())))
    b = a @ a + a
    refined = torch.zeros_like(r)
    for i in range(n):
        if b[i].sum() > 0:
            refined[i] = (b[i] / b[i].sum()) @ r
    want = r + refined if residual else refined
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5, rtol=0)
    assert cfg.relation_residual is residual and method.CONFIGS["mfsa_small"].relation_residual is True
