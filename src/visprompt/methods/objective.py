"""The split loss: one loss on the samples selected as clean, another on the rest.

With a batch of B samples, a clean mask c (B,) and per-sample losses l_clean, l_noisy on the given labels:

    joint:       L = [ alpha * sum_{i: c_i} l_clean(i) + (1 - alpha) * sum_{i: not c_i} l_noisy(i) ] / B
    sequential:  the batch is cut into its clean and noisy parts, each an optimizer step of its own
                 (NLPrompt's loop); a pure part's loss is the plain mean of its loss (alpha unused).

Normalising by B (not by the subset sizes) keeps each sample's weight independent of how many of its
batch-mates were selected, and makes the case "everything clean, alpha = 1" exactly the mean loss (CoOp).
``noisy = "none"`` drops the noisy part. A caller may pass soft targets for the noisy rows (``noisy_target``, (B, C)
probabilities): their per-sample loss is then ``(1 - noisy_mix) * noisy(given label) + noisy_mix * CE(target)``,
the cross-entropy to that distribution alone at ``noisy_mix = 1`` (visprompt-plus's ``method.noisy_target``).

Step size: in the joint schedule a clean sample's gradient is alpha times CoOp's at the same learning rate
(alpha = 0.5 halves it); ``normalize_alpha`` divides both weights by alpha, which keeps the ratio of the two
terms and gives a clean sample CoOp's step. The sequential schedule's parts are plain means (CoOp's step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from visprompt.losses import per_sample_loss, split_loss_terms
from visprompt.methods.base import PartMean

__all__ = ["SplitLoss"]


@dataclass(frozen=True)
class SplitLoss:
    """``alpha * clean(clean rows) + (1 - alpha) * noisy(noisy rows)``, see the module docstring.

    The per-sample losses and the masked sums are :func:`visprompt.losses.per_sample_loss` and
    :func:`visprompt.losses.split_loss_terms` (the joint schedule is :func:`visprompt.losses.visprompt_loss` with a
    choice of clean loss).
    """

    clean: Literal["ce", "gce", "mae", "sce"] = "ce"
    noisy: Literal["ce", "gce", "mae", "sce", "none"] = "gce"
    alpha: float = 0.5
    q: float = 0.5
    schedule: Literal["joint", "sequential"] = "joint"
    normalize_alpha: bool = False  # joint: weights (1, (1 - alpha) / alpha), a clean sample's step equals CoOp's
    noisy_scale: float = 1.0  # joint: a further factor on the noisy part's weight (visprompt-plus sets it per epoch)
    noisy_mix: float = 1.0  # with soft noisy targets: their share of the noisy rows' loss (the rest: the given label)

    def __call__(
        self, logits: torch.Tensor, labels: torch.Tensor, clean: torch.Tensor, noisy_target: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss (scalar) of logits (B, C) and labels (B,) with clean mask (B,), and its parts for the log: each
        part's mean loss over its own rows (a :class:`~visprompt.methods.base.PartMean`).

        ``noisy_target``: (B, C) probabilities; when given, the noisy rows' loss is the cross-entropy to them, mixed
        with ``noisy`` on the given labels by ``noisy_mix`` (module docstring).
        """
        clean = clean.bool().to(logits.device)
        noisy = ~clean
        stats: dict[str, float] = {}
        per_clean = per_noisy = None
        if clean.any():
            per_clean = per_sample_loss(self.clean, logits, labels, q=self.q)  # (B,)
            stats["loss_clean"] = PartMean(float(per_clean.detach()[clean].mean()), int(clean.sum()))
        if noisy.any() and (noisy_target is not None or self.noisy != "none"):
            per_noisy = self._per_noisy(logits, labels, noisy_target)  # (B,)
            stats["loss_noisy"] = PartMean(float(per_noisy.detach()[noisy].mean()), int(noisy.sum()))
        if self.schedule == "sequential":  # each part is its own step: plain means
            weights, normalize = (1.0, 1.0), "subset"
        else:
            weights, normalize = (self.alpha, 1.0 - self.alpha), "batch"
            if self.normalize_alpha:
                weights = (1.0, (1.0 - self.alpha) / self.alpha)
            weights = (weights[0], weights[1] * self.noisy_scale)
        clean_term, noisy_term = split_loss_terms(per_clean, per_noisy, clean, weights=weights, normalize=normalize)
        return clean_term + noisy_term, stats

    def _per_noisy(self, logits: torch.Tensor, labels: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """Per-sample loss (B,) of the noisy rows: ``noisy`` on the labels, CE to ``target``, or their mix."""
        if target is None:
            return per_sample_loss(self.noisy, logits, labels, q=self.q)
        soft = -(target.to(logits.device).float() * logits.float().log_softmax(dim=-1)).sum(dim=-1)
        if self.noisy_mix >= 1.0 or self.noisy == "none":
            return soft
        given = per_sample_loss(self.noisy, logits, labels, q=self.q)
        return (1.0 - self.noisy_mix) * given + self.noisy_mix * soft
