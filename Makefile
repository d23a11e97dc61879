# The two commands of the README:
#   make demo   set up .venv, build, run the main job
#   make test   set up .venv, build, run the test suite
# Optional: TENSORRT_ROOT=/path/to/TensorRT (its include/ has NvInferRuntime.h)
# builds libvidtrt_plugins.so too; ONNXRUNTIME_ROOT=/path/to/onnxruntime (its
# include/ has onnxruntime_cxx_api.h) builds libvidtrt_ort_ops.so, the fused
# custom ops inside ONNX Runtime; VIDTRT_CUDA_ARCHITECTURES="75;86" narrows the
# CUDA architectures (default 75;80;86;89;90).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEPS_STAMP := $(VENV)/.vidtrt-deps
CMAKE_DEFINES := $(if $(VIDTRT_CUDA_ARCHITECTURES),-Ccmake.define.VIDTRT_CUDA_ARCHITECTURES="$(VIDTRT_CUDA_ARCHITECTURES)")

.PHONY: demo test build doctor clean

demo: build
	$(VENV)/bin/vidtrt demo

test: build
	$(VENV)/bin/pytest

doctor: build
	$(VENV)/bin/vidtrt doctor

# torch is pinned to the release this project is tested with; the build tools are
# installed up front so the editable install can reuse its build directory.
$(DEPS_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet "scikit-build-core>=0.10" "pybind11>=2.12" "numpy>=1.24" "onnx>=1.16" \
		"onnxruntime>=1.18" "tqdm>=4.60" "opencv-python-headless>=4.8" "pytest>=7" "hypothesis>=6.80"
	touch $@

# nvidia-pytriton only for its tritonserver binary (tests/test_serving.py):
# --no-deps, as it declares numpy<2 and opencv needs numpy 2. Where there is
# no wheel for the platform, the serving tests are skipped.
build: $(DEPS_STAMP)
	$(PY) -m pip install --quiet --no-build-isolation -e ".[test,rtx,serve]" $(CMAKE_DEFINES)
	$(PY) -m pip install --quiet --no-deps "nvidia-pytriton==0.7.0" \
		|| echo "nvidia-pytriton not installable here: no tritonserver, the serving tests will be skipped"
	$(PY) -c "import numpy, sys; sys.exit(0 if int(numpy.__version__.split('.')[0]) >= 2 else 'numpy ' + numpy.__version__ + ' < 2: opencv needs numpy 2')"

clean:
	rm -rf build $(VENV) vidtrt-selfcheck vidtrt-demo
