"""Shared by the op benchmarks (run as scripts from this folder)."""

from __future__ import annotations

import time

import torch

from vidtrt.ops import registry


def timed(fn, repeat: int, warmup: int = 1) -> list[float]:
    """Wall-clock milliseconds of ``repeat`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


class OpModule(torch.nn.Module):
    """A custom op as a module to export: forward(*tensors) = op(*tensors, **attrs)."""

    def __init__(self, op_type: str, **attrs):
        super().__init__()
        self.function = registry.registered_ops()[op_type].function
        self.attrs = attrs

    def forward(self, *tensors):
        return self.function(*tensors, **self.attrs)
