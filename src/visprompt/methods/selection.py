"""Selection strategies: which training samples a method treats as clean, per mini-batch or per epoch.

A strategy wraps one of the pure splitters of :mod:`visprompt.selection` and says where it applies:

* ``NoSelection``: every sample is clean (CoOp, CoOp+GCE, CoCoOp).
* ``OTSelection(scope="minibatch")``: one OT problem per training step, on that step's own train-mode
  probabilities (an online variant); ``scope="epoch"``: at the start of each epoch, in eval mode and before any
  update, one OT problem per mini-batch of a shuffled pass over the training set (the VisPrompt authors' loop;
  the method then trains on clean-only and noisy-only batches); ``scope="full"``: one OT problem over the
  whole training set before each epoch (NLPrompt). Clean = the OT pseudo-label equals the given label.

Each returns the clean mask and statistics in the loop's convention (``sel_*``/``n_*`` counts, ``ot_*``
means).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from visprompt.methods.base import TrainView

__all__ = [
    "NoSelection",
    "OTSelection",
    "Selector",
    "epoch_batches",
    "rejection_concentration",
    "split_counts",
    "split_per_batch",
]


def split_counts(clean: torch.Tensor, labels: torch.Tensor, true_labels: torch.Tensor) -> dict[str, int]:
    """Counts of a clean mask for the log: its size and its agreement with the truth (-1: unknown, -2: the label
    known wrong).

    ``n_clean``/``n_selected_from`` are the mask size and the number of samples it was drawn from; precision =
    ``sel_hits / sel_selected`` and recall = ``sel_hits / sel_true_clean`` over samples whose truth is known.
    """
    from visprompt.selection.metrics import selection_counts

    c = selection_counts(clean, labels, true_labels)
    return {
        "n_clean": c["selected"],
        "n_selected_from": c["n"],
        "sel_selected": c["selected_known"],
        "sel_true_clean": c["truly_clean"],
        "sel_hits": c["hits"],
    }


def rejection_concentration(pseudo: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float | None:
    """How concentrated the given labels of a split's rejected samples are, per OT pseudo-label: about 0 to 1.

    Among the rejected samples (given label != pseudo-label) with the same pseudo-label p, the chance that two drawn
    without replacement carry the same given label, pooled over p (an unbiased estimate of sum_g P(g | p)^2, so it
    does not grow with few rejections), rescaled so that 0 is given labels spread evenly over the other C - 1
    classes (symmetric noise; fewer repeats than that fall below 0) and 1 is one given label per pseudo-label (a
    pair flip, asymmetric noise). None when no pseudo-label has two rejections, or when C < 3 (every rejection of p
    then has the one other label). A sample a curriculum budget (``method.selection.budget < 1``) leaves out of the
    clean set while its pseudo-label is its label is no rejection here: its label points nowhere else.
    """
    rejected = pseudo != labels
    if num_classes < 3 or int(rejected.sum()) < 2:
        return None
    p, g = pseudo[rejected].long(), labels[rejected].long()
    pairs = torch.bincount(p * num_classes + g, minlength=num_classes * num_classes).double()  # (C*C,)
    per_pseudo = pairs.view(num_classes, num_classes).sum(dim=1)  # (C,)
    drawn = float((per_pseudo * (per_pseudo - 1)).sum())
    if drawn == 0:
        return None
    collision = float((pairs * (pairs - 1)).sum()) / drawn
    spread = 1.0 / (num_classes - 1)
    return (collision - spread) / (1.0 - spread)


@dataclass(frozen=True)
class NoSelection:
    """Every sample is clean."""

    scope: Literal["none"] = "none"

    def select(self, probs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        return torch.ones_like(labels, dtype=torch.bool), {}


@dataclass(frozen=True)
class OTSelection:
    """The OT split of docs/method.md (see :func:`visprompt.selection.ot.ot_split`)."""

    scope: Literal["minibatch", "epoch", "full"] = "minibatch"
    cost: Literal["neglogp", "negp"] = "neglogp"
    eps: float = 0.01
    tol: float = 1e-6
    max_iter: int = 20000
    budget: float = 1.0

    def select(self, probs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """Clean mask (N,) of rows ``probs`` (N, C) with given ``labels`` (N,), and the solver's statistics."""
        from visprompt.selection.ot import ot_split

        result = ot_split(
            probs, labels, cost=self.cost, eps=self.eps, tol=self.tol, max_iter=self.max_iter, budget=self.budget
        )
        return result.clean.to(labels.device), _solver_stats(result)

    def select_full(self, view: TrainView) -> tuple[torch.Tensor, dict[str, Any]]:
        """The epoch's split of the training set (``scope`` full or epoch): clean mask (N,) and statistics."""
        result, _ = self.epoch_split(view)
        return result.clean.to(view.labels.device), _solver_stats(result)

    def epoch_split(self, view: TrainView) -> tuple[Any, torch.Tensor]:
        """The epoch's split from the current model in eval mode, before any update: (SplitResult, probs (N, C)).

        ``scope="full"``: one OT problem over the N samples. ``scope="epoch"``: one OT problem per mini-batch of a
        shuffled pass over the training set (``view.batch_size``, ``view.generator``), the authors' loop.
        """
        from visprompt.selection.ot import ot_split

        if self.scope not in ("full", "epoch"):
            raise ValueError(f"epoch_split needs scope 'full' or 'epoch', got {self.scope!r}")
        probs = view.logits().float().softmax(dim=-1)  # (N, C), eval mode (TrainView.logits)
        kwargs = {"cost": self.cost, "eps": self.eps, "tol": self.tol, "max_iter": self.max_iter, "budget": self.budget}
        if self.scope == "full":
            return ot_split(probs, view.labels, **kwargs), probs
        if view.batch_size < 1 or view.generator is None:
            raise ValueError("scope 'epoch' needs the view's batch_size and generator (set by the training loop)")
        batches = epoch_batches(view.num_samples, view.batch_size, view.generator)
        return split_per_batch(probs, view.labels, batches, **kwargs), probs


def split_per_batch(probs: torch.Tensor, labels: torch.Tensor, batches: list[torch.Tensor], **kwargs: Any) -> Any:
    """One :func:`~visprompt.selection.ot.ot_split` per batch of a partition of range(N), assembled in order.

    Returns a SplitResult over the N rows; ``stats``: ``iterations`` (sum), ``marginal_error`` (max), ``converged``
    (all), ``problems`` (number of batches) and ``num_clean``.
    """
    from visprompt.selection.ot import ot_split
    from visprompt.selection.result import SplitResult

    n = probs.shape[0]
    index = torch.cat(batches) if batches else torch.empty(0, dtype=torch.long)
    if index.numel() != n or not torch.equal(torch.sort(index).values, torch.arange(n)):
        raise ValueError(f"batches must partition range({n}): every row exactly once")
    clean = torch.zeros(n, dtype=torch.bool, device=probs.device)
    pseudo = torch.zeros(n, dtype=torch.long, device=probs.device)
    confidence = torch.zeros(n, dtype=torch.float32, device=probs.device)
    parts = []
    for idx in batches:
        idx = idx.to(probs.device)
        part = ot_split(probs[idx], labels[idx], **kwargs)
        clean[idx], pseudo[idx], confidence[idx] = part.clean, part.pseudo_labels, part.confidence
        parts.append(part.stats)
    stats = {
        "n": n,
        "num_clean": int(clean.sum()),
        "problems": len(parts),
        "iterations": sum(int(p["iterations"]) for p in parts),
        "marginal_error": max(float(p["marginal_error"]) for p in parts),
        "converged": all(bool(p["converged"]) for p in parts),
    }
    return SplitResult(clean=clean, pseudo_labels=pseudo, confidence=confidence, stats=stats)


def epoch_batches(num_samples: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A shuffled partition of range(N) into batches for the epoch-scope split: every sample exactly once.

    Unlike the training plan nothing is dropped (a dropped sample would have no split); a last batch of a single
    sample, whose OT problem carries no information, joins the batch before it.
    """
    batches = list(torch.randperm(num_samples, generator=generator).split(batch_size))
    if len(batches) > 1 and batches[-1].numel() < 2:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


def _solver_stats(result: Any) -> dict[str, float]:
    """``ot_iterations``, ``ot_marginal_error``, ``ot_converged`` from a SplitResult (fields or a stats dict)."""
    stats = dict(getattr(result, "stats", None) or {})
    out = {}
    for key in ("iterations", "marginal_error", "converged"):
        value = getattr(result, key, stats.get(key))
        if value is not None:
            out[f"ot_{key}"] = float(value)
    return out


Selector = NoSelection | OTSelection
