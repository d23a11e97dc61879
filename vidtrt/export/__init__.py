"""Export of PyTorch modules to ONNX graphs with vidtrt's custom ops."""
