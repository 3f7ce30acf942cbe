"""Pair the runs of two folders made from one grid by two code versions (or two environments): did a change move
the numbers, and by how much?

Runs pair by (dataset, method, noise setting, seed) and only when their ``split.json`` records the same samples and
labels, so each difference is the change's effect on one few-shot set with one set of noisy labels. A run in one
folder with no partner in the other, or partners that saw other data, is refused in one line: a mean over the
pairs that happen to exist would describe another grid. Prints, per method, the mean top-1 of each folder and the
paired difference NEW - OLD (mean [95% t-interval] and pairs won) per noise setting and pooled::

    python benchmarks/compare_folders.py OLD_RUNS NEW_RUNS [--metric top1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from visprompt.config import setting_label
from visprompt.errors import DataError, VispromptError
from visprompt.report.collect import RunRecord, collect_runs, finished_results, metric_value
from visprompt.report.paired import paired
from visprompt.report.tables import setting_order

Key = tuple[str, str, tuple[str, float], int]  # method, dataset, noise setting, seed


def finished(folder: Path, metric: str) -> dict[Key, tuple[RunRecord, float]]:
    """Every run of ``folder`` by key; refused unless each is finished with the metric and each key is one run."""
    records = collect_runs(folder)
    if not records:
        raise DataError(f"{folder}: no run directories (expected a folder a sweep wrote)")
    for r in records:
        if not r.finished or metric_value(r.metrics, metric) is None:
            raise DataError(f"{r.path}: not finished with a finite {metric} (status {r.status}); finish or remove it")
    return finished_results(records, {r.name: r.method for r in records}, metric)


def compare(old: Path, new: Path, metric: str = "top1") -> str:
    """The Markdown table of NEW - OLD; see the module docstring."""
    a, b = finished(old, metric), finished(new, metric)
    if a.keys() != b.keys():
        only = sorted((a.keys() - b.keys()) | (b.keys() - a.keys()))
        raise DataError(f"the folders hold other runs: {len(only)} without a partner, e.g. {only[0]}")
    for key, (run, _) in a.items():
        if (run.path / "split.json").read_bytes() != (b[key][0].path / "split.json").read_bytes():
            raise DataError(f"{run.name}: the two runs saw other samples or labels (split.json differs)")
    cells: dict[tuple[str, tuple[str, float]], list[Key]] = defaultdict(list)
    for key in a:
        cells[(key[0], key[2])].append(key)
    lines = [
        f"{metric}: NEW - OLD paired by dataset, noise setting and seed: mean [95% t-interval] and pairs NEW won.",
        "",
        "| method | setting | runs | OLD | NEW | NEW - OLD |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for method in sorted({m for m, _ in cells}):
        settings = sorted((s for m, s in cells if m == method), key=lambda s: setting_order(*s))
        rows = [(setting_label(*s), cells[(method, s)]) for s in settings]
        rows.append(("pooled", [k for _, keys in rows for k in keys]))
        for label, keys in rows:
            before, after = [a[k][1] for k in keys], [b[k][1] for k in keys]
            diff = paired([y - x for x, y in zip(before, after, strict=True)])
            lines.append(
                f"| {method} | {label} | {len(keys)} | {statistics.fmean(before):.2f} | "
                f"{statistics.fmean(after):.2f} | {diff.cell()} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path, help="runs of the reference version")
    parser.add_argument("new", type=Path, help="the same grid's runs by the version compared")
    parser.add_argument("--metric", default="top1", help="a metrics.json key (default top1)")
    args = parser.parse_args(argv)
    try:
        print(compare(args.old, args.new, args.metric))
    except VispromptError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
