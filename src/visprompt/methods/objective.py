"""The split loss: one loss on the samples selected as clean, another on the rest.

With a batch of B samples, a clean mask c (B,) and per-sample losses l_clean, l_noisy on the given labels:

    joint:       L = [ alpha * sum_{i: c_i} l_clean(i) + (1 - alpha) * sum_{i: not c_i} l_noisy(i) ] / B
    sequential:  the batch is cut into its clean and noisy parts, each an optimizer step of its own
                 (NLPrompt's loop); a pure part's loss is the plain mean of its loss (alpha unused).

Normalising by B (not by the subset sizes) keeps each sample's weight independent of how many of its
batch-mates were selected, and makes the case "everything clean, alpha = 1" exactly the mean loss (CoOp).
``noisy = "none"`` drops the noisy part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

__all__ = ["SplitLoss", "per_sample_loss"]


def per_sample_loss(name: str, logits: torch.Tensor, labels: torch.Tensor, *, q: float = 0.5) -> torch.Tensor:
    """Per-sample loss (B,) of a registered loss (:data:`visprompt.losses.LOSSES`), computed in float32."""
    from visprompt.losses import LOSSES

    fn = LOSSES.get(name)
    kwargs: dict[str, Any] = {"reduction": "none"}
    if name == "gce":
        kwargs["q"] = q
    return fn(logits.float(), labels, **kwargs)


@dataclass(frozen=True)
class SplitLoss:
    """``alpha * clean(clean rows) + (1 - alpha) * noisy(noisy rows)``, see the module docstring."""

    clean: Literal["ce", "gce", "mae", "sce"] = "ce"
    noisy: Literal["ce", "gce", "mae", "sce", "none"] = "gce"
    alpha: float = 0.5
    q: float = 0.5
    schedule: Literal["joint", "sequential"] = "joint"

    def __call__(
        self, logits: torch.Tensor, labels: torch.Tensor, clean: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss (scalar) of logits (B, C) and labels (B,) with clean mask (B,), and its parts for the log."""
        clean = clean.bool()
        noisy = ~clean
        batch = max(int(labels.numel()), 1)
        stats: dict[str, float] = {}
        total = logits.new_zeros((), dtype=torch.float32)
        if self.schedule == "sequential":
            weights = (1.0, 1.0)  # each part is its own step: plain means
            denominators = (max(int(clean.sum()), 1), max(int(noisy.sum()), 1))
        else:
            weights = (self.alpha, 1.0 - self.alpha)
            denominators = (batch, batch)
        if clean.any():
            part = per_sample_loss(self.clean, logits[clean], labels[clean], q=self.q)  # (B_clean,)
            total = total + weights[0] * part.sum() / denominators[0]
            stats["loss_clean"] = float(part.detach().mean())
        if noisy.any() and self.noisy != "none":
            part = per_sample_loss(self.noisy, logits[noisy], labels[noisy], q=self.q)  # (B_noisy,)
            total = total + weights[1] * part.sum() / denominators[1]
            stats["loss_noisy"] = float(part.detach().mean())
        return total, stats
