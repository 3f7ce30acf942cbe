"""Selection strategies: which training samples a method treats as clean, per mini-batch or per epoch.

A strategy wraps one of the pure splitters of :mod:`visprompt.selection` and says where it applies:

* ``NoSelection``: every sample is clean (CoOp, CoOp+GCE, CoCoOp).
* ``OTSelection(scope="minibatch")``: one OT problem per training mini-batch, on the current model's
  probabilities (the VisPrompt authors' loop); ``scope="full"``: one OT problem over the whole training set
  before each epoch (NLPrompt). Clean = the OT pseudo-label equals the given label.

Each returns the clean mask and statistics in the loop's convention (``sel_*``/``n_*`` counts, ``ot_*``
means).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from visprompt.methods.base import TrainView

__all__ = ["NoSelection", "OTSelection", "Selector", "split_counts"]


def split_counts(clean: torch.Tensor, labels: torch.Tensor, true_labels: torch.Tensor) -> dict[str, int]:
    """Counts of a clean mask for the log: its size and its agreement with the truth (-1 = unknown).

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


@dataclass(frozen=True)
class NoSelection:
    """Every sample is clean."""

    scope: Literal["none"] = "none"

    def select(self, probs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        return torch.ones_like(labels, dtype=torch.bool), {}


@dataclass(frozen=True)
class OTSelection:
    """The OT split of docs/method.md (see :func:`visprompt.selection.ot.ot_split`)."""

    scope: Literal["minibatch", "full"] = "minibatch"
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
        """One OT split over the whole training set (current model, no augmentation)."""
        probs = view.logits().float().softmax(dim=-1)  # (N, C)
        return self.select(probs, view.labels)


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
