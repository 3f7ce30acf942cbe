"""How good a clean/noisy split is, measured against the true labels where they are known.

A sample is *truly clean* when its given label equals its true label. For a selected (``clean``) mask:
precision = |selected and truly clean| / |selected|, recall = |selected and truly clean| / |truly clean|,
F1 their harmonic mean. Pseudo-label accuracy is the fraction of samples whose pseudo-label is the true label.
Unknown true labels (-1, e.g. Food101N's unverified images) are left out of every figure; a label known wrong
whose class is unknown (-2, Food101N's images verified as mislabelled) counts as known and noisy, and is left out
of the pseudo-label accuracy only. A ratio with an empty denominator is 0.0 (scikit-learn's ``zero_division=0``),
so the result is always valid JSON.
"""

from __future__ import annotations

import torch

from visprompt.data.records import TRUTH_LABEL_WRONG

__all__ = ["selection_counts", "selection_metrics"]


def _ratio(num: int, den: int) -> float:
    return num / den if den > 0 else 0.0


def selection_counts(clean: torch.Tensor, labels: torch.Tensor, true_labels: torch.Tensor) -> dict[str, int]:
    """The counts behind :func:`selection_metrics` (they add up over mini-batches, unlike the ratios).

    Args:
        clean: (N,) bool mask of samples selected as clean.
        labels: (N,) given (noisy) labels.
        true_labels: (N,) true labels; -1 where unknown, -2 where only the label is known wrong.

    Returns:
        ``n`` (all samples), ``selected`` (the mask's size), ``known`` (samples whose truth is known: a class, or a
        label known wrong), ``selected_known`` (selected among the known), ``truly_clean`` (known and given label =
        true label) and ``hits`` (selected and truly clean).
    """
    n = clean.shape[0]
    for name, t in (("labels", labels), ("true_labels", true_labels)):
        if t.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},) like clean, got {tuple(t.shape)}")
    clean = clean.bool().cpu()
    labels, true_labels = labels.long().cpu(), true_labels.long().cpu()
    known = (true_labels >= 0) | (true_labels == TRUTH_LABEL_WRONG)  # (N,)
    truly_clean = (true_labels >= 0) & (labels == true_labels)
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
        true_labels: (N,) true labels; -1 where unknown, -2 where only the label is known wrong.
        pseudo_labels: optional (N,) pseudo-labels, for ``pseudo_label_accuracy``.

    Returns:
        ``selected_fraction`` (over all N), ``known`` (samples whose truth is known: a class, or a label known
        wrong), ``noise_rate``, ``precision``, ``recall``, ``f1`` (over known samples) and, with pseudo-labels,
        ``pseudo_label_accuracy`` (over the samples whose true class is known).
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
        with_class = true_labels >= 0  # (N,) a known true class: the only ones a pseudo-label can be judged on
        correct = int((with_class & (pseudo_labels.long().cpu() == true_labels)).sum())
        out["pseudo_label_accuracy"] = _ratio(correct, int(with_class.sum()))
    return out
