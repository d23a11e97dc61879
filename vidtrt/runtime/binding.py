"""Which device buffer every stage input and output binds to, per stream.

A backend that keeps state on the device (TensorRT) binds each engine I/O
tensor to an address. Three kinds of tensors meet there:

- **state** — carried between calls (``StateSpec``): written by one stage's
  output (the source), read by stage inputs (the targets) on later calls.
- **per-call inputs** — everything else a stage reads (the image, flags such
  as PSLA's ``has_state``), new on every call.
- **results** — every output that is not state (detections), read back by
  the host after the call.

An engine must never read and write the same buffer in one call: its kernels
would overwrite the input while other kernels still read it. So a state that
the writing stage also reads (PSLA's ``key`` reads ``temporal_in`` and writes
``temporal_out``) needs two buffers used in turn (ping-pong): after ``k``
writes the current version sits in buffer ``k % 2`` and the next write goes
to ``(k + 1) % 2``. A state read only by other stages needs one buffer — its
readers run in other calls — unless older versions must stay readable after a
newer one was written (``versions_alive``), which needs one buffer per version
kept. In general a state needs ``max(versions_alive, 1 + writer_reads_it)``
buffers, and version ``v`` (version 0 = the initial zeros) lives in buffer
``v % count``.

Per-call inputs and results need one buffer each, shared by every stage that
has a tensor of the same name, shape and dtype (stages of one stream run one
after another, and results are copied out before the next call).

The plan is pure bookkeeping over the manifest; shapes stay templates with
the manifest's symbols (``H``, ``W``, ``h``, ``w``) until ``core.bundle.concrete_shape``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from ..core.bundle import Manifest

STATE, INPUT, RESULT = "state", "input", "result"
STATE_IN, STATE_OUT = "state_in", "state_out"


class BindingPlanError(ValueError):
    """The manifest's state wiring is inconsistent (unknown stage or tensor, mismatched shapes)."""


@dataclass(frozen=True)
class Buffer:
    name: str
    shape: tuple  # ints and symbols
    dtype: str
    count: int  # physical copies (2 = ping-pong)
    role: str  # "state", "input" or "result"


@dataclass(frozen=True)
class Binding:
    tensor: str
    role: str  # "state_in", "state_out", "input" or "result"
    buffer: str
    index: int  # which of the buffer's copies


@dataclass(frozen=True)
class StagePlan:
    name: str
    state_inputs: dict  # input name → state name
    state_outputs: dict  # output name → state name
    per_call: tuple  # input names fed fresh on every call
    results: tuple  # output names read back by the host
    buffer_of: dict = field(repr=False)  # tensor name → buffer name (per-call inputs and results)


def _split(ref: str, what: str) -> tuple[str, str]:
    stage, sep, tensor = ref.partition(".")
    if not sep or not stage or not tensor:
        raise BindingPlanError(f"state {what} {ref!r} is not of the form 'stage.tensor'")
    return stage, tensor


class BindingPlan:
    """The minimal set of device buffers for one stream of a bundle, and which
    copy each stage I/O tensor binds to after a given number of state writes."""

    def __init__(self, buffers: dict[str, Buffer], stages: dict[str, StagePlan], writer: dict[str, str]):
        self.buffers = buffers
        self.stages = stages
        self.writer = writer  # state → the stage that writes it

    # ------------------------------------------------------------ construction

    @classmethod
    def from_manifest(cls, manifest: Manifest, versions_alive: Mapping[str, int] | None = None) -> "BindingPlan":
        """``versions_alive[state]``: how many most recent versions of a state
        must stay readable after each write (1 for every schedule where a read
        uses the latest version, PSLA's included)."""
        versions_alive = dict(versions_alive or {})
        unknown = set(versions_alive) - {s.name for s in manifest.state}
        if unknown:
            raise BindingPlanError(f"versions_alive names unknown state {sorted(unknown)}")
        stages = manifest.stages
        state_in: dict[str, dict[str, str]] = {name: {} for name in stages}
        state_out: dict[str, dict[str, str]] = {name: {} for name in stages}
        writer: dict[str, str] = {}
        buffers: dict[str, Buffer] = {}

        for spec in manifest.state:
            if spec.name in buffers:
                raise BindingPlanError(f"state {spec.name!r} is declared twice")
            src_stage, src_tensor = _split(spec.source, "source")
            if src_stage not in stages:
                raise BindingPlanError(f"state {spec.name!r}: source stage {src_stage!r} does not exist")
            out = {t.name: t for t in stages[src_stage].outputs}.get(src_tensor)
            if out is None:
                raise BindingPlanError(f"state {spec.name!r}: stage {src_stage!r} has no output {src_tensor!r}")
            _check_same(spec, out, spec.source)
            if src_tensor in state_out[src_stage]:
                raise BindingPlanError(f"output {spec.source} feeds two states")
            state_out[src_stage][src_tensor] = spec.name
            writer[spec.name] = src_stage
            writer_reads = False
            for target in spec.targets:
                stage, tensor = _split(target, "target")
                if stage not in stages:
                    raise BindingPlanError(f"state {spec.name!r}: target stage {stage!r} does not exist")
                inp = {t.name: t for t in stages[stage].inputs}.get(tensor)
                if inp is None:
                    raise BindingPlanError(f"state {spec.name!r}: stage {stage!r} has no input {tensor!r}")
                _check_same(spec, inp, target)
                if tensor in state_in[stage]:
                    raise BindingPlanError(f"input {target} is fed by two states ({state_in[stage][tensor]!r}, {spec.name!r})")
                state_in[stage][tensor] = spec.name
                writer_reads |= stage == src_stage
            alive = int(versions_alive.get(spec.name, 1))
            if alive < 1:
                raise BindingPlanError(f"versions_alive[{spec.name!r}] must be >= 1, got {alive}")
            count = max(alive, 2 if writer_reads else 1)
            buffers[spec.name] = Buffer(spec.name, tuple(spec.shape), spec.dtype, count, STATE)

        stage_plans: dict[str, StagePlan] = {}
        for name, spec in stages.items():
            buffer_of: dict[str, str] = {}
            per_call = tuple(t.name for t in spec.inputs if t.name not in state_in[name])
            results = tuple(t.name for t in spec.outputs if t.name not in state_out[name])
            for prefix, role, tensors in (("in", INPUT, spec.inputs), ("out", RESULT, spec.outputs)):
                wanted = per_call if role == INPUT else results
                for t in tensors:
                    if t.name not in wanted:
                        continue
                    shared = f"{prefix}:{t.name}"
                    existing = buffers.get(shared)
                    if existing is None or (existing.shape == tuple(t.shape) and existing.dtype == t.dtype):
                        buf_name = shared
                    else:  # same name, other shape or dtype: this stage gets its own
                        buf_name = f"{prefix}:{name}.{t.name}"
                    buffers.setdefault(buf_name, Buffer(buf_name, tuple(t.shape), t.dtype, 1, role))
                    buffer_of[t.name] = buf_name
            stage_plans[name] = StagePlan(name, state_in[name], state_out[name], per_call, results, buffer_of)
        return cls(buffers, stage_plans, writer)

    # ------------------------------------------------------------ queries

    def state_buffers(self) -> list[Buffer]:
        return [b for b in self.buffers.values() if b.role == STATE]

    def read_index(self, state: str, writes: int) -> int:
        """The copy holding the latest version after ``writes`` writes."""
        return writes % self.buffers[state].count

    def write_index(self, state: str, writes: int) -> int:
        """The copy the next write (version ``writes + 1``) goes to."""
        return (writes + 1) % self.buffers[state].count

    def bindings(self, stage: str, writes: int | Mapping[str, int] = 0) -> dict[str, Binding]:
        """Every I/O tensor of ``stage`` → its buffer and copy, when each state
        has been written ``writes`` times (an int for all states, or per state)."""
        if stage not in self.stages:
            raise KeyError(f"no stage {stage!r}; the plan has {', '.join(self.stages)}")
        plan = self.stages[stage]

        def k(state: str) -> int:
            n = writes if isinstance(writes, int) else writes.get(state, 0)
            if n < 0:
                raise ValueError(f"writes must be >= 0, got {n} for {state!r}")
            return n

        out: dict[str, Binding] = {}
        for tensor, state in plan.state_inputs.items():
            out[tensor] = Binding(tensor, STATE_IN, state, self.read_index(state, k(state)))
        for tensor in plan.per_call:
            out[tensor] = Binding(tensor, INPUT, plan.buffer_of[tensor], 0)
        for tensor, state in plan.state_outputs.items():
            out[tensor] = Binding(tensor, STATE_OUT, state, self.write_index(state, k(state)))
        for tensor in plan.results:
            out[tensor] = Binding(tensor, RESULT, plan.buffer_of[tensor], 0)
        return out

    def describe(self) -> str:
        lines = ["buffers:"]
        for b in self.buffers.values():
            shape = "×".join(str(d) for d in b.shape)
            lines.append(f"  {b.name:<24} {b.role:<6} {b.dtype:<8} [{shape}] × {b.count}")
        for name, s in self.stages.items():
            lines.append(
                f"stage {name}: state in {dict(s.state_inputs)}, state out {dict(s.state_outputs)}, "
                f"per call {list(s.per_call)}, results {list(s.results)}"
            )
        return "\n".join(lines)


def _check_same(spec, tensor, where: str) -> None:
    if list(tensor.shape) != list(spec.shape) or tensor.dtype != spec.dtype:
        raise BindingPlanError(
            f"state {spec.name!r} is {spec.dtype}{list(spec.shape)} but {where} is {tensor.dtype}{list(tensor.shape)}"
        )
