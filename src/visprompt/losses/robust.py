r"""Classification losses for noisy labels, registered in :data:`LOSSES`.

Notation: B samples, C classes, logits :math:`z \in \mathbb{R}^{B \times C}`, :math:`p = \mathrm{softmax}(z)`,
given label :math:`y`, :math:`p_y` the probability of the given label.

==========  ======================================================  ==========================================
name        per-sample loss                                         reference
==========  ======================================================  ==========================================
``ce``      :math:`-\log p_y`                                       cross-entropy
``gce``     :math:`(1 - p_y^q) / q`, :math:`q \in (0, 1]`            Zhang & Sabuncu, NeurIPS 2018 (PTNL q=0.5)
``mae``     :math:`1 - p_y`                                         NLPrompt's code (GCE with q = 1)
``sce``     :math:`\alpha(-\log p_y) + \beta(-A)(1 - p_y)`          Wang et al., ICCV 2019, A = -4
==========  ======================================================  ==========================================

Conventions. GCE tends to CE as q -> 0 and equals ``mae`` at q = 1. ``mae`` here is :math:`1 - p_y`, what
NLPrompt's released trainer optimises (its "MAE" is GCE with q = 1); the L1 distance
:math:`\lVert e_y - p \rVert_1 = 2(1 - p_y)` of Ghosh et al. (AAAI 2017) is exactly twice it, so with SGD the
factor is a learning-rate rescaling. SCE's reverse cross-entropy :math:`-\sum_k p_k \log \tilde e_{y,k}` with
:math:`\log 0` clamped to A equals :math:`-A(1 - p_y)`.

Numerics. Everything is computed from ``log_softmax`` in float32 with autocast disabled, whatever the input
dtype (fp16/bf16 logits under mixed precision are upcast), and :math:`1 - p_y^q` as
:math:`-\mathrm{expm1}(q \log p_y)`: exact near :math:`p_y = 1`, gradient bounded as :math:`p_y \to 0` (no
clamping needed, no NaN at :math:`p_y = 0`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from visprompt.registry import Registry

__all__ = ["LOSSES", "LossFn", "Reduction", "cross_entropy", "gce", "mae", "per_sample_loss", "sce"]

Reduction = Literal["none", "mean", "sum"]
LossFn = Callable[..., torch.Tensor]  # fn(logits (B, C), labels (B,), *, reduction=..., **hyperparameters)

LOSSES: Registry[LossFn] = Registry("loss")


def _reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    """Apply ``reduction`` ("none", "mean" or "sum") to (B,) per-sample losses; the mean of none is 0."""
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "mean":
        return per_sample.sum() / max(per_sample.shape[0], 1)
    raise ValueError(f"unknown reduction {reduction!r}; expected 'none', 'mean' or 'sum'")


def _log_p_label(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,) float32 log p_y, computed outside autocast."""
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"expected logits (B, C) and labels (B,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    with torch.autocast(device_type=logits.device.type, enabled=False):
        log_p = F.log_softmax(logits.float(), dim=1)  # (B, C)
        return log_p.gather(1, labels.long()[:, None]).squeeze(1)  # (B,)


@LOSSES.register("ce")
def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, *, reduction: Reduction = "mean") -> torch.Tensor:
    """Cross-entropy -log p_y of (B, C) logits against (B,) labels."""
    return _reduce(-_log_p_label(logits, labels), reduction)


@LOSSES.register("gce")
def gce(logits: torch.Tensor, labels: torch.Tensor, *, q: float = 0.5, reduction: Reduction = "mean") -> torch.Tensor:
    """Generalised cross-entropy (1 - p_y^q) / q, q in (0, 1]."""
    if not 0.0 < q <= 1.0:
        raise ValueError(f"GCE needs q in (0, 1], got {q!r}")
    return _reduce(-torch.expm1(q * _log_p_label(logits, labels)) / q, reduction)


@LOSSES.register("mae")
def mae(logits: torch.Tensor, labels: torch.Tensor, *, reduction: Reduction = "mean") -> torch.Tensor:
    """Mean absolute error in NLPrompt's convention, 1 - p_y (= GCE at q = 1; half of |e_y - p|_1)."""
    return _reduce(-torch.expm1(_log_p_label(logits, labels)), reduction)


@LOSSES.register("sce")
def sce(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    alpha: float = 0.1,
    beta: float = 1.0,
    log_clamp: float = -4.0,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Symmetric cross-entropy alpha * CE + beta * RCE, RCE = -log_clamp * (1 - p_y) (defaults: CIFAR-10's)."""
    log_p_y = _log_p_label(logits, labels)
    return _reduce(alpha * -log_p_y + beta * -log_clamp * -torch.expm1(log_p_y), reduction)


def per_sample_loss(
    name: str, logits: torch.Tensor, labels: torch.Tensor, *, q: float = 0.5, **hyperparameters: float
) -> torch.Tensor:
    """Per-sample losses (B,) in float32 of the loss registered as ``name``; ``q`` is used by ``"gce"`` only.

    ``hyperparameters`` go to the loss (e.g. ``alpha``, ``beta`` for SCE; a ``q`` there wins over the argument).
    Raises :class:`~visprompt.errors.UnknownNameError` for a name not in :data:`LOSSES`.
    """
    fn = LOSSES.get(name)
    if name == "gce":
        hyperparameters.setdefault("q", q)
    return fn(logits, labels, reduction="none", **hyperparameters)
