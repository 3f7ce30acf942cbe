"""Tiny CLIP towers for tests: real open_clip architectures and the real CLIP tokenizer, a few M parameters.

Both towers share a 2-layer, 64-wide text transformer with the full CLIP vocabulary (49408 tokens, 77
positions: most of the ~3.4 M parameters are the token embedding) and a 32-wide joint space. The image
towers are a 2-layer ViT on 32 px images (patch 8, T = 17 tokens) and a one-block-per-stage ModifiedResNet
on 64 px images (2x2 grid, T = 5 tokens). Weights are random (seeded), so features carry no meaning.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from visprompt.errors import ConfigError
from visprompt.models.backbone import build_open_clip_model
from visprompt.models.frozen_clip import FrozenCLIP, clip_tokenizer

_TEXT_CFG = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2}

TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "vit": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32},
        "text_cfg": _TEXT_CFG,
    },
    "resnet": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 16},
        "text_cfg": _TEXT_CFG,
    },
}


def tiny_config(tower: str = "vit", quick_gelu: bool = True) -> dict[str, Any]:
    """The open_clip model config (a dict in ``model_configs/*.json`` form) of a tiny tower."""
    if tower not in TINY_CONFIGS:
        raise ConfigError(f"unknown tiny tower {tower!r} (expected 'vit' or 'resnet')")
    return dict(copy.deepcopy(TINY_CONFIGS[tower]), quick_gelu=quick_gelu)


def tiny_clip(
    tower: str = "vit",
    seed: int = 0,
    *,
    quick_gelu: bool = True,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> FrozenCLIP:
    """A frozen tiny CLIP (``tower`` "vit" or "resnet"), randomly initialised from ``seed``."""
    cfg = tiny_config(tower, quick_gelu)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_open_clip_model({k: v for k, v in cfg.items() if k != "quick_gelu"}, quick_gelu)
    model = model.to(device=device, dtype=dtype)
    return FrozenCLIP(model, clip_tokenizer(77), arch=f"tiny-{tower}", model_cfg=cfg)


def tiny_image_batch(clip: FrozenCLIP, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A seeded batch of random images (B, 3, H, W) at the tower's input size."""
    size = clip.image_size
    h, w = (size, size) if isinstance(size, int) else size
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, h, w, generator=gen).to(device=clip.device, dtype=clip.dtype)
