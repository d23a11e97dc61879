"""The method registry: every method is a ``Method`` (methods/base.py), and
everything that lists methods derives from ``REGISTERED`` below.

Adding a method: its model (vidtrt/models/<m>.py), method (vidtrt/methods/<m>.py,
ending in ``METHOD = <YourMethod>()``) and pipeline
(vidtrt/runtime/pipelines/<m>.py) files, plus its name in ``REGISTERED``.
"""

from __future__ import annotations

import functools
import importlib

from .base import Method, ScheduleOption

# The registry entry of each method: the module vidtrt.methods.<name> holds METHOD.
REGISTERED = ("psla", "mfsa", "troi", "impression", "mega")


@functools.cache
def _methods() -> dict[str, Method]:
    out = {}
    for name in REGISTERED:
        method = importlib.import_module(f"{__name__}.{name}").METHOD
        if method.name != name:
            raise RuntimeError(f"vidtrt.methods.{name} registers a method named {method.name!r}")
        out[name] = method
    return out


def method_names() -> tuple[str, ...]:
    return REGISTERED


def all_methods() -> list[Method]:
    return list(_methods().values())


def get_method(name: str) -> Method:
    if name not in REGISTERED:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(REGISTERED)}")
    return _methods()[name]


def all_configs() -> dict[str, tuple[Method, object]]:
    """Every named config of every method: name → (method, config)."""
    out = {}
    for method in all_methods():
        for name, cfg in method.configs.items():
            if name in out:
                raise RuntimeError(f"config {name!r} is defined by both {out[name][0].name} and {method.name}")
            out[name] = (method, cfg)
    return out


def method_of_config(config_name: str) -> Method:
    configs = all_configs()
    if config_name not in configs:
        raise ValueError(f"unknown model config {config_name!r}; known: {', '.join(sorted(configs))}")
    return configs[config_name][0]

__all__ = ["REGISTERED", "Method", "ScheduleOption", "all_configs", "all_methods", "get_method", "method_names", "method_of_config"]
