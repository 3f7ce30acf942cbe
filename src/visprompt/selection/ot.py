r"""Optimal-transport split of noisy-labelled samples into clean and noisy (VisPrompt, NLPrompt).

Notation: N samples, C classes, :math:`p \in \Delta_C^N` the model's class probabilities (rows sum to 1),
:math:`\tilde y` the given (possibly wrong) labels.

1. Cost. ``"neglogp"``: :math:`M_{ik} = -\log p_{ik}` (VisPrompt); ``"negp"``: :math:`M_{ik} = -p_{ik}` (the
   cost NLPrompt's code effectively uses). Probabilities are clamped at the smallest positive float64
   and their rows renormalised first.
2. Plan. Entropic OT with uniform marginals, :math:`a_i = 1/N` (every sample is transported once) and
   :math:`b_k = 1/C` (every class receives the same mass, which keeps pseudo-labels from collapsing onto a few
   confident classes), :math:`\varepsilon = 0.01`, solved in float64 by :func:`sinkhorn_log`.
3. Pseudo-labels :math:`\hat y_i = \arg\max_k Q_{ik}` and confidence
   :math:`c_i = \max_k Q_{ik} / \sum_k Q_{ik}` (:math:`= N \max_k Q_{ik}` when rows are exact).
4. Clean set :math:`\{i : \hat y_i = \tilde y_i\}`. With a curriculum ``budget`` :math:`\rho < 1` only the
   :math:`\lfloor \rho N \rfloor` samples of highest confidence may be clean (NLPrompt's top-:math:`\rho` rule,
   ranked over all N; ties go to the lower index).

Scope is the caller's choice of rows: pass the whole training set for one OT over it (NLPrompt, ``"full"``),
or one mini-batch at a time (the VisPrompt authors, ``"minibatch"``). Each problem is balanced on its own rows;
a batch must not be tiny (with N = 1 the plan is b itself and carries no information).
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from visprompt.selection.result import SplitResult
from visprompt.selection.sinkhorn import SinkhornStats, sinkhorn_log

__all__ = ["OtCost", "SinkhornStats", "ot_split", "sinkhorn_log"]

OtCost = Literal["neglogp", "negp"]
_PROB_ATOL = 1e-3  # tolerance on row sums of the probabilities, at least 4 ulps of their dtype


def _check_split_inputs(probs: torch.Tensor, labels: torch.Tensor, budget: float) -> None:
    if probs.dim() != 2 or probs.shape[0] == 0:
        raise ValueError(f"probs must be a non-empty (N, C) matrix, got shape {tuple(probs.shape)}")
    if labels.shape != probs.shape[:1]:
        raise ValueError(f"labels must have shape ({probs.shape[0]},), got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if not torch.isfinite(probs).all():
        raise ValueError("probs contains NaN or infinite entries")
    rows = probs.double().sum(1)
    atol = max(_PROB_ATOL, 4 * torch.finfo(probs.dtype).eps)  # bf16 rows are off by up to ~C * 2^-9
    if (probs < 0).any() or (rows - 1).abs().max() > atol:
        raise ValueError("probs must be probabilities (non-negative, rows summing to 1); pass softmax(logits)")
    if ((labels < 0) | (labels >= probs.shape[1])).any():
        raise ValueError(f"labels must lie in [0, {probs.shape[1]})")
    if not 0.0 <= budget <= 1.0:
        raise ValueError(f"budget must lie in [0, 1], got {budget!r}")


def _cost(probs: torch.Tensor, cost: str) -> torch.Tensor:
    p = probs.double().clamp_min(torch.finfo(torch.float64).tiny)  # (N, C)  -log 0 -> 708, not inf
    p = p / p.sum(dim=1, keepdim=True)  # (N, C)  exact rows (low-precision inputs are off by a few ulps)
    if cost == "neglogp":
        return -p.log()
    if cost == "negp":
        return -p
    raise ValueError(f"unknown OT cost {cost!r}; expected 'neglogp' or 'negp'")


@torch.no_grad()
def ot_split(
    probs: torch.Tensor,
    labels: torch.Tensor,
    *,
    cost: OtCost = "neglogp",
    eps: float = 0.01,
    tol: float = 1e-6,
    max_iter: int = 20000,
    budget: float = 1.0,
    eps_scaling: bool = True,
    max_newton: int = 50,
    device: torch.device | str | None = None,
) -> SplitResult:
    """Split N samples into clean and noisy by entropic OT from their probabilities to uniform classes.

    Args:
        probs: (N, C) class probabilities, ``softmax(logits)`` (any float dtype, any device). Logits are rejected.
        labels: (N,) given (noisy) labels in [0, C).
        cost: ``"neglogp"`` (M = -log p, VisPrompt) or ``"negp"`` (M = -p, NLPrompt).
        eps: entropic regularisation.
        tol: marginal-error tolerance of the solver (L1, see :func:`sinkhorn_log`).
        max_iter: cap on Sinkhorn sweeps; failing to converge warns and sets ``stats["converged"] = False``.
        budget: curriculum fraction in [0, 1]; only the top ``floor(budget * N)`` samples by confidence can be clean.
        eps_scaling: anneal eps in the solver (same solution, faster).
        max_newton: cap on the solver's Newton steps; ``eps_scaling=False, max_newton=0`` is plain Sinkhorn
            (e.g. the authors' fixed 1000 iterations: ``max_iter=1000``, which then usually does not converge).
        device: where to solve (default: ``probs.device``). Mini-batch problems (N ~ 16) run a few hundred tiny
            steps whose launch latency dominates on an accelerator: ``device="cpu"`` is usually faster there.

    Returns:
        :class:`SplitResult` on ``probs.device``: ``clean`` (pseudo-label == label, within budget),
        ``pseudo_labels`` (argmax of the plan rows), ``confidence`` (row-normalised max of the plan) and ``stats``
        with ``n``, ``num_clean``, ``clean_fraction``, ``relabel_fraction`` (pseudo-label != label), ``cost``,
        ``budget`` and the solver's ``iterations``, ``newton_steps``, ``marginal_error``, ``converged``, ``stages``,
        ``eps``, ``tol``.

    Raises:
        ValueError: malformed probabilities or labels, NaN, a budget outside [0, 1], or an unknown cost.
    """
    _check_split_inputs(probs, labels, budget)
    n, out_device = probs.shape[0], probs.device
    probs = probs if device is None else probs.to(device)
    plan, solver = sinkhorn_log(
        _cost(probs, cost), eps=eps, tol=tol, max_iter=max_iter, eps_scaling=eps_scaling, max_newton=max_newton
    )
    top, pseudo = plan.max(dim=1)  # (N,), (N,)  argmax_k Q_ik
    confidence = top / plan.sum(dim=1)  # (N,)  share of row i's mass on its pseudo-label
    pseudo, confidence = pseudo.to(out_device), confidence.to(out_device)

    labels = labels.to(device=out_device, dtype=torch.long)
    clean = pseudo == labels  # (N,)
    if budget < 1.0:
        keep = torch.zeros_like(clean)
        order = torch.argsort(confidence, descending=True, stable=True)
        keep[order[: math.floor(budget * n)]] = True
        clean &= keep

    stats = {
        **_split_stats(clean, pseudo, labels),
        "cost": cost,
        "budget": float(budget),
        **solver.as_dict(),
    }
    return SplitResult(clean=clean, pseudo_labels=pseudo, confidence=confidence.float(), stats=stats)


def _split_stats(clean: torch.Tensor, pseudo: torch.Tensor, labels: torch.Tensor) -> dict[str, float | int]:
    """``n``, ``num_clean``, ``clean_fraction`` and ``relabel_fraction`` (pseudo-label != label) of (N,) tensors."""
    n, num_clean = clean.shape[0], int(clean.sum())
    return {
        "n": n,
        "num_clean": num_clean,
        "clean_fraction": num_clean / n,
        "relabel_fraction": float((pseudo != labels).double().mean()),
    }
