"""The Method interface: what every video detection method provides.

A method is a detector split into stages (one ONNX graph / engine each), the
state carried between stage invocations as explicit inputs and outputs, a
schedule (run by its pipeline) with typed options, and a whole-video
reference straight from the paper's algorithm. Everything that lists or
dispatches on methods — the CLI, `vidtrt models`, export, calibration,
benchmarks, the demo, pipelines, the conformance tests — goes through the
registry (``vidtrt.methods``), never through per-method if/else chains.

Layering: methods build on models (the networks) and core (the bundle
contract); the runtime's pipelines build on methods. A method names its
pipeline by module and class (``pipeline``), resolved by the runtime, so this
layer imports nothing above it.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

from ..core.bundle import StateSpec


@dataclass(frozen=True)
class ScheduleOption:
    """One typed schedule option of a method.

    ``name`` is the keyword of the pipeline and the whole-video reference's
    schedule, and (with dashes) the CLI flag. Its default is the config field
    ``config_field`` (``name`` when not given), which is also its key in the
    bundle manifest's ``schedule``. ``at_export`` options shape a
    stage graph (MFSA's batch size K, TRoI's number of support frames): they
    are set when exporting and fixed in the bundle."""

    name: str
    kind: type  # int, float or str
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    config_field: str | None = None
    at_export: bool = False
    symbol: str | None = None  # the paper's letter (K, T), used in messages

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def field(self) -> str:
        return self.config_field or self.name

    def parse(self, value: Any, method: str) -> Any:
        """The value as its kind, validated; ValueError names the option."""
        where = f"{method}: {self.name}"
        flag = f" ({self.flag})"
        if self.kind is int:
            try:
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError
                number = int(value)
            except (TypeError, ValueError):
                raise ValueError(f"{where} must be an integer, got {value!r}{flag}") from None
            return self._bounded(number, where, flag)
        if self.kind is float:
            try:
                if isinstance(value, bool):
                    raise ValueError
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{where} must be a number, got {value!r}{flag}") from None
            if number != number:
                raise ValueError(f"{where} must be a number, got {value!r}{flag}")
            return self._bounded(number, where, flag)
        text = str(value)
        if self.choices and text not in self.choices:
            raise ValueError(f"{where} must be one of {', '.join(self.choices)}, got {text!r}{flag}")
        return text

    def _bounded(self, number, where: str, flag: str):
        if self.minimum is not None and number < self.minimum:
            raise ValueError(f"{where} must be >= {self.minimum}, got {number}{flag}")
        if self.maximum is not None and number > self.maximum:
            raise ValueError(f"{where} must be <= {self.maximum}, got {number}{flag}")
        return number

    def describe(self) -> str:
        """``help [values]``, for --help."""
        kinds = {int: "integer", float: "number"}
        values = "|".join(self.choices) if self.choices else kinds.get(self.kind, "text")
        bound = ""
        if self.minimum is not None and self.maximum is not None:
            bound = f" in [{self.minimum}, {self.maximum}]"
        elif self.minimum is not None:
            bound = f" >= {self.minimum}"
        when = "; fixed at export" if self.at_export else ""
        return f"{self.help} [{values}{bound}{when}]"


class Method(ABC):
    """One registered method (one paper). Subclasses set the class attributes
    and implement the abstract methods; ``vidtrt.methods`` holds one instance
    of each."""

    name: ClassVar[str]  # "psla": what bundles, the CLI and configs call it
    title: ClassVar[str]  # "PSLA (Progressive Sparse Local Attention)"
    config_class: ClassVar[type]
    schedule_options: ClassVar[tuple[ScheduleOption, ...]] = ()
    # stage → what it runs; the scheduled stages and the per-frame baseline (if any).
    stages: ClassVar[Mapping[str, str]]
    baseline_stage: ClassVar[str | None] = None  # per-frame detection, for benchmarks; never scheduled
    stage_titles: ClassVar[Mapping[str, str]] = {}  # short names for reports (default: "<stage> stage")
    # "<module>:<class>" under vidtrt.runtime.pipelines, resolved by create_pipeline.
    pipeline: ClassVar[str]
    detector_class: ClassVar[type]
    paper_params: ClassVar[Mapping[str, str]] = {}  # config → what the paper reports
    # Where the detector's ResNet weights are: state-dict prefix → what a plain
    # ResNet calls them there ("" = its root). `vidtrt train --init` maps through it.
    resnet_prefixes: ClassVar[Mapping[str, str]] = {"backbone.": ""}

    # ---------------------------------------------------------------- configs and detectors

    @property
    @abstractmethod
    def configs(self) -> Mapping[str, Any]:
        """Named configs (``<name>_small`` is the small one every test uses)."""

    @property
    def small_config(self) -> str:
        return f"{self.name}_small"

    def config(self, name: str, overrides: Mapping[str, Any] | None = None):
        """The named config with ``overrides`` of its fields."""
        if name not in self.configs:
            raise ValueError(f"{self.name} has no config {name!r}; its configs: {', '.join(self.configs)}")
        cfg = self.configs[name]
        if overrides:
            fields = {f.name for f in dataclasses.fields(cfg)}
            unknown = sorted(set(overrides) - fields)
            if unknown:
                raise ValueError(f"{self.name} configs have no field {', '.join(unknown)}")
            cfg = dataclasses.replace(cfg, **overrides)
        return cfg

    def build_detector(self, cfg):
        """The detector of ``cfg`` in eval mode with freshly initialised weights."""
        return self.detector_class(cfg).eval()

    @abstractmethod
    def seeded_detector(self, cfg, seed: int = 0):
        """A detector with deterministic, decisive weights (models/init.py)."""

    def load_detector(self, config_name: str | None = None, checkpoint=None, seed: int = 0, overrides: Mapping | None = None):
        """(config, detector) from a native checkpoint (its config travels
        with it), or a named config (with ``overrides`` of its fields) and
        seeded weights."""
        if checkpoint is not None:
            from .common import load_native  # torch: imported when a detector is loaded, not with the registry

            return load_native(self.name, self.config_class, self.detector_class, checkpoint, config_name)
        if config_name is None:
            raise ValueError("give a config name or a checkpoint")
        cfg = self.config(config_name, overrides)
        return cfg, self.seeded_detector(cfg, seed)

    # ---------------------------------------------------------------- training

    def training_frames(self, cfg, length: int, target: int, rng) -> list[int]:
        """The frames one training sample of a ``length``-frame snippet uses,
        the loss-carrying ``target`` first (``rng``: numpy Generator).
        Default: the target alone."""
        return [target]

    def training_loss(self, detector, frames, generator=None) -> dict:
        """name → scalar loss for one sample (``frames``: training.TrainingFrame
        objects in ``training_frames`` order), running the detector's modules in
        training mode as the paper trains them. ``generator`` seeds sampling."""
        raise NotImplementedError(f"{self.name} has no training procedure yet")

    # ---------------------------------------------------------------- stages

    @abstractmethod
    def stage_modules(self, detector) -> dict:
        """stage → nn.Module with ``input_names`` / ``output_names``."""

    @abstractmethod
    def stage_samples(self, detector, seed: int = 0, height: int | None = None, width: int | None = None) -> dict:
        """stage → input tuple, with real carried state where there is state."""

    @abstractmethod
    def dynamic_axes(self, stage: str) -> dict:
        """ONNX dynamic axes of a stage: image H/W and feature map h/w."""

    def state_specs(self, cfg) -> list[StateSpec]:
        """The tensors carried between invocations (none by default)."""
        return []

    # ---------------------------------------------------------------- schedule

    def option(self, name: str) -> ScheduleOption:
        for option in self.schedule_options:
            if option.name == name:
                return option
        raise ValueError(f"{self.name} has no schedule option {name!r}; it has {self._option_list()}")

    def _option_list(self) -> str:
        return ", ".join(o.name for o in self.schedule_options) or "none"

    def default_schedule(self, cfg) -> dict:
        """The schedule written into a bundle exported from ``cfg`` (keyed by config field)."""
        return {o.field: o.parse(getattr(cfg, o.field), self.name) for o in self.schedule_options}

    def export_overrides(self, options: Mapping[str, Any]) -> dict:
        """Config field overrides for exporting with schedule ``options`` set
        (every option can be set at export: it becomes the bundle's default)."""
        out = {}
        for name, value in options.items():
            if value is None:
                continue
            option = self.option(name)
            out[option.field] = option.parse(value, self.name)
        return out

    def resolve_schedule(self, bundle_schedule: Mapping[str, Any], options: Mapping[str, Any] | None = None) -> dict:
        """The schedule a pipeline runs, keyed by option name: the bundle's, with ``options``
        (None = keep the bundle's) validated on top. An option the method does
        not have is an error listing the ones it has; one fixed at export must
        keep the exported value."""
        options = {k: v for k, v in (options or {}).items() if v is not None}
        schedule = {}
        for o in self.schedule_options:
            if o.field in bundle_schedule:
                value = bundle_schedule[o.field]
            else:
                raise ValueError(f"the bundle's schedule lacks {self.name} option {o.name!r}; re-export it")
            schedule[o.name] = o.parse(value, self.name)
        for name, value in options.items():
            option = self.option(name)
            parsed = option.parse(value, self.name)
            if option.at_export and parsed != schedule[name]:
                raise ValueError(
                    f"{self.name}: {name} is fixed at export and the graphs were exported for "
                    f"{option.symbol or name} = {schedule[name]}; got {name}={parsed}. Re-export with "
                    f"`vidtrt export --method {self.name} ... {option.flag} {parsed}`"
                )
            schedule[name] = parsed
        return schedule

    def schedule_variants(self) -> list[dict]:
        """One schedule override per choice of every choice-typed option
        (key placement first/middle, offline/online, multi/single focus):
        what the conformance tests run."""
        return [{o.name: choice} for o in self.schedule_options if o.choices for choice in o.choices] or [{}]

    # ---------------------------------------------------------------- reference

    @abstractmethod
    def video_reference(self, detector, images: Sequence, schedule: Mapping[str, Any]) -> list:
        """The paper's algorithm over a whole video, with no stage split:
        per frame (boxes, scores, labels, valid) in network-input coordinates,
        in frame order. ``schedule`` is a full schedule (``resolve_schedule``)."""

    def stage_title(self, stage: str) -> str:
        return self.stage_titles.get(stage, f"{stage} stage")

    def __repr__(self) -> str:
        return f"<method {self.name}>"
