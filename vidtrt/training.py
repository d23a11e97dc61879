"""`vidtrt train`: trains a method's config on a video set in the ImageNet VID
devkit layout (``vidtrt synth-vid`` writes one), on the CPU.

The loop is the same for every method; what a method trains on and how its
losses are formed is the method's own (``Method.training_frames`` picks a
sample's frames, ``Method.training_loss`` runs its stages' modules on them,
with the shared losses of models/losses.py).

Detectors run their ResNets with frozen batch norm (upstream checkpoints
carry ImageNet statistics). Trained from scratch, as here, frozen identity
statistics leave the backbone unnormalised, so for training each frozen BN
becomes a real ``nn.BatchNorm2d`` (batch statistics, learned affine) and is
frozen again at the end with the statistics it ran up, re-estimated over
training frames with the final weights. The result is an ordinary native
checkpoint: ``vidtrt export --checkpoint`` takes it.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from .core.preprocess import Preprocessor
from .eval.vid import EvalError, FrameTruth, load_ground_truth
from .models.checkpoint import save_checkpoint
from .models.losses import Targets
from .models.resnet import FrozenBatchNorm2d, ResNet


class TrainingError(ValueError):
    """Training that cannot start: no data, a method that cannot be trained."""


# ------------------------------------------------------------ data


@dataclass
class TrainingFrame:
    image: torch.Tensor  # [1, 3, Hp, Wp], preprocessed
    targets: Targets  # in network-input pixels


class VideoSet:
    """The snippets of a devkit-layout split, their frames read and
    preprocessed on demand (and cached: a synthetic set is small)."""

    def __init__(self, root: str | Path, split: str, preprocess: Preprocessor, flip: bool = True):
        self.root = Path(root)
        try:
            frames = load_ground_truth(self.root, split)
        except EvalError as err:
            raise TrainingError(str(err)) from None
        self.snippets: dict[str, list[FrameTruth]] = {}
        for f in frames:
            self.snippets.setdefault(f.snippet, []).append(f)
        self.names = sorted(self.snippets)
        self.split = split
        self.preprocess = preprocess
        self.flip = flip
        self._cache: dict[tuple[str, int], tuple[torch.Tensor, np.ndarray, float, float]] = {}

    def __len__(self) -> int:
        return len(self.names)

    def frames(self, snippet: str) -> list[FrameTruth]:
        return self.snippets[snippet]

    def _image_path(self, truth: FrameTruth) -> Path:
        folder = self.root / "Data" / "VID" / self.split / truth.snippet
        for suffix in (".JPEG", ".jpg", ".jpeg", ".png"):
            path = folder / (truth.frame + suffix)
            if path.is_file():
                return path
        raise TrainingError(f"no image for {truth.snippet}/{truth.frame} under {folder}")

    def _prepared(self, snippet: str, index: int):
        key = (snippet, index)
        if key not in self._cache:
            truth = self.snippets[snippet][index]
            path = self._image_path(truth)
            frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if frame is None:
                raise TrainingError(f"cannot read {path}")
            prepared = self.preprocess(frame)
            sy = prepared.resized_hw[0] / prepared.original_hw[0]
            sx = prepared.resized_hw[1] / prepared.original_hw[1]
            self._cache[key] = (torch.from_numpy(prepared.tensor), prepared.resized_hw, sx, sy)
        return self._cache[key]

    def load(self, snippet: str, index: int, flip: bool = False) -> TrainingFrame:
        """Frame ``index`` of ``snippet``: the image, and its boxes scaled as the image was
        (devkit boxes are inclusive pixels: x2 + 1 is the right edge). ``flip`` mirrors both."""
        image, (rh, rw), sx, sy = self._prepared(snippet, index)
        truth = self.snippets[snippet][index]
        boxes = truth.boxes.astype(np.float32).copy()
        boxes[:, 2:] += 1.0
        boxes *= np.array([sx, sy, sx, sy], np.float32)
        if flip:
            image = image.clone()
            image[..., :rw] = image[..., :rw].flip(-1)
            boxes = np.stack([rw - boxes[:, 2], boxes[:, 1], rw - boxes[:, 0], boxes[:, 3]], axis=1).astype(np.float32)
        targets = Targets(torch.from_numpy(boxes.reshape(-1, 4)), torch.from_numpy(truth.labels.astype(np.int64)))
        return TrainingFrame(image, targets)


# ------------------------------------------------------------ batch norm

TRAINING_BN_EPS = 1e-5


def thaw_batchnorm(module: nn.Module) -> int:
    """Replaces every FrozenBatchNorm2d by an nn.BatchNorm2d holding its values; the count replaced."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, FrozenBatchNorm2d):
            # maskrcnn-benchmark's frozen BN has eps 0, which training cannot divide by.
            bn = nn.BatchNorm2d(child.weight.numel(), eps=max(child.eps, TRAINING_BN_EPS))
            bn.frozen_eps = child.eps
            with torch.no_grad():
                bn.weight.copy_(child.weight)
                bn.bias.copy_(child.bias)
                bn.running_mean.copy_(child.running_mean)
                bn.running_var.copy_(child.running_var)
            setattr(module, name, bn)
            count += 1
        else:
            count += thaw_batchnorm(child)
    return count


def freeze_batchnorm(module: nn.Module) -> int:
    """The reverse of thaw_batchnorm, with the statistics the BN ran up."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            eps = getattr(child, "frozen_eps", child.eps)
            frozen = FrozenBatchNorm2d(child.num_features, eps=eps)
            with torch.no_grad():
                frozen.weight.copy_(child.weight)
                frozen.bias.copy_(child.bias)
                frozen.running_mean.copy_(child.running_mean)
                # var + eps is what normalises: keep it when the frozen eps differs.
                frozen.running_var.copy_(child.running_var + (child.eps - eps))
            setattr(module, name, frozen)
            count += 1
        else:
            count += freeze_batchnorm(child)
    return count


@torch.no_grad()
def reestimate_batchnorm(detector: nn.Module, images: list[torch.Tensor], training_forwards=None) -> None:
    """Running statistics as the average over training inputs with the final weights.

    The ResNets' batch norms see frames: each ResNet runs on ``images``. Batch
    norms outside a ResNet (MFSA's and MEGA's res5 heads, which run on RoI
    features or on the C4 map) see what only the method's own forward gives
    them: ``training_forwards()`` runs it, with the ResNets' statistics held.
    """
    norms = [m for m in detector.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
    detector.train()
    backbones = [m for m in detector.modules() if isinstance(m, ResNet)]
    for image in images:
        for backbone in backbones:
            backbone(image)
    in_resnets = {id(m) for b in backbones for m in b.modules() if isinstance(m, nn.BatchNorm2d)}
    if any(id(bn) not in in_resnets for bn in norms):
        if training_forwards is None:
            raise ValueError("batch norms outside a ResNet need training_forwards to estimate their statistics")
        for bn in norms:
            if id(bn) in in_resnets:
                bn.eval()
        training_forwards()
    detector.eval()


# ------------------------------------------------------------ initial weights


def resnet_weights(state_dict: dict, prefixes: dict[str, str]) -> dict[str, torch.Tensor]:
    """The ResNet tensors of a detector's state dict, under the names a plain
    ``ResNet`` gives them (``prefixes``: the method's ``resnet_prefixes``)."""
    out = {}
    for key, tensor in state_dict.items():
        for prefix in sorted(prefixes, key=len, reverse=True):  # the longest prefix names it
            if key.startswith(prefix):
                out[prefixes[prefix] + key[len(prefix):]] = tensor
                break
    return out


@torch.no_grad()
def initialise_resnets(detector: nn.Module, method, source: str | Path) -> dict:
    """Copies the ResNet weights of ``source`` (a native checkpoint of any
    method) into ``detector``'s ResNets wherever name and shape agree: the
    papers start from an ImageNet-trained backbone, and on a small set a
    trained backbone is what lets the heads after it train. What was copied
    goes into the training record."""
    from .methods import get_method
    from .models.checkpoint import CheckpointError, read_checkpoint

    source = Path(source)
    try:
        data = read_checkpoint(source)
        source_method = get_method(data["method"])
    except (CheckpointError, ValueError) as err:
        raise TrainingError(f"--init: {err}") from None
    available = resnet_weights(data["state_dict"], source_method.resnet_prefixes)
    own = detector.state_dict()
    copied = 0
    for name, relative in resnet_weights({k: k for k in own}, method.resnet_prefixes).items():
        tensor = available.get(name)
        if tensor is not None and tensor.shape == own[relative].shape:
            own[relative].copy_(tensor)
            copied += 1
    if not copied:
        raise TrainingError(
            f"--init: no ResNet weight of {source} ({data['method']}, {data['config'].get('name')}) fits "
            f"{method.name}'s ResNets (different depth or width?)"
        )
    return {"checkpoint": str(source), "method": data["method"], "config": data["config"].get("name"), "tensors": copied}


# ------------------------------------------------------------ the loop


@dataclass
class TrainingSettings:
    steps: int = 1500
    optimizer: str = "sgd"  # "sgd" (momentum) or "adamw"
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup: int = 100
    decay_at: tuple[float, ...] = (0.67, 0.89)  # fractions of steps where the LR drops 10×
    clip_grad: float = 10.0
    # Batch statistics of one image differ from the population's the frozen BN
    # will use: from this fraction of the steps on, the statistics are estimated
    # once and held, so the rest of training adapts to exactly what inference sees.
    freeze_statistics_at: float = 0.5
    statistics_samples: int = 64  # training samples whose forward estimates the statistics outside the ResNets
    flip: bool = True
    seed: int = 0
    threads: int | None = None
    init: str | None = None  # a native checkpoint whose ResNet weights start training (initialise_resnets)


@dataclass
class TrainingRecord:
    method: str
    config: str
    data: str
    split: str
    data_parameters: dict | None
    settings: dict
    command: str
    seconds: float = 0.0
    initialised_from: dict | None = None  # initialise_resnets' account, with --init
    losses: list[dict] = field(default_factory=list)  # every log_every steps: step, lr, mean of each loss
    torch: str = torch.__version__
    machine: str = platform.machine()


def learning_rate(step: int, s: TrainingSettings) -> float:
    warm = min(1.0, (step + 1) / s.warmup) if s.warmup else 1.0
    drops = sum(step >= int(f * s.steps) for f in s.decay_at)
    return s.lr * warm * (0.1**drops)


def train(method: str, config: str, data: str | Path, out: str | Path, settings: TrainingSettings = TrainingSettings(),
          split: str = "train", command: str = "", log=print, progress: bool = True) -> TrainingRecord:
    """Trains ``config`` of ``method`` on ``data``; writes the checkpoint to ``out``
    and ``out`` + ``.json`` (the record: command, seed, data parameters, losses)."""
    from .methods import get_method

    m = get_method(method)
    cfg = m.config(config)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    dataset = VideoSet(data, split, Preprocessor.from_dict(asdict(cfg.preprocess)), flip=settings.flip)
    detector = m.build_detector(cfg)  # PyTorch's initialisation, from the seed above
    initialised_from = initialise_resnets(detector, m, settings.init) if settings.init else None
    thawed = thaw_batchnorm(detector)
    detector.train()
    params = [p for p in detector.parameters() if p.requires_grad]
    if settings.optimizer == "adamw":
        optimiser = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    elif settings.optimizer == "sgd":
        optimiser = torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)
    else:
        raise TrainingError(f"optimizer must be 'sgd' or 'adamw', got {settings.optimizer!r}")
    parameters_json = Path(data) / f"synth_{split}.json"  # written by vidtrt synth-vid
    record = TrainingRecord(
        method=m.name, config=config, data=str(data), split=split,
        data_parameters=json.loads(parameters_json.read_text())["config"] if parameters_json.is_file() else None,
        settings=asdict(settings), command=command, initialised_from=initialised_from,
    )
    log(f"training {config} ({m.name}) on {len(dataset)} snippets of {data} ({split}): {settings.steps} steps, "
        f"{sum(p.numel() for p in params) / 1e6:.2f}M parameters, {thawed} batch norms trained")
    if initialised_from:
        log(f"ResNet weights from {settings.init} ({initialised_from['tensors']} tensors)")
    start = time.perf_counter()
    window: dict[str, list[float]] = {}
    bar = _progress(settings.steps, progress)
    freeze_step = int(settings.freeze_statistics_at * settings.steps)

    def statistics_forwards():
        sample_rng = np.random.default_rng(settings.seed + 1)
        sample_generator = torch.Generator().manual_seed(settings.seed + 1)
        for _ in range(settings.statistics_samples):
            m.training_loss(detector, _draw_sample(dataset, m, cfg, sample_rng, settings.flip), sample_generator)

    for step in range(settings.steps):
        if step == freeze_step:
            # Leaves the detector in eval mode: batch norm holds these statistics from here on.
            reestimate_batchnorm(detector, _statistics_images(dataset), statistics_forwards)
        lr = learning_rate(step, settings)
        for group in optimiser.param_groups:
            group["lr"] = lr
        losses = m.training_loss(detector, _draw_sample(dataset, m, cfg, rng, settings.flip), generator)
        total = sum(losses.values())
        if not torch.isfinite(total):
            values = {k: float(v.detach()) for k, v in losses.items()}
            raise TrainingError(f"the loss became {float(total.detach())} at step {step} ({values}); lower --lr")
        optimiser.zero_grad(set_to_none=True)
        total.backward()
        if settings.clip_grad:
            torch.nn.utils.clip_grad_norm_(params, settings.clip_grad)
        optimiser.step()
        for k, v in losses.items():
            window.setdefault(k, []).append(float(v.detach()))
        log_every = max(1, settings.steps // 20)
        if (step + 1) % log_every == 0 or step + 1 == settings.steps:
            entry = {"step": step + 1, "lr": lr, **{k: float(np.mean(v)) for k, v in window.items()}}
            record.losses.append(entry)
            window = {}
            if bar is None:
                log("  " + "  ".join(f"{k} {v:.4g}" for k, v in entry.items()))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{float(total.detach()):.3f}")  # float() of a graph tensor warns
    if bar is not None:
        bar.close()
    if freeze_step >= settings.steps:
        reestimate_batchnorm(detector, _statistics_images(dataset), statistics_forwards)
    freeze_batchnorm(detector)
    detector.eval()
    record.seconds = time.perf_counter() - start
    out = Path(out)
    save_checkpoint(out, m.name, cfg, detector)
    Path(str(out) + ".json").write_text(json.dumps(asdict(record), indent=1) + "\n")
    log(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) and {out}.json after {record.seconds:.0f} s")
    return record


def _draw_sample(dataset: VideoSet, method, cfg, rng, flip: bool) -> list[TrainingFrame]:
    """One training sample: a snippet, a target frame, the frames the method asks for, flipped or not."""
    snippet = dataset.names[int(rng.integers(len(dataset)))]
    length = len(dataset.frames(snippet))
    target = int(rng.integers(length))
    indices = method.training_frames(cfg, length, target, rng)
    flip = flip and bool(rng.integers(2))
    # One object per distinct frame: a method can tell a repeated index by identity.
    loaded = {i: dataset.load(snippet, i, flip) for i in dict.fromkeys(indices)}
    return [loaded[i] for i in indices]


def _statistics_images(dataset: VideoSet, limit: int = 160) -> list[torch.Tensor]:
    """Frames from every snippet, spread over each, for batch-norm statistics."""
    return [dataset.load(name, i).image for name in dataset.names for i in range(0, len(dataset.frames(name)), 7)][:limit]


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, unit="step", dynamic_ncols=True, mininterval=1.0)

