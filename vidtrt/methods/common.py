"""What the methods share: native checkpoint loading and sample images."""

from __future__ import annotations

import torch

from ..models.checkpoint import CheckpointError, load_state_dict_strict, read_checkpoint


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


IMAGENET_PIXEL_STD = (57.375, 57.12, 58.395)


def peek_checkpoint(path):
    """The checkpoint file's contents (weights only) to tell upstream layouts
    from native ones, or None when it cannot be read: the reader that is then
    chosen reports why, precisely."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - see the docstring
        return None


def sample_image(cfg, seed: int = 0, height: int | None = None, width: int | None = None) -> torch.Tensor:
    """A normalised-looking input of the config's usual size (short side, 4:3, padded)."""
    p = cfg.preprocess
    height = height or p.short_side
    width = width or min(p.max_long_side, round(p.short_side * 4 / 3))
    height, width = (-(-x // p.pad_to_multiple) * p.pad_to_multiple for x in (height, width))
    g = torch.Generator().manual_seed(seed)
    # Smooth random structure (upsampled noise) rather than white noise, like an image.
    coarse = torch.randn(1, 3, max(1, height // 16), max(1, width // 16), generator=g)
    image = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    # Pixels spread about as much as ImageNet's (std ≈ 57.6) after this config's
    # normalisation: 1 for the usual std, ≈ 58 for maskrcnn-benchmark's std of 1.
    # Weights calibrated on these images then suit real frames too.
    spread = sum(IMAGENET_PIXEL_STD) / sum(p.std)
    return image if spread == 1.0 else image * spread


def nearby_frames(target: int, length: int, count: int, radius: int, rng) -> list[int]:
    """``count`` frames drawn uniformly within ``radius`` of ``target`` (either
    side, clamped to the snippet; repeats allowed, as upstream's samplers do
    near the ends): support frames for training."""
    return [min(max(target + int(rng.integers(-radius, radius + 1)), 0), length - 1) for _ in range(count)]


def key_frame_triplet(target: int, length: int, interval: int, rng) -> list[int]:
    """Training frames of a key-frame method: (target, its key frame within an
    interval either side, the key frame one interval before that, or the key
    frame again when that falls before the video starts: no state yet)."""
    key = min(max(target + int(rng.integers(-(interval - 1), interval)), 0), length - 1)
    previous = key - interval
    return [target, key, previous if previous >= 0 else key]


def with_stem_width(overrides, width: int | None) -> dict:
    """Config ``overrides`` plus the backbone width an upstream checkpoint's stem
    has (``resnet.stem_width``), when it has one."""
    return {**(overrides or {}), **({"backbone_width": width} if width else {})}
