import os

import pytest
import torch

# Small, deterministic CPU work: keep the 2-core CI machine predictable.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_report_header(config):
    from vidtrt import _native

    info = _native.build_info() if _native.available() else "host kernel library missing"
    return f"vidtrt native build: {info}"


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")
