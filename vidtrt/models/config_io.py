"""Configs ↔ plain dicts (manifests and checkpoints store configs as JSON-ready dicts)."""

from __future__ import annotations

import dataclasses
import typing


def config_from_dict(cls, data: dict):
    """Rebuilds dataclass ``cls`` from ``dataclasses.asdict`` output: nested
    dataclass fields are rebuilt recursively and JSON lists become tuples."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, kind = data[f.name], hints[f.name]
        if dataclasses.is_dataclass(kind) and isinstance(value, dict):
            value = config_from_dict(kind, value)
        elif isinstance(value, list):
            value = tuple(value)
        values[f.name] = value
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")
    return cls(**values)
