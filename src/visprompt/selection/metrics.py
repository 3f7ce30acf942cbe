"""How good a clean/noisy split is, measured against the true labels where they are known.

A sample is *truly clean* when its given label equals its true label. For a selected (``clean``) mask:
precision = |selected and truly clean| / |selected|, recall = |selected and truly clean| / |truly clean|,
F1 their harmonic mean. Pseudo-label accuracy is the fraction of samples whose pseudo-label is the true label.
Unknown true labels (negative entries, e.g. -1 for real-noise data such as Food101N) are left out of every figure;
a ratio with an empty denominator is 0.0 (scikit-learn's ``zero_division=0``), so the result is always valid JSON.
"""

from __future__ import annotations

import torch

__all__ = ["selection_counts", "selection_metrics"]


def _ratio(num: int, den: int) -> float:
    return num / den if den > 0 else 0.0


def selection_counts(clean: torch.Tensor, labels: torch.Tensor, true_labels: torch.Tensor) -> dict[str, int]:
    """The counts behind :func:`selection_metrics` (they add up over mini-batches, unlike the ratios).

    Args:
        clean: (N,) bool mask of samples selected as clean.
        labels: (N,) given (noisy) labels.
        true_labels: (N,) true labels; negative where unknown.

    Returns:
        ``n`` (all samples), ``selected`` (the mask's size), ``known`` (samples with a true label),
        ``selected_known`` (selected among the known), ``truly_clean`` (known and given label = true label) and
        ``hits`` (selected and truly clean).
    """
    n = clean.shape[0]
    for name, t in (("labels", labels), ("true_labels", true_labels)):
        if t.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},) like clean, got {tuple(t.shape)}")
    clean = clean.bool().cpu()
    labels, true_labels = labels.long().cpu(), true_labels.long().cpu()
    known = true_labels >= 0  # (N,)
    truly_clean = known & (labels == true_labels)
    return {
        "n": n,
        "selected": int(clean.sum()),
        "known": int(known.sum()),
        "selected_known": int((clean & known).sum()),
        "truly_clean": int(truly_clean.sum()),
        "hits": int((clean & truly_clean).sum()),
    }


def selection_metrics(
    clean: torch.Tensor,
    labels: torch.Tensor,
    true_labels: torch.Tensor,
    pseudo_labels: torch.Tensor | None = None,
) -> dict[str, float | int]:
    """Precision, recall and F1 of a clean mask, plus the split's size and the true noise rate.

    Args:
        clean: (N,) bool mask of samples selected as clean.
        labels: (N,) given (noisy) labels.
        true_labels: (N,) true labels; negative where unknown.
        pseudo_labels: optional (N,) pseudo-labels, for ``pseudo_label_accuracy``.

    Returns:
        ``selected_fraction`` (over all N), ``known`` (samples with a true label), ``noise_rate``, ``precision``,
        ``recall``, ``f1`` (over known samples) and, with pseudo-labels, ``pseudo_label_accuracy``.
    """
    c = selection_counts(clean, labels, true_labels)
    n, num_known = c["n"], c["known"]
    precision = _ratio(c["hits"], c["selected_known"])
    recall = _ratio(c["hits"], c["truly_clean"])
    out: dict[str, float | int] = {
        "selected_fraction": _ratio(c["selected"], n),
        "known": num_known,
        "noise_rate": _ratio(num_known - c["truly_clean"], num_known),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0,
    }
    if pseudo_labels is not None:
        if pseudo_labels.shape != (n,):
            raise ValueError(f"pseudo_labels must have shape ({n},), got {tuple(pseudo_labels.shape)}")
        true_labels = true_labels.long().cpu()
        correct = int(((true_labels >= 0) & (pseudo_labels.long().cpu() == true_labels)).sum())
        out["pseudo_label_accuracy"] = _ratio(correct, num_known)
    return out
