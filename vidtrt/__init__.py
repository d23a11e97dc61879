"""vidtrt: a TensorRT deployment toolkit for video object detectors."""

__version__ = "0.1.0"
