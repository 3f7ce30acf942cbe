"""Tables of a runs folder: per-run and per-epoch CSV, mean ± std over seeds as CSV and Markdown.

A summary cell is one (dataset, method, noise type, noise rate): the mean and the sample standard deviation
(n - 1 in the denominator; 0 for a single seed) of a metric over the finished runs, which differ by seed.
The Markdown report names the environments the runs were computed in, then has one table per dataset (a row
per method, a column per noise setting) with the best mean of each column in bold, a mean over other seeds than its
column's other cells marked with them, an average over datasets, and the runs that have not finished.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visprompt.config import CLEAN, setting_label
from visprompt.engine.provenance import describe_environment
from visprompt.fileio import atomic_path
from visprompt.report.collect import RunRecord, finished_results, metric_key, metric_value

__all__ = [
    "SummaryCell",
    "across_environments_note",
    "code_lines",
    "crosses_environments",
    "environment_lines",
    "environment_of",
    "epochs_rows",
    "markdown_report",
    "runs_rows",
    "setting_label",
    "setting_order",
    "summarize",
    "summary_rows",
    "write_csv",
]

_NOISE_ORDER = {CLEAN: 0, "sym": 1, "asym": 2}


@dataclass(frozen=True)
class SummaryCell:
    dataset: str
    method: str  # method label
    noise: str  # noise type, or "clean"
    rate: float  # noise rate (the count of false labels per class for pairs-per-class)
    mean: float
    std: float  # sample standard deviation over seeds (0 for one seed)
    n: int  # number of finished runs (seeds)
    seeds: tuple[int, ...]


def setting_order(noise: str, rate: float) -> tuple[int, str, float]:
    return (_NOISE_ORDER.get(noise, 3), noise, rate)


def summarize(records: Sequence[RunRecord], labels: Mapping[str, str], metric: str) -> list[SummaryCell]:
    """Mean ± std of ``metric`` over the finished runs of each (dataset, method, noise, rate), each seed once (two
    runs of one seed are a :class:`~visprompt.errors.DataError`: :func:`~visprompt.report.collect.finished_results`)."""
    groups: dict[tuple[str, str, str, float], list[tuple[int, float]]] = {}
    for (method, dataset, (noise, rate), seed), (_, value) in finished_results(records, labels, metric).items():
        groups.setdefault((dataset, method, noise, rate), []).append((seed, value))
    cells = []
    for (dataset, method, noise, rate), items in groups.items():
        values = [v for _, v in items]
        mean = math.fsum(values) / len(values)
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
        seeds = tuple(sorted(s for s, _ in items))
        cells.append(SummaryCell(dataset, method, noise, rate, mean, std, len(values), seeds))
    return sorted(cells, key=lambda c: (c.dataset, c.method, setting_order(c.noise, c.rate)))


# ------------------------------------------------------------------------------------------------------ CSV


def runs_rows(records: Sequence[RunRecord], labels: Mapping[str, str], metric: str) -> list[dict[str, Any]]:
    """One row per run: identity, status, ``metric``, the other scalar metrics and the last epoch's log values."""
    rows = []
    for record in records:
        noise, rate = record.noise
        row: dict[str, Any] = {
            "run": record.name, "status": record.status, "dataset": record.dataset, "method": labels[record.name],
            "noise_type": noise, "noise_rate": rate, "seed": record.seed,
            metric: metric_value(record.metrics, metric),
        }  # fmt: skip
        # metrics.json has its own run, method and dataset (the folder's name, the bare method): the row's stand
        row.update(
            {k: v for k, v in record.metrics.items() if k not in row and _scalar(v) and not k.startswith("per_class")}
        )
        if record.epochs:
            row["epochs_logged"] = len(record.epochs)
            row.update({f"last.{k}": v for k, v in record.epochs[-1].items() if _scalar(v) and k != "epoch"})
        row["error"] = record.error
        rows.append(row)
    return rows


def epochs_rows(records: Sequence[RunRecord], labels: Mapping[str, str]) -> list[dict[str, Any]]:
    """One row per (run, epoch) with every scalar of the log record."""
    rows = []
    for record in records:
        noise, rate = record.noise
        ident = {"run": record.name, "dataset": record.dataset, "method": labels[record.name],
                 "noise_type": noise, "noise_rate": rate, "seed": record.seed}  # fmt: skip
        rows += [{**ident, **{k: v for k, v in epoch.items() if _scalar(v)}} for epoch in record.epochs]
    return rows


def summary_rows(cells: Sequence[SummaryCell], metric: str) -> list[dict[str, Any]]:
    return [
        {"dataset": c.dataset, "method": c.method, "noise_type": c.noise, "noise_rate": c.rate,
         f"{metric}_mean": c.mean, f"{metric}_std": c.std, "n": c.n, "seeds": " ".join(map(str, c.seeds))}
        for c in cells
    ]  # fmt: skip


def write_csv(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Rows (dicts) as CSV; the columns are the union of the keys in first-seen order."""
    rows = list(rows)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    path = Path(path)
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


# ------------------------------------------------------------------------------------------------- Markdown


def markdown_report(
    cells: Sequence[SummaryCell],
    records: Sequence[RunRecord],
    metric: str,
    higher_is_better: bool = True,
    missing: Sequence[tuple[str, str, str | None]] = (),
    unreadable: Sequence[tuple[str, str]] = (),
) -> str:
    """Per-dataset tables of mean ± std over seeds (best per column in bold), an average, unfinished runs, and the
    runs left out of the tables: finished without a finite ``metric``, or not read.

    ``missing`` adds (run, status, error) of runs that left no run directory (see ``collect.sweep_failures``);
    ``unreadable`` (run, why) of run directories that could not be read (``collect.collect_runs``).
    """
    finished = sum(r.finished for r in records)
    lines = [
        f"# Results: {metric}",
        "",
        "Mean ± sample std over seeds (the mean alone where one seed ran); the best mean of each column in "
        f"**bold**; (n=k) marks cells with fewer seeds than the others. {len(records)} runs found, "
        f"{finished} finished.",
    ]
    lines += environment_lines([r for r in records if r.finished])
    lines += code_lines([r for r in records if r.finished])
    datasets = sorted({c.dataset for c in cells})
    for dataset in datasets:
        lines += ["", f"## {dataset}", ""]
        lines += _table([c for c in cells if c.dataset == dataset], higher_is_better, with_std=True)
    if len(datasets) > 1:
        average = _average(cells, datasets)
        if average:
            lines += ["", f"## Average over {len(datasets)} datasets", "",
                      "Mean over datasets of the per-dataset means (settings run on every dataset).", ""]  # fmt: skip
            draws: dict[tuple[str, str, float], frozenset] = {}  # an average's (dataset, seed) pairs
            for c in cells:
                key = (c.method, c.noise, c.rate)
                draws[key] = draws.get(key, frozenset()) | {(c.dataset, seed) for seed in c.seeds}
            lines += _table(average, higher_is_better, with_std=False, draws=draws)
    unfinished = [(r.name, r.status or "no status", r.error) for r in records if not r.finished] + list(missing)
    if unfinished:
        lines += ["", "## Runs not finished", "", "| run | status | error |", "| --- | --- | --- |"]
        lines += [f"| {name} | {status} | {_escape(error or '')} |" for name, status, error in unfinished]
    left_out = [(r.name, _no_value(r.metrics, metric)) for r in records if r.finished]
    left_out = [(name, why) for name, why in left_out if why] + list(unreadable)
    if left_out:
        lines += ["", "## Runs left out of the tables", "", "| run | why |", "| --- | --- |"]
        lines += [f"| {name} | {_escape(why)} |" for name, why in sorted(left_out)]
    return "\n".join(lines) + "\n"


def _no_value(metrics: Mapping[str, Any], metric: str) -> str | None:
    """Why a finished run's ``metrics.json`` gives no value of ``metric`` to average (None: it gives one)."""
    key = metric_key(metrics, metric)
    if key is None:
        return f"no {metric} in metrics.json"
    return None if metric_value(metrics, metric) is not None else f"{key} is {metrics[key]!r} in metrics.json"


def _plural(n: int) -> str:
    return "" if n == 1 else "s"


NOT_RECORDED = "not recorded (a run made before visprompt recorded its processor)"


def environment_of(record: RunRecord) -> str:
    """Where a run's numbers were computed: the processor, how its kernels round (threads and instruction set, or
    the GPU) and torch's version, from its ``metrics.json``; :data:`NOT_RECORDED` for runs made before these were."""
    metrics = record.metrics
    trained_in = metrics.get("environment.trained_in")
    if isinstance(trained_in, list) and len(trained_in) > 1:
        return " then ".join(str(e) for e in trained_in) + " (resumed in another environment)"
    cpu, compute = metrics.get("environment.cpu"), metrics.get("environment.compute")
    if cpu is None and compute is None:
        return NOT_RECORDED
    return describe_environment(cpu, compute, metrics.get("versions.torch"))


def crosses_environments(a: RunRecord, b: RunRecord) -> bool:
    """Whether a pair's two runs are known not to share an environment: both recorded and different, or only one
    recorded (when neither did, nothing is known and :func:`environment_lines` says so)."""
    return environment_of(a) != environment_of(b)


def across_environments_note(count: int) -> str:
    """The line under a paired table whose cells mark ``count`` pairs as "(k across environments)"."""
    return (f"{count} pair{_plural(count)} above pair runs computed in different environments (marked \"across "
            'environments"): a run repeats to the last digit in one environment, not always across them '
            '(docs/reliability.md, "Reproducibility"), so those differences include that part.')  # fmt: skip


def environment_lines(records: Sequence[RunRecord]) -> list[str]:
    """One line when every run has the same known environment (or none recorded one); a table of them when not (a
    seed's run repeats to the last digit in one environment, not always across them, so a difference between such
    runs includes that part)."""
    counts = Counter(environment_of(r) for r in records)
    known = [env for env in counts if env != NOT_RECORDED]
    if not counts:
        return []
    if not known:
        return ["", "Environment not recorded: the runs were made before visprompt recorded it."]
    if len(counts) == 1:
        return ["", f"Computed in one environment: {known[0]}."]
    unknown = counts.get(NOT_RECORDED, 0)
    missing = f" ({unknown} run{_plural(unknown)} did not record theirs)" if unknown else ""
    note = (f"The finished runs were computed in {len(known)} known environment{_plural(len(known))}{missing}. A run "
            'repeats to the last digit in one environment, not always across them (docs/reliability.md, '
            '"Reproducibility"), so a difference between runs from two of them includes that part.')  # fmt: skip
    lines = ["", "## Environments", "", note, "", "| environment | runs |", "| --- | ---: |"]
    lines += [f"| {_escape(env)} | {n} |" for env, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    return lines


def code_of(record: RunRecord) -> str | None:
    """The code a run was made by: its git commit (12 digits, ``+dirty`` kept), else its visprompt version."""
    sha = record.metrics.get("git_sha")
    if isinstance(sha, str) and sha:
        head, _, dirty = sha.partition("+")
        return f"commit {head[:12]}" + (f"+{dirty}" if dirty else "")
    version = record.metrics.get("versions.visprompt")
    return f"visprompt {version}" if version else None


def code_lines(records: Sequence[RunRecord], shown: int = 5) -> list[str]:
    """A line naming the code versions the runs were made by, when there are several: a difference between runs
    of two versions includes any change of the code between them (a recipe's change shows in the method labels;
    a fix inside a method does not)."""
    counts = Counter(code for code in map(code_of, records) if code is not None)
    if len(counts) < 2:
        return []
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    listed = ", ".join(f"{code} ({n} run{_plural(n)})" for code, n in ranked[:shown])
    more = f" and {len(ranked) - shown} more" if len(ranked) > shown else ""
    return ["", f"Made by {len(counts)} versions of the code: {listed}{more}. A difference between runs of two of "
                "them includes any change of the code between them."]  # fmt: skip


def _table(
    cells: Sequence[SummaryCell],
    higher_is_better: bool,
    with_std: bool,
    draws: Mapping[tuple[str, str, float], frozenset] | None = None,
) -> list[str]:
    """A Markdown table, a row per method and a column per setting. ``draws``: (method, noise, rate) -> the seeds
    (``(dataset, seed)`` pairs for an average over datasets) a cell's mean is over; by default its ``seeds``."""
    settings = sorted({(c.noise, c.rate) for c in cells}, key=lambda s: setting_order(*s))
    methods = sorted({c.method for c in cells})
    grid = {(c.method, c.noise, c.rate): c for c in cells}
    draws = draws or {key: frozenset(c.seeds) for key, c in grid.items()}
    other_seeds = {key for setting in settings for key in _other_seeds({k: draws[k] for k in grid if k[1:] == setting})}
    full_n = max(c.n for c in cells)
    pick = max if higher_is_better else min
    best = {}
    for setting in settings:
        means = [grid[(m, *setting)].mean for m in methods if (m, *setting) in grid]
        best[setting] = pick(means)
    lines = ["| method | " + " | ".join(setting_label(*s) for s in settings) + " |"]
    lines.append("| --- |" + " ---: |" * len(settings))
    for method in methods:
        row = []
        for setting in settings:
            cell = grid.get((method, *setting))
            if cell is None:
                row.append("")
                continue
            text = f"{cell.mean:.2f} ± {cell.std:.2f}" if with_std and cell.n > 1 else f"{cell.mean:.2f}"
            if math.isclose(cell.mean, best[setting], rel_tol=0, abs_tol=1e-9):
                text = f"**{text}**"
            if (method, *setting) in other_seeds:
                text += f" ({_seeds_text(cell.seeds)})"
            elif cell.n < full_n:
                text += f" (n={cell.n})"
            row.append(text)
        lines.append(f"| {_escape(method)} | " + " | ".join(row) + " |")
    if other_seeds:
        lines += ["", _OTHER_SEEDS_NOTE]
    return lines


_OTHER_SEEDS_NOTE = (
    "(seeds ...) marks a mean over other seeds than its column's other cells: each seed draws its "
    "own shots and noisy labels, so a difference between such cells includes the draws'."
)


def _other_seeds(column: Mapping[tuple[str, str, float], frozenset]) -> set[tuple[str, str, float]]:
    """The cells of a column whose seeds are not those of its most common seed set, nor a part of them or more:
    their means are over other draws of shots and noisy labels (a part, as a run not yet finished, is ``(n=k)``)."""
    counts = Counter(column.values())
    most = max(counts.values(), default=0)
    common = [seeds for seeds, n in counts.items() if n == most]  # several where the column is split evenly
    return {key for key, seeds in column.items() if not all(seeds <= c or c <= seeds for c in common)}


def _seeds_text(seeds: Sequence[int]) -> str:
    """``seeds 1-3, 5``; ``seed 4``; ``seeds differ by dataset`` for an average whose datasets ran other seeds."""
    if not seeds:
        return "seeds differ by dataset"
    runs: list[list[int]] = []
    for seed in sorted(seeds):
        if runs and seed == runs[-1][-1] + 1:
            runs[-1].append(seed)
        else:
            runs.append([seed])
    parts = [f"{r[0]}-{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs]
    return f"seed{_plural(len(seeds))} {', '.join(parts)}"


def _average(cells: Sequence[SummaryCell], datasets: Sequence[str]) -> list[SummaryCell]:
    groups: dict[tuple[str, str, float], list[SummaryCell]] = {}
    for cell in cells:
        groups.setdefault((cell.method, cell.noise, cell.rate), []).append(cell)
    out = []
    for (method, noise, rate), group in groups.items():
        if len(group) == len(datasets):
            mean = math.fsum(c.mean for c in group) / len(group)
            same = len({c.seeds for c in group}) == 1  # the seeds, where every dataset's mean is over the same ones
            seeds = group[0].seeds if same else ()
            out.append(SummaryCell("average", method, noise, rate, mean, 0.0, min(c.n for c in group), seeds))
    return out


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (int, float, str, bool))


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
