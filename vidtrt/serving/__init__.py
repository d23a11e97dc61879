"""Serving many video streams through Triton Inference Server.

A bundle becomes a Triton model repository (:mod:`.repository`) whose one
model is a Python-backend model with Triton's sequence batcher: each request
is one frame of one stream (the sequence's correlation id names the stream),
and the model keeps every stream's temporal state in a
:class:`.streams.StreamTable` of :class:`vidtrt.api.DetectionStream` objects.
:mod:`.triton_model` turns Triton requests into table calls and detections
into responses; :mod:`.server` finds and runs ``tritonserver``;
:mod:`.client` streams a video to such a server over gRPC for ``vidtrt run
--server``.

Only :mod:`.streams` and :mod:`.repository` are needed without the ``serve``
extra; the client needs ``tritonclient[grpc]``, the server a
``tritonserver`` binary (the nvidia-pytriton wheel carries one).
"""
