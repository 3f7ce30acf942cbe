"""Plots of a runs folder (matplotlib, drawn off-screen: no display and no pyplot state are touched).

* Accuracy against noise rate, one figure per dataset: a panel per noise type (sym, asym, ...), a line per
  method (mean over seeds, the band is ± one sample std). The clean runs are the rate-0 point of every panel.
* Clean-set selection precision and recall against epoch, one figure per (dataset, noise setting): a line
  per method that selects a clean set (mean over its finished runs' seeds, as the tables), read from each run's
  ``log.jsonl``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from visprompt.fileio import atomic_path
from visprompt.report.collect import CLEAN, RunRecord
from visprompt.report.tables import SummaryCell, setting_label, setting_order

log = logging.getLogger(__name__)

__all__ = ["PRECISION_KEYS", "RECALL_KEYS", "accuracy_figure", "method_colors", "save_figure", "selection_figure"]

PRECISION_KEYS = ("sel_precision", "selection.precision", "selection_precision")  # first present wins
RECALL_KEYS = ("sel_recall", "selection.recall", "selection_recall")


def accuracy_figure(
    cells: Sequence[SummaryCell], dataset: str, metric: str, colors: Mapping[str, str] | None = None
) -> Figure | None:
    """``metric`` against noise rate on ``dataset``: a panel per noise type, a line per method (None: no data)."""
    cells = [c for c in cells if c.dataset == dataset]
    noises = sorted({c.noise for c in cells if c.noise != CLEAN and not c.noise.startswith("pairs")},
                    key=lambda n: setting_order(n, 0))  # fmt: skip
    if not noises:
        return None
    methods = sorted({c.method for c in cells})
    colors = colors or method_colors(methods)
    fig = Figure(figsize=(4.2 * len(noises) + 1.8, 3.6), layout="constrained")
    axes = fig.subplots(1, len(noises), sharey=True, squeeze=False)[0]
    for ax, noise in zip(axes, noises, strict=True):
        for method in methods:
            points = sorted((c.rate, c.mean, c.std) for c in cells if c.method == method and c.noise in (noise, CLEAN))
            if not points:
                continue
            rate, mean, std = (np.array(v, dtype=float) for v in zip(*points, strict=True))  # (R,) each
            ax.plot(100 * rate, mean, marker="o", markersize=3.5, linewidth=1.8, color=colors[method], label=method)
            ax.fill_between(100 * rate, mean - std, mean + std, color=colors[method], alpha=0.15, linewidth=0)
        ax.set_title(f"{dataset}: {noise} noise")
        ax.set_xlabel("noise rate (%)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{metric} (mean ± std over seeds)")
    _legend(fig, axes)
    return fig


def selection_figure(
    records: Sequence[RunRecord],
    labels: Mapping[str, str],
    dataset: str,
    noise: str,
    rate: float,
    colors: Mapping[str, str] | None = None,
) -> Figure | None:
    """Selection precision and recall against epoch on one setting, a line per method (None: nothing logged).

    Only finished runs count, as in the tables: a run still going, or failed, would end its method's line at its
    last epoch and pull the line towards its early epochs; those left out are logged."""
    series: dict[str, dict[str, list[list[float]]]] = {}
    unfinished = []
    for record in records:
        if record.dataset != dataset or record.noise != (noise, rate):
            continue
        precision = _curve(record, PRECISION_KEYS)
        recall = _curve(record, RECALL_KEYS)
        if precision is None and recall is None:
            continue
        if not record.finished:
            unfinished.append(record.name)
            continue
        entry = series.setdefault(labels[record.name], {"precision": [], "recall": []})
        entry["precision"] += [precision] if precision is not None else []
        entry["recall"] += [recall] if recall is not None else []
    if unfinished:
        log.info("selection plot of %s, %s: %d unfinished run%s left out: %s", dataset, setting_label(noise, rate),
                 len(unfinished), "" if len(unfinished) == 1 else "s", ", ".join(unfinished))  # fmt: skip
    if not series:
        return None
    colors = colors or method_colors(sorted(series))
    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, what in zip(axes, ("precision", "recall"), strict=True):
        for method in sorted(series):
            curves = series[method][what]
            if not curves:
                continue
            length = min(len(c) for c in curves)  # a log that lost its last lines is shorter
            with warnings.catch_warnings():  # an epoch where no run selected anything stays NaN (a gap)
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(np.array([c[:length] for c in curves], dtype=float), axis=0)  # (E,)
            ax.plot(np.arange(1, length + 1), mean, linewidth=1.8, color=colors[method], label=method)
        ax.set_title(f"{dataset}, {setting_label(noise, rate)}: selection {what}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fraction (mean over seeds)")
    _legend(fig, axes)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path


def _curve(record: RunRecord, keys: Sequence[str]) -> list[float] | None:
    for key in keys:
        if any(key in epoch for epoch in record.epochs):
            return [_float(epoch.get(key)) for epoch in sorted(record.epochs, key=lambda e: e.get("epoch", 0))]
    return None


def _float(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")


def method_colors(methods: Sequence[str]) -> dict[str, str]:
    """A colour per method from matplotlib's default cycle, so a method keeps its colour in every plot."""
    palette = [f"C{i}" for i in range(10)]
    return {m: palette[i % len(palette)] for i, m in enumerate(methods)}


def _legend(fig: Figure, axes: Sequence) -> None:
    handles, names = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="outside right center", frameon=False)
