"""Conformance: every registered method, for free.

For each method in the registry: its small config exports to a bundle whose
manifest matches the method's description; its pipeline, on the torch and
onnxruntime backends (decomposed custom ops, and fused where built), equals its whole-video reference (torch bit for bit,
onnxruntime detection for detection) under every choice of every choice-typed
schedule option (key frame first/middle, offline/online, multi/single focus),
on a video whose length is not a multiple of any batch or segment; frames come
out once each, in order; a second stream over the same backend is independent;
and the schedule options are validated (0, negative, unknown, and fixed-at-
export values are refused with a clear error).

A method added to the registry is covered by adding nothing here.
"""

from __future__ import annotations

import numpy as np
import pytest

from vidtrt.core.bundle import DETECTION_OUTPUTS
from vidtrt.core.compare import compare_detections
from vidtrt.export.exporter import export_bundle
from vidtrt.methods import all_methods, get_method, method_names
from vidtrt.methods.common import sample_image
from vidtrt.runtime.backends import create_backend
from vidtrt.runtime.backends import onnxruntime_fused_ops as fused_ops
from vidtrt.runtime.pipelines import Pipeline, create_pipeline

LENGTH = 7  # not a multiple of PSLA's small interval (10 → a short last segment), MFSA's K = 4, ...

_cache: dict = {}


def _setup(method_name: str, tmp_path_factory):
    """(method, bundle, detector, {backend name: backend}), exported once per method."""
    if method_name not in _cache:
        method = get_method(method_name)
        bundle = export_bundle(
            method.name, tmp_path_factory.mktemp(f"conf_{method.name}") / "bundle", config_name=method.small_config, log=lambda _: None
        )
        _, detector = method.load_detector(checkpoint=bundle.path(bundle.manifest.checkpoint))
        backends = {"torch": create_backend("torch", bundle)}
        # ONNX Runtime both ways: the ops' decompositions, and their fused
        # kernels (libvidtrt_ort_ops.so) where this build has them.
        for mode in ("decomposed", "fused") if fused_ops.available() else ("decomposed",):
            backends[f"onnxruntime-{mode}"] = create_backend("onnxruntime", bundle, custom_ops=mode)
        _cache[method_name] = (method, bundle, detector, backends)
    return _cache[method_name]


@pytest.fixture(scope="module", autouse=True)
def _clear_cache():
    yield
    _cache.clear()


def _run(stream, images) -> list:
    results = []
    for i, image in enumerate(images):
        results += stream.push(i, image.numpy())
    return results + stream.flush()


def _variants():
    for method in all_methods():
        for variant in method.schedule_variants():
            label = ",".join(f"{k}={v}" for k, v in variant.items()) or "default"
            yield pytest.param(method.name, variant, id=f"{method.name}-{label}")


def test_registry_describes_every_method():
    assert method_names() and len(set(method_names())) == len(method_names())
    for method in all_methods():
        assert method.small_config in method.configs, method.name
        assert set(method.stages) == set(method.stage_modules(method.build_detector(method.configs[method.small_config])))
        assert method.baseline_stage is None or method.baseline_stage in method.stages
        names = [o.name for o in method.schedule_options]
        assert len(set(names)) == len(names)
        cfg = method.configs[method.small_config]
        assert set(method.default_schedule(cfg)) == {o.field for o in method.schedule_options}


@pytest.mark.slow
@pytest.mark.parametrize("method_name", method_names())
def test_bundle_matches_the_method(method_name, tmp_path_factory):
    method, bundle, detector, _ = _setup(method_name, tmp_path_factory)
    manifest = bundle.manifest
    assert manifest.method == method.name and manifest.config_name == method.small_config
    assert set(manifest.stages) == set(method.stages)
    assert manifest.schedule == method.default_schedule(detector.cfg)
    assert [s.name for s in manifest.state] == [s.name for s in method.state_specs(detector.cfg)]
    detecting = [s for s, spec in manifest.stages.items() if {t.name for t in spec.outputs} >= set(DETECTION_OUTPUTS)]
    assert detecting, "no stage outputs detections"


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", ["torch", "onnxruntime-decomposed", "onnxruntime-fused"])
@pytest.mark.parametrize("method_name,variant", list(_variants()))
def test_pipeline_equals_whole_video_reference(method_name, variant, backend_name, tmp_path_factory):
    if backend_name == "onnxruntime-fused" and not fused_ops.available():
        pytest.skip("no libvidtrt_ort_ops.so in this build (ONNX Runtime API headers: ONNXRUNTIME_ROOT)")
    method, bundle, detector, backends = _setup(method_name, tmp_path_factory)
    schedule = method.resolve_schedule(bundle.manifest.schedule, variant)
    images = [sample_image(detector.cfg, seed=100 + i) for i in range(LENGTH)]
    reference = method.video_reference(detector, images, schedule)
    assert len(reference) == LENGTH

    pipeline = create_pipeline(backends[backend_name], **variant)
    assert isinstance(pipeline, Pipeline) and pipeline.schedule == schedule
    results = _run(pipeline.stream(), images)
    assert [r.index for r in results] == list(range(LENGTH)), "every frame once, in order"
    cfg = detector.cfg.detection
    for r in results:
        want = [t.numpy() for t in reference[r.index]]
        got = [r.detections[k] for k in DETECTION_OUTPUTS]
        if backend_name == "torch":
            for w, g in zip(want, got):
                np.testing.assert_array_equal(w, g)
        else:
            cmp = compare_detections(want, got, cfg.max_detections, cfg.nms_iou)
            assert cmp.ok and cmp.max_box_error < 0.05 and cmp.max_score_error < 1e-4, (r.index, cmp)


@pytest.mark.slow
@pytest.mark.parametrize("method_name", method_names())
def test_streams_are_independent(method_name, tmp_path_factory):
    method, bundle, detector, backends = _setup(method_name, tmp_path_factory)
    pipeline = create_pipeline(backends["torch"])
    first = [sample_image(detector.cfg, seed=200 + i) for i in range(5)]
    second = [sample_image(detector.cfg, seed=300 + i) for i in range(5)]
    a, b = pipeline.stream(), pipeline.stream()
    out_a, out_b = [], []
    for i in range(5):  # interleaved
        out_a += a.push(i, first[i].numpy())
        out_b += b.push(i, second[i].numpy())
    out_a += a.flush()
    out_b += b.flush()
    schedule = method.resolve_schedule(bundle.manifest.schedule)
    for results, images in ((out_a, first), (out_b, second)):
        reference = method.video_reference(detector, images, schedule)
        for r in results:
            for k, w in zip(DETECTION_OUTPUTS, reference[r.index]):
                np.testing.assert_array_equal(w.numpy(), r.detections[k])


@pytest.mark.slow
@pytest.mark.parametrize("method_name", method_names())
def test_schedule_options_are_validated(method_name, tmp_path_factory):
    method, bundle, _, backends = _setup(method_name, tmp_path_factory)
    backend = backends["torch"]
    others = {o.name for m in all_methods() for o in m.schedule_options} - {o.name for o in method.schedule_options}
    for name in others:
        with pytest.raises(ValueError, match=f"{method.name} pipelines take"):
            create_pipeline(backend, **{name: 1})
    for option in method.schedule_options:
        if option.kind is int:
            below = option.minimum - 1 if option.minimum is not None else None
            for bad in ("x", 2.5, *([below, below - 1] if below is not None else [])):
                with pytest.raises(ValueError, match=option.name):
                    create_pipeline(backend, **{option.name: bad})
            if option.at_export:
                with pytest.raises(ValueError, match="fixed at export"):
                    create_pipeline(backend, **{option.name: bundle.manifest.schedule[option.field] + 1})
        elif option.kind is float:
            bad_values = ["x", float("nan"), True]
            bad_values += [option.minimum - 0.5] if option.minimum is not None else []
            bad_values += [option.maximum + 0.5] if option.maximum is not None else []
            for bad in bad_values:
                with pytest.raises(ValueError, match=option.name):
                    create_pipeline(backend, **{option.name: bad})
        else:
            with pytest.raises(ValueError, match=f"{option.name} must be one of"):
                create_pipeline(backend, **{option.name: "no-such-choice"})
