"""Building a run's parts from its config: run name, frozen CLIP, model facts, trained parameters."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from visprompt.config import RunConfig
from visprompt.data.transforms import build_transform
from visprompt.engine.rundir import RunDir
from visprompt.errors import ConfigError
from visprompt.methods import MethodBase
from visprompt.models.frozen_clip import FrozenCLIP

__all__ = ["image_transform", "input_size", "load_clip", "load_trainable", "run_name"]


def run_name(cfg: RunConfig) -> str:
    """``cfg.run.name``, or one derived from the settings that define a run."""
    if cfg.run.name:
        return cfg.run.name
    arch = Path(cfg.backbone.arch).stem if cfg.backbone.arch.endswith(".json") else cfg.backbone.arch
    name = f"{cfg.data.dataset}_{cfg.method.name}_{arch}_{cfg.data.shots}shot_{cfg.noise.tag}_seed{cfg.run.seed}"
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", name)


def load_clip(cfg: RunConfig, device: torch.device) -> FrozenCLIP:
    """The frozen CLIP of ``cfg.backbone`` on ``device`` (a missing weights file is a one-line WeightsError).

    ``backbone.arch = "testbed"`` is the offline testbed's tiny CLIP with its compact tokenizer
    (``backbone.weights``: the folder holding its files; null = the copy shipped with the package).
    """
    from visprompt.models.backbone import load_backbone

    b = cfg.backbone
    if b.arch == "testbed":
        from visprompt.testbed import load_testbed_clip

        return load_testbed_clip(device, directory=b.weights)
    return load_backbone(b.arch, b.weights, device=device, cache_dir=b.cache_dir, sha256=b.sha256, seed=cfg.run.seed)


def input_size(clip: FrozenCLIP) -> int:
    """The square input side of the image tower."""
    size = clip.image_size
    return int(size if isinstance(size, int) else size[0])


def image_transform(clip: FrozenCLIP, train: bool = False) -> Callable[[Any], torch.Tensor]:
    """The image tower's preprocessing at its input size and normalisation; ``train``: with augmentation."""
    return build_transform(input_size(clip), clip.mean, clip.std, train=train)


def load_trainable(
    rd: RunDir, method: MethodBase, device: torch.device, params: Mapping[str, torch.Tensor] | None = None
) -> None:
    """Copy the checkpoint's trainable parameters into ``method`` (their names must match exactly).

    ``params``: copy these instead (the resume state's own copy, see :class:`~visprompt.engine.rundir.RunDir`).
    """
    source = rd.checkpoint_file if params is None else rd.state_file
    params = rd.load_checkpoint(device) if params is None else {k: v.to(device) for k, v in params.items()}
    own = method.named_trainable_parameters()
    if set(params) != set(own):
        raise ConfigError(f"{source}: its parameters do not match the run's method; use another --name")
    with torch.no_grad():
        for name, p in own.items():
            p.copy_(params[name])
