"""Detectors of the five methods, their configs and checkpoint loading."""

from __future__ import annotations

from .configs import CONFIGS, build, get_config

__all__ = ["CONFIGS", "build", "get_config"]
