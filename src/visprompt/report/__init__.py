"""Reports of a runs folder: CSV and Markdown tables (mean ± std over seeds) and PNG plots.

>>> from visprompt.report import build_report
>>> report = build_report("runs/paper-rn50")  # doctest: +SKIP
>>> report.markdown  # runs/paper-rn50/report/results.md  # doctest: +SKIP

Files written to ``out_dir`` (default ``<runs_dir>/report``):

* ``runs.csv``: one row per run (identity, status, metrics, the last epoch's log values, error);
* ``epochs.csv``: one row per run and epoch (every value of ``log.jsonl``);
* ``summary.csv``: mean, std and n over seeds per dataset, method, noise type and rate;
* ``results.md``: one table per dataset with the best mean per column in bold, an average over datasets, the
  unfinished runs and the runs left out of the tables (finished without a finite metric, or not readable);
* ``plots/accuracy_<dataset>.png``: the metric against noise rate, a line per method;
* ``plots/selection_<dataset>_<noise>-<rate>.png``: clean-set selection precision and recall against epoch;
* with ``compare``: ``paired.csv`` and a "Paired comparisons" section in ``results.md``, A - B over the seeds
  both methods ran on the same data (:mod:`visprompt.report.compare`).

Written again, a report removes the files of these names that an earlier one left and it did not write (a
``paired.csv`` without ``compare``, the plots of runs since moved out); other files in ``out_dir`` stay.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from visprompt.errors import VispromptError
from visprompt.fileio import atomic_write_text
from visprompt.report.collect import RunRecord, collect_runs, label_methods, sweep_failures
from visprompt.report.compare import compare_methods, comparison_lines, comparison_rows, parse_comparison
from visprompt.report.plots import accuracy_figure, method_colors, save_figure, selection_figure
from visprompt.report.tables import (
    epochs_rows,
    markdown_report,
    runs_rows,
    summarize,
    summary_rows,
    write_csv,
)

log = logging.getLogger(__name__)

__all__ = ["Report", "RunRecord", "build_report", "collect_runs"]


@dataclass(frozen=True)
class Report:
    """The files of a report and what went into it."""

    out_dir: Path
    runs_csv: Path
    epochs_csv: Path
    summary_csv: Path
    markdown: Path
    accuracy_plots: tuple[Path, ...]
    selection_plots: tuple[Path, ...]
    num_runs: int
    num_finished: int
    paired_csv: Path | None = None  # with ``compare``

    @property
    def files(self) -> list[Path]:
        files = [self.runs_csv, self.epochs_csv, self.summary_csv, self.markdown]
        files += [self.paired_csv] if self.paired_csv is not None else []
        return [*files, *self.accuracy_plots, *self.selection_plots]


def build_report(
    runs_dir: str | Path,
    out_dir: str | Path | None = None,
    metric: str = "top1",
    higher_is_better: bool = True,
    compare: Sequence[str] = (),
) -> Report:
    """Collect every run under ``runs_dir`` and write the tables and plots; returns their paths.

    ``compare``: ``"A:B"`` method labels (as the report names them) to compare paired over seeds. A bad one, or two
    runs that would pair without having seen the same data, is an error before any file is written.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise VispromptError(f"runs folder {runs_dir} does not exist")
    unreadable: list[tuple[str, str]] = []
    records = collect_runs(runs_dir, unreadable)
    if not records and unreadable:
        raise VispromptError(f"no readable run directories under {runs_dir}: {len(unreadable)} could not be read, "
                             f"e.g. {unreadable[0][0]}: {unreadable[0][1]}")  # fmt: skip
    if not records:
        raise VispromptError(f"no run directories (folders with a config.yaml) under {runs_dir}")
    labels = label_methods(records)
    cells = summarize(records, labels, metric)
    finished = sum(r.finished for r in records)
    if finished and not cells:
        raise VispromptError(f"metric {metric!r} is in none of the metrics.json files under {runs_dir}")
    methods = {c.method for c in cells}
    comparisons = compare_methods(records, labels, metric, [parse_comparison(text, methods) for text in compare])
    out = Path(out_dir) if out_dir is not None else runs_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    runs_csv = write_csv(out / "runs.csv", runs_rows(records, labels, metric))
    epochs_csv = write_csv(out / "epochs.csv", epochs_rows(records, labels))
    summary_csv = write_csv(out / "summary.csv", summary_rows(cells, metric))
    paired_csv = write_csv(out / "paired.csv", comparison_rows(comparisons, higher_is_better)) if compare else None
    markdown = out / "results.md"
    missing = sweep_failures(runs_dir, known=[*(r.name for r in records), *(name for name, _ in unreadable)])
    text = markdown_report(cells, records, metric, higher_is_better, missing, unreadable)
    atomic_write_text(
        markdown, text + "".join(line + "\n" for line in comparison_lines(comparisons, metric, higher_is_better))
    )

    colors = method_colors(sorted(set(labels.values())))
    slugs = _plot_names(r.dataset for r in records)
    accuracy_plots = []
    for dataset in sorted({c.dataset for c in cells}):
        fig = accuracy_figure(cells, dataset, metric, colors)
        if fig is not None:
            accuracy_plots.append(save_figure(fig, out / "plots" / f"accuracy_{slugs[dataset]}.png"))
    selection_plots = []
    for dataset, (noise, rate) in sorted({(r.dataset, r.noise) for r in records}):
        fig = selection_figure(records, labels, dataset, noise, rate, colors)
        if fig is not None:
            name = f"selection_{slugs[dataset]}_{noise}-{rate:g}.png"
            selection_plots.append(save_figure(fig, out / "plots" / name))
    report = Report(out, runs_csv, epochs_csv, summary_csv, markdown, tuple(accuracy_plots), tuple(selection_plots),
                    len(records), finished, paired_csv)  # fmt: skip
    _remove_stale(out, report.files)
    log.info("report of %d runs (%d finished) in %s", len(records), finished, out)
    return report


def _remove_stale(out: Path, written: Sequence[Path]) -> None:
    """Remove the files an earlier report left in ``out`` that this one did not write (a ``paired.csv`` without
    ``--compare``, the plots of a dataset or setting no longer in the folder): beside the new files they would read
    as this report's. Only the report's own file names are touched; anything else in ``out`` stays."""
    keep = {path.resolve() for path in written}
    own = [out / "paired.csv", *(out / "plots").glob("accuracy_*.png"), *(out / "plots").glob("selection_*.png")]
    for path in own:
        if path.is_file() and path.resolve() not in keep:
            log.info("removing %s, left by an earlier report", path)
            path.unlink()


def _plot_names(datasets: Iterable[str]) -> dict[str, str]:
    """Dataset -> the part of its plots' file names: the name, a user dataset's with its file's or folder's stem
    (``csv:data/birds.csv`` -> ``csv_birds``); two that would share one are numbered apart (``csv_birds-2``)."""
    names: dict[str, str] = {}
    for dataset in sorted(set(datasets)):
        kind, sep, path = dataset.partition(":")
        text = f"{kind}_{Path(path).stem}" if sep else kind
        slug = candidate = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)
        number = 1
        while candidate in names.values():
            number += 1
            candidate = f"{slug}-{number}"
        names[dataset] = candidate
    return names
