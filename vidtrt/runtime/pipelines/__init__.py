"""Pipelines: a method's schedule over a backend, with the state it carries.

Each method names its pipeline (``Method.pipeline``, "<module>:<class>" in
this package); ``create_pipeline`` resolves it for the bundle's method.
"""

from __future__ import annotations

import importlib

from ...methods import get_method
from ..backends.base import Backend
from .base import FrameResult, Pipeline, PipelineStream, checked_image_size


def pipeline_class(method_name: str) -> type[Pipeline]:
    module, _, cls = get_method(method_name).pipeline.partition(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def create_pipeline(backend: Backend, **options) -> Pipeline:
    """The bundle's method's pipeline; ``options`` are its schedule options
    (None keeps the bundle's value), validated by the method."""
    method = get_method(backend.bundle.manifest.method)
    unknown = sorted(set(options) - {o.name for o in method.schedule_options})
    if unknown:
        names = ", ".join(o.name for o in method.schedule_options) or "none"
        raise ValueError(f"{method.name} pipelines take {names}; not {', '.join(unknown)}")
    return pipeline_class(method.name)(backend, **options)


__all__ = ["FrameResult", "Pipeline", "PipelineStream", "checked_image_size", "create_pipeline", "pipeline_class"]
