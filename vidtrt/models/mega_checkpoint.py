"""Importing Scalsol/mega.pytorch checkpoints.

maskrcnn-benchmark's format: ``torch.save({"model": state_dict, ...})``,
keys possibly prefixed ``module.`` (DistributedDataParallel), FrozenBatchNorm
buffers without ``num_batches_tracked``. MegaDetector names its modules as
mega.pytorch does except for the ResNet stem (``backbone.body.stem.conv1`` /
``.bn1`` upstream, ``backbone.body.conv1`` / ``.bn1`` here), so the mapping is
the prefix strip plus that rename; anything that does not fit is reported key
by key by ``load_state_dict_strict``, under the upstream names.
"""

from __future__ import annotations

import os

import torch

from .checkpoint import FORMAT, CheckpointError, load_state_dict_strict, load_weights_only

STEM = "backbone.body.stem."


def _strip(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key


def is_mega_checkpoint(data) -> bool:
    return (
        isinstance(data, dict)
        and data.get("format") != FORMAT
        and isinstance(data.get("model"), dict)
        and any(_strip(k).startswith("backbone.body.") for k in data["model"])
    )


def to_upstream(key: str) -> str:
    """Our key → mega.pytorch's (for messages)."""
    for part in ("conv1.", "bn1."):
        if key.startswith("backbone.body." + part):
            return STEM + key[len("backbone.body."):]
    return key


def map_mega_state_dict(state_dict: dict) -> dict:
    """Upstream keys → MegaDetector keys (``module.`` stripped, the stem renamed)."""
    out = {}
    for key, value in state_dict.items():
        key = _strip(key)
        if key.startswith(STEM):
            key = "backbone.body." + key[len(STEM):]
        out[key] = value
    return out


def resnet_depth_of(state_dict: dict) -> int:
    """ResNet depth from the number of layer3 blocks (6 → 50, 23 → 101)."""
    blocks = {_strip(k).split(".")[3] for k in state_dict if _strip(k).startswith("backbone.body.layer3.")}
    return {6: 50, 23: 101}.get(len(blocks), 0)


def read_mega_checkpoint(path: str | os.PathLike) -> dict:
    data = load_weights_only(path)
    if not is_mega_checkpoint(data):
        raise CheckpointError(f"checkpoint {path} is not a mega.pytorch checkpoint (no 'model' with backbone.body.* keys)")
    return data


def load_mega_checkpoint(detector: torch.nn.Module, data: dict, source: str) -> None:
    try:
        load_state_dict_strict(detector, map_mega_state_dict(data["model"]), source=source)
    except CheckpointError as err:
        # Name the keys as the checkpoint spells them (the stem is the one rename).
        message = str(err)
        for part in ("conv1.", "bn1."):
            message = message.replace("backbone.body." + part, STEM + part)
        raise CheckpointError(message) from None
