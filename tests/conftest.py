import os

import pytest
import torch

# Small, deterministic CPU work: keep the 2-core CI machine predictable.
# VIDTRT_TEST_THREADS: fewer, when several test runs share the cores (mutation
# testing with one worker per core).
torch.set_num_threads(int(os.environ.get("VIDTRT_TEST_THREADS", 0)) or max(1, min(2, os.cpu_count() or 1)))


def _cache_exports(cache_dir: str) -> None:
    """VIDTRT_TEST_EXPORT_CACHE=DIR: ``export_bundle`` copies a bundle exported
    once with the same arguments into DIR instead of exporting again.

    Only for mutation runs of modules the export never runs (the pipelines,
    the TensorRT build): a mutant there cannot change what is exported, and
    the exports are most of each test run. Calls with arguments other than
    plain values export as usual. Never set it in CI.
    """
    import hashlib
    import shutil
    from pathlib import Path

    from vidtrt.core.bundle import load_bundle
    from vidtrt.export import exporter

    export = exporter.export_bundle
    plain = (str, int, float, bool, type(None), Path)

    def is_plain(value) -> bool:
        if isinstance(value, (list, tuple)):
            return all(is_plain(v) for v in value)
        if isinstance(value, dict):
            return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
        return isinstance(value, plain)

    def cached_export(method_name, out_dir, config_name=None, checkpoint=None, **options):
        key_options = {k: v for k, v in options.items() if k not in ("log", "progress")}
        key_values = (method_name, config_name, checkpoint, sorted(key_options.items()))
        if not is_plain([method_name, config_name, checkpoint, key_options]):
            return export(method_name, out_dir, config_name, checkpoint, **options)
        cached = Path(cache_dir) / hashlib.sha256(repr(key_values).encode()).hexdigest()[:20]
        if not cached.is_dir():
            partial = cached.with_name(f"{cached.name}.partial{os.getpid()}")
            shutil.rmtree(partial, ignore_errors=True)
            export(method_name, partial, config_name, checkpoint, **options)
            try:
                partial.rename(cached)
            except OSError:  # another test run cached it first
                shutil.rmtree(partial, ignore_errors=True)
        out_dir = Path(out_dir)
        if out_dir.exists() and any(out_dir.iterdir()):
            return export(method_name, out_dir, config_name, checkpoint, **options)
        shutil.copytree(cached, out_dir, dirs_exist_ok=True)
        return load_bundle(out_dir)

    exporter.export_bundle = cached_export


if os.environ.get("VIDTRT_TEST_EXPORT_CACHE"):
    _cache_exports(os.environ["VIDTRT_TEST_EXPORT_CACHE"])


def pytest_report_header(config):
    from vidtrt import _native

    info = _native.build_info() if _native.available() else "host kernel library missing"
    return f"vidtrt native build: {info}"


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")
