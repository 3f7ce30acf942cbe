"""Optimizer and learning-rate schedule of the paper's protocol (CoOp/Dassl's, stepped once per epoch).

SGD with momentum and weight decay on the trainable parameters only. The learning rate of epoch e
(0-based; W warm-up epochs, E epochs in total, base rate lr) is

    lr(e) = warmup_lr                                    e < W   (constant warm-up)
    lr(e) = lr * (1 + cos(pi * (e - W) / E)) / 2         e >= W  (cosine, restarted after the warm-up)

which is what Dassl's ``ConstantWarmupScheduler`` wrapped around ``CosineAnnealingLR(T_max=E)`` yields
when stepped at the end of every epoch (its successor counts from 0 after the warm-up, and the cosine period
is the full E epochs, so the last epoch's rate is small but not zero).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["build_optimizer", "build_scheduler", "lr_at"]


def lr_at(epoch: int, *, lr: float, epochs: int, warmup_epochs: int = 1, warmup_lr: float = 1e-5) -> float:
    """The learning rate used during ``epoch`` (0-based)."""
    if epoch < warmup_epochs:
        return warmup_lr
    return lr * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / epochs)) / 2.0


def build_optimizer(
    params: Iterable[nn.Parameter] | Sequence[dict[str, Any]],
    *,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
) -> torch.optim.SGD:
    """SGD over ``params`` (which must all require gradients).

    ``params`` is either the parameters or groups ``{"params": [...], "lr_scale": s}``
    (:meth:`~visprompt.methods.base.MethodBase.param_groups`); a group trains at ``s * lr``, and
    :func:`build_scheduler` keeps it at that multiple of the schedule.
    """
    items = list(params)
    groups = items if items and isinstance(items[0], dict) else [{"params": items, "lr_scale": 1.0}]
    groups = [{**g, "params": list(g["params"]), "lr_scale": float(g.get("lr_scale", 1.0))} for g in groups]
    flat = [p for g in groups for p in g["params"]]
    if not flat:
        raise ValueError("build_optimizer: no trainable parameters")
    if any(not p.requires_grad for p in flat):
        raise ValueError("build_optimizer: every parameter passed must require gradients")
    if any(g["lr_scale"] <= 0 for g in groups):
        raise ValueError("build_optimizer: every group's lr_scale must be > 0")
    for g in groups:
        g["lr"] = lr * g["lr_scale"]
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)


class _EpochRate:
    """The multiplier LambdaLR applies to the base rate: ``lr_at(epoch) / lr`` (a picklable callable)."""

    def __init__(self, lr: float, epochs: int, warmup_epochs: int, warmup_lr: float) -> None:
        self.lr, self.epochs, self.warmup_epochs, self.warmup_lr = lr, epochs, warmup_epochs, warmup_lr

    def __call__(self, epoch: int) -> float:
        rate = lr_at(epoch, lr=self.lr, epochs=self.epochs, warmup_epochs=self.warmup_epochs, warmup_lr=self.warmup_lr)
        return rate / self.lr


def build_scheduler(
    optimizer: torch.optim.Optimizer, *, epochs: int, warmup_epochs: int = 1, warmup_lr: float = 1e-5
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-epoch schedule of :func:`lr_at`; call ``scheduler.step()`` once at the end of every epoch.

    Every group follows it at its ``lr_scale`` (warm-up included): epoch e's rate is ``lr_scale * lr_at(e)``.
    """
    first = optimizer.param_groups[0]
    base = first["lr"] / first.get("lr_scale", 1.0)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _EpochRate(base, epochs, warmup_epochs, warmup_lr))
