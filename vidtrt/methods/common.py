"""Detector loading shared by the methods: native checkpoints and named configs."""

from __future__ import annotations

from ..models.checkpoint import CheckpointError, load_state_dict_strict, read_checkpoint
from ..models.configs import get_config


def load_native(method: str, config_cls, detector_cls, checkpoint, config_name: str | None = None):
    """(config, detector) from a vidtrt checkpoint of ``method`` (its config travels with it)."""
    data = read_checkpoint(checkpoint)
    if data["method"] != method:
        raise CheckpointError(f"checkpoint {checkpoint} is a {data['method']!r} checkpoint, not {method!r}")
    cfg = config_cls.from_dict(data["config"])
    if config_name is not None and cfg.name != config_name:
        raise CheckpointError(f"checkpoint {checkpoint} holds config {cfg.name!r}, but {config_name!r} was asked for")
    detector = detector_cls(cfg).eval()
    load_state_dict_strict(detector, data["state_dict"], source=f"checkpoint {checkpoint}")
    return cfg, detector


def named_config(config_cls, label: str, config_name: str | None, overrides: dict | None = None):
    """The named config with ``overrides`` of its fields, checked to belong to the method."""
    if config_name is None:
        raise ValueError("give a config name or a checkpoint")
    cfg = get_config(config_name, **(overrides or {}))
    if not isinstance(cfg, config_cls):
        raise ValueError(f"config {config_name!r} is not a {label} config")
    return cfg
