"""vidtrt's native checkpoint format and state-dict loading that names every
missing, unexpected and mis-shaped key.

A native checkpoint is a ``torch.save`` of
``{"format": "vidtrt-checkpoint", "version": 1, "method": ..., "config": ..., "state_dict": ...}``
so that the config travels with the weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

FORMAT = "vidtrt-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded into the requested model."""


def _summarise(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_state_dict_strict(module: torch.nn.Module, state_dict: dict, source: str = "checkpoint") -> None:
    """Loads ``state_dict`` into ``module``; on any mismatch raises CheckpointError
    naming the missing, unexpected and mis-shaped keys (nothing is loaded then)."""
    own = module.state_dict()
    # Buffers that frozen BN drops (see resnet.FrozenBatchNorm2d) are not a mismatch.
    incoming = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked") or k in own}
    missing = sorted(set(own) - set(incoming))
    unexpected = sorted(set(incoming) - set(own))
    misshaped = sorted(
        f"{k} (expected {list(own[k].shape)}, got {list(incoming[k].shape)})"
        for k in set(own) & set(incoming)
        if tuple(own[k].shape) != tuple(incoming[k].shape)
    )
    if missing or unexpected or misshaped:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {_summarise(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {_summarise(unexpected)}")
        if misshaped:
            parts.append(f"{len(misshaped)} with the wrong shape: {_summarise(misshaped)}")
        raise CheckpointError(f"{source} does not fit {type(module).__name__}: " + "; ".join(parts))
    module.load_state_dict(incoming, strict=True)


def save_checkpoint(path: str | os.PathLike, method: str, config, module: torch.nn.Module) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(
        {"format": FORMAT, "version": VERSION, "method": method, "config": config.as_dict(), "state_dict": module.state_dict()},
        tmp,
    )
    os.replace(tmp, path)


def load_weights_only(path: str | os.PathLike):
    """``torch.load`` of a checkpoint file with no code unpickled; a missing or
    unreadable file is a CheckpointError naming it (the first line of torch's
    message, which runs over several lines with advice about weights_only)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise CheckpointError(
            f"checkpoint {path} is not a readable PyTorch file ({first}); a file with pickled objects must be "
            "re-saved as a plain dict of tensors"
        ) from err


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Reads a native checkpoint file (weights only; no code is unpickled)."""
    path = Path(path)
    data = load_weights_only(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint {path} is not a vidtrt checkpoint (no format={FORMAT!r} field); "
            "upstream checkpoints are loaded by their method's importer"
        )
    if data.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {data.get('version')}, this vidtrt reads {VERSION}")
    return data
