"""Runtime: backends, pipelines, video input and detection output.

Submodules are imported explicitly (``from vidtrt.runtime import video``) so that
importing the package does not pull in OpenCV, ONNX Runtime or TensorRT.
"""
