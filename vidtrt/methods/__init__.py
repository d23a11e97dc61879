"""Methods: each is a detector, its stages, the state carried between stage
invocations, and a schedule (the pipeline). ``get_method(name)`` returns the
module describing one."""

from __future__ import annotations

import importlib
from types import ModuleType

METHODS = ("psla", "mfsa", "troi")


def get_method(name: str) -> ModuleType:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(METHODS)}")
    return importlib.import_module(f"{__name__}.{name}")
