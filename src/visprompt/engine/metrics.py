"""Classification metrics from predictions: top-1 accuracy, macro-F1 and per-class accuracy (in percent).

With C classes and the confusion counts tp_k (predicted k, true k), fp_k (predicted k, true not k) and
fn_k (true k, predicted not k):

    accuracy   = 100 * sum_k tp_k / N
    F1_k       = 2 tp_k / (2 tp_k + fp_k + fn_k)     (0 when the denominator is 0)
    macro-F1   = 100 * mean over the classes present in the labels or the predictions
    acc_k      = 100 * tp_k / (tp_k + fn_k)           (classes with test samples only)

Macro-F1 averages over the classes that occur (in truth or prediction), as scikit-learn does with its
default ``labels=None``; a test checks the parity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["classification_metrics"]


def classification_metrics(
    preds: torch.Tensor, labels: torch.Tensor, classnames: Sequence[str] | None = None
) -> dict[str, Any]:
    """Top-1, macro-F1 and per-class accuracy of ``preds`` (N,) against ``labels`` (N,), both class ids."""
    preds, labels = preds.long().cpu(), labels.long().cpu()
    if preds.shape != labels.shape or preds.ndim != 1:
        raise ValueError(
            f"preds and labels must be 1-D of equal length, got {tuple(preds.shape)}, {tuple(labels.shape)}"
        )
    num_classes = len(classnames) if classnames is not None else int(max(preds.max(), labels.max()) + 1)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)  # (C true, C predicted)
    confusion.index_put_((labels, preds), torch.ones_like(labels), accumulate=True)
    tp = confusion.diag()
    support = confusion.sum(1)  # true count per class
    predicted = confusion.sum(0)
    fp, fn = predicted - tp, support - tp
    denom = 2 * tp + fp + fn
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.zeros(()))
    present = (support + predicted) > 0
    names = list(classnames) if classnames is not None else [str(k) for k in range(num_classes)]
    per_class = {names[k]: 100.0 * int(tp[k]) / int(support[k]) for k in range(num_classes) if support[k] > 0}
    n = int(labels.numel())
    return {
        "top1": 100.0 * int(tp.sum()) / n if n else float("nan"),
        "macro_f1": 100.0 * float(f1[present].double().mean()) if present.any() else float("nan"),
        "per_class_accuracy": per_class,
        "num_samples": n,
    }
