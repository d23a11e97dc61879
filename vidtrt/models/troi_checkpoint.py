"""Importing open-mmlab/mmtracking Temporal RoI Align checkpoints.

mmcv's format: ``torch.save({"meta": {...}, "state_dict": {...}})`` with every
key prefixed ``detector.`` (SELSA wraps the Faster R-CNN). TroiDetector names
its modules as mmdet does, so the mapping is the prefix strip; anything that
does not fit is reported key by key by ``load_state_dict_strict``.
"""

from __future__ import annotations

import os


from .checkpoint import FORMAT, CheckpointError, load_state_dict_strict, load_weights_only
from .troi import TroiDetector

PREFIX = "detector."


def is_mmtracking_checkpoint(data) -> bool:
    return (
        isinstance(data, dict)
        and data.get("format") != FORMAT
        and isinstance(data.get("state_dict"), dict)
        and any(k.startswith(PREFIX) for k in data["state_dict"])
    )


def map_mmtracking_state_dict(state_dict: dict) -> dict:
    """Upstream keys → TroiDetector keys. Keys outside ``detector.`` are kept
    as they are, so that they show up as unexpected rather than vanish."""
    return {(k[len(PREFIX):] if k.startswith(PREFIX) else k): v for k, v in state_dict.items()}


def resnet_depth_of(state_dict: dict) -> int:
    """ResNet depth from the number of layer3 blocks (6 → 50, 23 → 101)."""
    blocks = {k.split(".")[3] for k in state_dict if k.startswith(PREFIX + "backbone.layer3.")}
    return {6: 50, 23: 101}.get(len(blocks), 0)


def read_mmtracking_checkpoint(path: str | os.PathLike) -> dict:
    data = load_weights_only(path)
    if not is_mmtracking_checkpoint(data):
        raise CheckpointError(f"checkpoint {path} is not an mmtracking checkpoint (no state_dict with detector.* keys)")
    return data


def load_mmtracking_checkpoint(detector: TroiDetector, data: dict, source: str) -> None:
    load_state_dict_strict(detector, map_mmtracking_state_dict(data["state_dict"]), source=source)
