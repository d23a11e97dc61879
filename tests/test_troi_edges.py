"""Temporal RoI Align's edge semantics checked against mmtracking's code:
TAFA with no attention blocks (the averaging branch of mmtracking's
TemporalRoIAlign) and SELSA with no valid reference (mmtracking's
SelsaAggregator on an empty set of reference proposals), eager and in ONNX
Runtime."""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
import torch
from test_troi_pipeline import DETECTIONS, SMALL_SHAPES, _fake_checkpoint, run, upstream_shapes

from vidtrt.core.compare import compare_detections
from vidtrt.export.exporter import export_bundle
from vidtrt.export.onnx import export_module
from vidtrt.methods import get_method
from vidtrt.methods import troi as method
from vidtrt.methods.common import sample_image
from vidtrt.models.troi import SelsaAggregator, TemporalRoIAlign, TroiConfig, TroiDetector
from vidtrt.models.troi_checkpoint import load_mmtracking_checkpoint, read_mmtracking_checkpoint
from vidtrt.runtime.backends import create_backend
from vidtrt.runtime.pipelines import create_pipeline

T = 3  # troi_small's num_support


def averaged_config(**overrides) -> TroiConfig:
    return get_method("troi").config("troi_small", {"tafa_blocks": 0, **overrides})


# ------------------------------------------------------------ TAFA with tafa_blocks = 0


def test_config_accepts_zero_blocks_and_refuses_bad_ones():
    assert averaged_config().tafa_blocks == 0
    with pytest.raises(ValueError, match=r"tafa_blocks must be >= 0, got -1; 0 averages"):
        averaged_config(tafa_blocks=-1)
    with pytest.raises(ValueError, match=r"neck_channels \(32\) must divide by tafa_blocks \(5\)"):
        averaged_config(tafa_blocks=5)
    with pytest.raises(ValueError, match=r"selsa_blocks must be >= 1, got 0"):
        averaged_config(selsa_blocks=0)
    with pytest.raises(ValueError, match=r"fc_channels \(64\) must divide by selsa_blocks \(5\)"):
        averaged_config(selsa_blocks=5)


def averaged_naive(roi_feats, ms_feats, support_valid):
    """mmtracking's branch written out: the target's RoI features and the
    most similar RoI features of every reference frame that is there (a
    masked frame here is an absent one upstream), averaged frame by frame."""
    present = [roi_feats.double()] + [ms_feats[s].double() for s in range(len(support_valid)) if support_valid[s]]
    total = torch.zeros_like(present[0])
    for frame in present:
        total += frame
    return total / len(present)


@pytest.mark.parametrize("impl", ["reference", "native"])
@pytest.mark.parametrize("valid", [[True, True, True], [True, False, True], [False, False, False]])
def test_averaging_branch_is_the_mean_over_present_frames(impl, valid):
    g = torch.Generator().manual_seed(5)
    roi_feats = torch.randn(4, 8, 7, 7, generator=g)
    support_maps = torch.randn(3, 8, 6, 9, generator=g)
    support_valid = torch.tensor(valid)
    module = TemporalRoIAlign(8, top_k=2, blocks=0)
    assert not hasattr(module, "embed_network") and not list(module.parameters())
    got = module(roi_feats, support_maps, support_valid, impl=impl)
    from vidtrt.ops import most_similar_roi_align

    ms = most_similar_roi_align(roi_feats, support_maps, 2)
    torch.testing.assert_close(got.double(), averaged_naive(roi_feats, ms, valid), rtol=1e-6, atol=1e-6)
    if not any(valid):  # only the target: its own features
        torch.testing.assert_close(got, roi_feats, rtol=0, atol=0)


def test_detector_without_embed_network_loads_mmtracking_checkpoint(tmp_path):
    """An mmtracking checkpoint with num_temporal_attention_blocks = 0 has no
    embed_network weights; every key maps, none is missing."""
    shapes = upstream_shapes(**SMALL_SHAPES)
    for key in [k for k in shapes if ".embed_network." in k]:
        del shapes[key]
    path = tmp_path / "mmtrack_avg.pth"
    state = _fake_checkpoint(shapes, path)
    detector = TroiDetector(averaged_config(backbone_width=64)).eval()  # upstream ResNets are 64 wide
    load_mmtracking_checkpoint(detector, read_mmtracking_checkpoint(path), source=str(path))
    own = detector.state_dict()
    assert not any("embed_network" in k for k in own)
    for key, value in state.items():
        if "num_batches_tracked" not in key:
            assert torch.equal(own[key.removeprefix("detector.")], value), key


@pytest.fixture(scope="module")
def averaged_bundle(tmp_path_factory):
    """troi_small with tafa_blocks = 0, exported (verify=True compares every
    stage in ONNX Runtime with PyTorch on its samples and raises otherwise)."""
    out = tmp_path_factory.mktemp("troi_avg") / "bundle"
    return export_bundle("troi", out, config_name="troi_small", overrides={"tafa_blocks": 0}, log=lambda _: None)


def test_averaged_bundle_matches_whole_video_reference(averaged_bundle):
    _, detector = method.METHOD.load_detector(checkpoint=averaged_bundle.path(averaged_bundle.manifest.checkpoint))
    assert detector.cfg.tafa_blocks == 0
    head = averaged_bundle.path(averaged_bundle.manifest.stages["head"].file)
    assert "embed_network" not in head.read_bytes().decode("latin-1")
    images = [sample_image(detector.cfg, seed=i) for i in range(5)]
    cfg = detector.cfg.detection
    for mode in ("offline", "online"):  # online: the first targets have missing support frames
        reference = method.detect_video_reference(detector, images, T, mode)
        backend = create_backend("onnxruntime", averaged_bundle)
        results = run(create_pipeline(backend, mode=mode).stream(), images)
        assert [r.index for r in results] == list(range(len(images)))
        assert any(reference[r.index][3].any() for r in results)
        for r in results:
            want = [t.numpy() for t in reference[r.index]]
            got = [r.detections[k] for k in DETECTIONS]
            cmp = compare_detections(want, got, cfg.max_detections, cfg.nms_iou)
            assert cmp.ok and cmp.max_box_error < 0.05 and cmp.max_score_error < 1e-4, (mode, r.index, cmp)


def test_averaging_differs_from_attention():
    """The switch changes the model: with the same weights elsewhere, the
    averaged head features differ from the attended ones."""
    attend = method.METHOD.seeded_detector(get_method("troi").config("troi_small"))
    average = TroiDetector(averaged_config()).eval()
    missing, unexpected = average.load_state_dict(attend.state_dict(), strict=False)
    assert missing == [] and all("embed_network" in k for k in unexpected) and unexpected
    inputs = method.METHOD.stage_samples(attend)["head"]
    with torch.no_grad():
        a = attend.head_features(inputs[1], inputs[3], inputs[4], *inputs[5:])
        b = average.head_features(inputs[1], inputs[3], inputs[4], *inputs[5:])
    assert a.isfinite().all() and b.isfinite().all() and not torch.allclose(a, b)


# ------------------------------------------------------------ SELSA with no valid reference


def selsa_naive(aggregator: SelsaAggregator, x, ref_x):
    """mmtracking's SelsaAggregator over the references that are there, block
    by block in float64; for an empty set the softmax has nothing to weigh,
    the weighted sum is 0 and the result is fc(0)."""
    with torch.no_grad():
        return _selsa_naive(aggregator, x, ref_x)


def _selsa_naive(aggregator, x, ref_x):
    n, c = x.shape
    blocks = aggregator.blocks
    d = c // blocks
    x, ref_x = x.double(), ref_x.double()

    def linear(layer, t):
        return t @ layer.weight.double().T + layer.bias.double()

    q, k, v = linear(aggregator.fc_embed, x), linear(aggregator.ref_fc_embed, ref_x), linear(aggregator.ref_fc, ref_x)
    out = torch.zeros(n, c, dtype=torch.float64)
    for b in range(blocks):
        cols = slice(b * d, (b + 1) * d)
        for i in range(n):
            if len(ref_x) == 0:
                continue
            logits = torch.tensor([float(q[i, cols] @ k[j, cols]) / math.sqrt(d) for j in range(len(ref_x))])
            weights = torch.softmax(logits.double(), dim=0)
            out[i, cols] = (weights[:, None] * v[:, cols]).sum(dim=0)
    return linear(aggregator.fc, out)


@pytest.fixture(scope="module")
def aggregator():
    torch.manual_seed(0)
    module = SelsaAggregator(32, 4).eval()
    with torch.no_grad():
        module.fc.bias.normal_()  # so that fc(0) is not 0
    return module


def selsa_inputs(m: int = 6):
    g = torch.Generator().manual_seed(1)
    return torch.randn(5, 32, generator=g), torch.randn(m, 32, generator=g)


@pytest.mark.parametrize("mask", [[False] * 6, [True, False, True, False, False, True], [True] * 6])
def test_selsa_equals_upstream_over_present_references(aggregator, mask):
    x, ref_x = selsa_inputs()
    valid = torch.tensor(mask)
    with torch.no_grad():
        got = aggregator(x, ref_x, valid)
    assert got.isfinite().all()
    torch.testing.assert_close(got.double(), selsa_naive(aggregator, x, ref_x[valid]), rtol=1e-5, atol=1e-5)
    if not any(mask):
        torch.testing.assert_close(got, aggregator.fc.bias.expand(5, 32).detach(), rtol=0, atol=0)
        with torch.no_grad():  # the same as no reference at all
            torch.testing.assert_close(got, aggregator(x, ref_x[:0], valid[:0]), rtol=0, atol=0)


def test_selsa_all_masked_has_finite_gradients(aggregator):
    x, ref_x = selsa_inputs()
    x.requires_grad_()
    ref_x.requires_grad_()
    aggregator(x, ref_x, torch.zeros(6, dtype=torch.bool)).sum().backward()
    assert x.grad.isfinite().all() and ref_x.grad.isfinite().all()
    assert torch.equal(ref_x.grad, torch.zeros_like(ref_x.grad))  # an absent reference contributes nothing


def test_selsa_all_masked_in_onnx_runtime(aggregator, tmp_path):
    x, ref_x = selsa_inputs()
    path = tmp_path / "selsa.onnx"
    export_module(aggregator, (x, ref_x, torch.ones(6, dtype=torch.bool)), path, ["x", "ref_x", "ref_valid"], ["out"],
                  {"x": {0: "N"}, "ref_x": {0: "M"}, "ref_valid": {0: "M"}})  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for mask in ([False] * 6, [True, False, False, True, False, False]):
        valid = torch.tensor(mask)
        got = session.run(None, {"x": x.numpy(), "ref_x": ref_x.numpy(), "ref_valid": valid.numpy()})[0]
        with torch.no_grad():
            want = aggregator(x, ref_x, valid).numpy()
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


class HeadFeatures(torch.nn.Module):
    """The head stage up to the R-CNN features (TRoI + SELSA), where the NaN
    of an empty softmax used to appear; the detections mask it out."""

    def __init__(self, detector):
        super().__init__()
        self.detector = detector

    def forward(self, *inputs):
        return self.detector.head_features(*inputs)


@pytest.mark.parametrize("tafa_blocks", [4, 0])
def test_head_with_every_reference_masked(tafa_blocks, tmp_path):
    """Every support frame invalid, every support proposal and every target
    proposal masked: SELSA has no reference at all. Eager and ONNX Runtime
    give finite features, equal to each other and to the result with no
    support frames' data at all (zeros)."""
    detector = method.METHOD.seeded_detector(get_method("troi").config("troi_small", {"tafa_blocks": tafa_blocks}))
    sample = method.METHOD.stage_samples(detector)["head"]
    (feature, _, proposal_valid, roi_feats, ref_keys, ref_values,
     support_features, support_keys, support_values, support_pvalid, support_valid) = sample[1:]  # fmt: skip
    masked = (feature, torch.zeros_like(proposal_valid), roi_feats, ref_keys, ref_values, support_features, support_keys,
              support_values, torch.zeros_like(support_pvalid), torch.zeros_like(support_valid))  # fmt: skip
    module = HeadFeatures(detector).eval()
    with torch.no_grad():
        eager = module(*masked)
        zeroed = module(feature, masked[1], roi_feats, ref_keys, ref_values, torch.zeros_like(support_features),
                        torch.zeros_like(support_keys), torch.zeros_like(support_values), masked[8], masked[9])  # fmt: skip
    assert eager.isfinite().all()
    torch.testing.assert_close(eager, zeroed, rtol=1e-6, atol=1e-6)  # masked frames are read by nothing
    names = ["feature", "proposal_valid", "roi_feats", "ref_keys", "ref_values", "support_features", "support_ref_keys",
             "support_ref_values", "support_proposal_valid", "support_valid"]  # fmt: skip
    path = tmp_path / "head_features.onnx"
    export_module(module, sample[1:2] + sample[3:], path, names, ["features"], {"feature": {2: "h", 3: "w"},
                  "support_features": {2: "h", 3: "w"}})  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {n: t.numpy() for n, t in zip(names, masked)})[0]
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, eager.numpy(), rtol=1e-4, atol=1e-4)


def test_cached_projections_equal_the_stacked_references():
    """The head reads each support frame's SELSA projections computed once by
    its frame stage, [T, L, P, C], instead of running the shared FCs and the
    aggregators' reference FCs over all (T + 1)·P reference RoIs for every
    target. Same features as SELSA over the stacked RoI features (mmtracking's
    formulation) up to GEMM blocking, and masked support frames read nothing."""
    detector = method.METHOD.seeded_detector(get_method("troi").config("troi_small"))
    with torch.no_grad():
        outs = [detector.frame(sample_image(detector.cfg, seed=i)) for i in range(3)]
        target, supports = outs[2], outs[:2]
        cached = detector.head_features(
            target[0], target[2], target[3], target[4], target[5], torch.cat([s[0] for s in supports]),
            torch.stack([s[4] for s in supports]), torch.stack([s[5] for s in supports]),
            torch.stack([s[2] for s in supports]), torch.ones(2, dtype=torch.bool),
        )  # fmt: skip
        maps = torch.cat([s[0] for s in supports] + [target[0]])
        temporal = detector.roi_head.bbox_roi_extractor(target[3], maps, torch.ones(3, dtype=torch.bool))
        stacked_refs = torch.cat([s[3] for s in supports] + [target[3]])
        ref_valid = torch.cat([s[2] for s in supports] + [target[2]])
        stacked = detector.roi_head.bbox_head.features(temporal, stacked_refs, ref_valid)
    torch.testing.assert_close(cached, stacked, rtol=1e-5, atol=1e-5)
    assert not torch.equal(cached, detector.roi_head.bbox_head.features(temporal, target[3], target[2]))  # supports count
