"""Pipelines: a method's schedule over a backend, with the state it carries."""

from __future__ import annotations

from ..backends.base import Backend

# Schedule options each method's pipeline takes (overriding the bundle's).
OPTIONS = {"psla": ("key_interval", "key_placement"), "mfsa": ("mode", "batch_frames"), "troi": ("mode", "num_support", "stride")}


def create_pipeline(backend: Backend, **options):
    method = backend.bundle.manifest.method
    if method not in OPTIONS:
        raise ValueError(f"no pipeline for method {method!r}")
    unknown = sorted(set(options) - set(OPTIONS[method]))
    if unknown:
        raise ValueError(f"{method} pipelines take {', '.join(OPTIONS[method])}; not {', '.join(unknown)}")
    if method == "psla":
        from .psla import PslaPipeline

        return PslaPipeline(backend, **options)
    if method == "troi":
        from .troi import TroiPipeline

        return TroiPipeline(backend, **options)
    from .mfsa import MfsaPipeline

    return MfsaPipeline(backend, **options)
