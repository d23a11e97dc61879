"""Pipelines: a method's schedule over a backend, with the state it carries."""

from __future__ import annotations

from ..backends.base import Backend


def create_pipeline(backend: Backend, **options):
    method = backend.bundle.manifest.method
    if method == "psla":
        from .psla import PslaPipeline

        return PslaPipeline(backend, **options)
    raise ValueError(f"no pipeline for method {method!r}")
