"""How good a clean/noisy split is, measured against the true labels where they are known.

A sample is *truly clean* when its given label equals its true label. For a selected (``clean``) mask:
precision = |selected and truly clean| / |selected|, recall = |selected and truly clean| / |truly clean|,
F1 their harmonic mean. Pseudo-label accuracy is the fraction of samples whose pseudo-label is the true label.
Unknown true labels (negative entries, e.g. -1 for real-noise data such as Food101N) are left out of every figure;
a ratio with an empty denominator is 0.0 (scikit-learn's ``zero_division=0``), so the result is always valid JSON.
"""

from __future__ import annotations

import torch

__all__ = ["selection_metrics"]


def _ratio(num: int, den: int) -> float:
    return num / den if den > 0 else 0.0


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
    n = clean.shape[0]
    for name, t in (("labels", labels), ("true_labels", true_labels)):
        if t.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},) like clean, got {tuple(t.shape)}")
    clean = clean.bool().cpu()
    labels, true_labels = labels.long().cpu(), true_labels.long().cpu()
    known = true_labels >= 0  # (N,)
    truly_clean = known & (labels == true_labels)
    hits = int((clean & truly_clean).sum())
    selected_known = int((clean & known).sum())
    num_known = int(known.sum())
    precision = _ratio(hits, selected_known)
    recall = _ratio(hits, int(truly_clean.sum()))
    out: dict[str, float | int] = {
        "selected_fraction": _ratio(int(clean.sum()), n),
        "known": num_known,
        "noise_rate": _ratio(num_known - int(truly_clean.sum()), num_known),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0,
    }
    if pseudo_labels is not None:
        if pseudo_labels.shape != (n,):
            raise ValueError(f"pseudo_labels must have shape ({n},), got {tuple(pseudo_labels.shape)}")
        correct = int((known & (pseudo_labels.long().cpu() == true_labels)).sum())
        out["pseudo_label_accuracy"] = _ratio(correct, num_known)
    return out
