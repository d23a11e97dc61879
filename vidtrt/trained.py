"""The trained small checkpoints shipped in vidtrt/checkpoints.

Each ``<config>.pt`` is a native checkpoint made by ``vidtrt train`` on a
synthetic set (``vidtrt synth-vid``); ``<config>.pt.json`` beside it records
the exact command, seed, data parameters and losses that made it
(docs/ACCURACY.md lists them with their measured mAP).
"""

from __future__ import annotations

from pathlib import Path

CHECKPOINTS = Path(__file__).parent / "checkpoints"


def trained_checkpoint(config: str) -> Path | None:
    """The shipped checkpoint of ``config``, or None when there is none."""
    path = CHECKPOINTS / f"{config}.pt"
    return path if path.is_file() else None


def trained_configs() -> list[str]:
    return sorted(p.stem for p in CHECKPOINTS.glob("*.pt"))
