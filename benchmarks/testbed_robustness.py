"""The offline testbed's robustness benchmark: every method x task x noise setting x seed, then its report.

Builds the testbed tasks the grid names (when missing), runs the grid through the sweep runner (finished runs
are skipped, so an interrupted benchmark resumes where it stopped), writes the report of the runs folder and
copies its table and accuracy plots to ``--docs`` with a header saying how they were made. Besides the report's
per-task tables it prints (and writes) the tables docs/testbed-benchmark.md quotes: the mean over the 10-class
tasks, the clean-set selection, the goals of ``visprompt-plus`` over every cell, over the 10-class cells alone and
over the 10-class cells of the held-out seeds (4 and 5: its recipe was chosen on seeds 1-3), and testbed-many's
split precision / recall per seed. ``runs.csv`` beside results.md has every finished run's top-1 (and split
precision / recall), so the paired tables can be recomputed without the runs folder.

    python benchmarks/testbed_robustness.py                                  # configs/sweeps/testbed.yaml
    python benchmarks/testbed_robustness.py --num-cpus 2 --docs docs/testbed-benchmark

The report is the grid's or nothing: a runs folder holding a run the grid does not name, or a finished run whose
saved config differs from what the grid gives it now (outside where it ran), is refused with a one-line error
before anything runs or is written. Give ``--set`` the overrides the runs were made with (``data.root``). The
tables here name a method by its name alone, so a grid that gives one method two configs (an option axis such as
``prompt.gate``) is refused too: ``visprompt report`` labels such configs apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import platform
import shutil
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import date
from pathlib import Path

from visprompt.config import flatten_tree
from visprompt.errors import ConfigError, VispromptError
from visprompt.fileio import atomic_write_text
from visprompt.report import RunRecord, build_report, collect_runs
from visprompt.report.collect import CLEAN, finished_results, label_methods, metric_value
from visprompt.report.paired import paired
from visprompt.report.tables import crosses_environments, setting_label, setting_order, write_csv
from visprompt.sweep import SweepRun, expand_sweep, load_sweep, refuse_stale, run_sweep
from visprompt.sweep.progress import ProgressDisplay
from visprompt.testbed import build_testbed

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", type=Path, default=ROOT / "configs" / "sweeps" / "testbed.yaml")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    parser.add_argument("--docs", type=Path, default=None, help="copy the table and plots here (default: none)")
    parser.add_argument("--out", type=Path, default=None, help="runs folder (default: the grid's out_dir)")
    parser.add_argument("--no-run", action="store_true", help="only report the finished runs under the runs folder")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
        help="add to the grid's base, as `visprompt sweep --set` (give the runs' own, e.g. data.root=DATA)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    try:
        spec = load_sweep(args.grid, out_dir=args.out, overrides=args.overrides)
        runs = expand_sweep(spec)
        check_runs_folder(runs, spec.out_dir, args.grid)
    except VispromptError as exc:  # a bad grid, or runs the report would label wrongly: one line, nothing written
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ok = True
    if not args.no_run:
        try:
            for root in {r.config.data.root for r in runs}:
                build_testbed(root, sorted({r.config.data.dataset for r in runs if r.config.data.root == root}))
            started = time.perf_counter()
            result = run_sweep(runs, out_dir=spec.out_dir, num_cpus=args.num_cpus, on_progress=ProgressDisplay())
        except VispromptError as exc:  # e.g. another sweep writes to the runs folder
            print(f"error: {exc}", file=sys.stderr)
            return 2
        seconds = time.perf_counter() - started
        print(f"\n{len(runs)} runs ({len(result.failed)} failed) in {seconds / 60:.1f} min", file=sys.stderr)
        ok = result.ok
    report = build_report(spec.out_dir)
    records = collect_runs(spec.out_dir)
    selection = "\n".join(
        [
            group_mean_table(records, TEN_CLASS),
            selection_table(records),
            goals_table(records),
            goals_table([r for r in records if r.dataset in TEN_CLASS], title="the 10-class tasks"),
            goals_table(
                [r for r in records if r.dataset in TEN_CLASS and r.seed in HELD_OUT_SEEDS],
                title=f"the 10-class tasks, held-out seeds {', '.join(map(str, HELD_OUT_SEEDS))}",
            ),
            split_table(records, "testbed-many"),
        ]
    )
    print(report.markdown.read_text() + "\n" + selection)
    if args.docs is not None:
        args.docs.mkdir(parents=True, exist_ok=True)
        for plot in report.accuracy_plots:
            shutil.copyfile(plot, args.docs / plot.name)
        run_s = sum(r.metrics.get("timings.total_s", 0.0) for r in records if r.finished)
        command = " ".join(sys.argv[1:] if argv is None else argv)
        header = (
            f"<!-- written by `python benchmarks/testbed_robustness.py {command}`"
            f" on {date.today()}: "
            f"{sum(r.finished for r in records)} finished runs of {args.grid.name}, {run_s / 3600:.1f} h of run "
            f"time in all (the sum of each run's timings.total_s) on {platform.machine()}, {os.cpu_count()} CPUs, "
            f"one thread per run -->\n\n"
        )
        atomic_write_text(args.docs / "results.md", header + report.markdown.read_text() + "\n" + selection)
        write_csv(args.docs / "runs.csv", per_run_rows(records))
    return 0 if ok else 1


def check_runs_folder(runs: list[SweepRun], out: Path, grid: Path) -> None:
    """Refuse (:class:`ConfigError`) a runs folder whose report would not be the grid's: a run the grid does not
    name, or a finished run whose saved config differs from what the grid gives it now (say, made before a
    method's recipe changed, or with another ``data.root``); and a grid that gives one method two configs, which
    the tables here (by method name) would mix, a config's run of a seed replacing the other's, or the methods of a
    task different shots, backbones or epochs, which they would set side by side unmarked."""
    records = [RunRecord(run.path, run.name, None, flatten_tree(dataclasses.asdict(run.config))) for run in runs]
    labels = label_methods(records)
    split = sorted({labels[run.name] for run in runs if labels[run.name] != run.config.method.name})
    if split:
        names = Counter(label.partition("[")[0] for label in {labels[run.name] for run in runs})
        what = ("one method with more than one config" if max(names.values()) > 1
                else "methods of one task run with different data, backbone or epochs")  # fmt: skip
        raise ConfigError(
            f"grid {grid}: {what}, e.g. {split[0]}; this script's tables name a method "
            "by its name alone: give each config its own grid, or report the folder with `visprompt report`"
        )
    extra = unnamed_runs(runs, collect_runs(out))
    if extra:
        raise ConfigError(
            f"runs folder {out}: {len(extra)} runs that the grid {grid} does not name, e.g. {extra[0].name}; "
            "report them with the grid that made them, or move them out"
        )
    refuse_stale(
        runs,
        f"runs folder {out}",
        "pass the --set the runs were made with (e.g. --set data.root=DATA), or re-run them into another --out",
    )


def unnamed_runs(runs: Iterable[SweepRun], records: Iterable[RunRecord]) -> list[RunRecord]:
    """The ``records`` that are none of ``runs`` (by path), by name: runs their grid does not name."""
    paths = {run.path.resolve() for run in runs}
    return sorted((r for r in records if r.path.resolve() not in paths), key=lambda r: r.name)


TEN_CLASS = ("testbed-backgrounds", "testbed-colours", "testbed-scenes")
NO_SPLIT = ("coop", "coop-gce", "cocoop")  # they train on every label: their logged "split" is everything
HELD_OUT_SEEDS = (4, 5)  # visprompt-plus's recipe was chosen on seeds 1-3 (docs/testbed-ablations.md)


def per_run_rows(records: list[RunRecord]) -> list[dict[str, object]]:
    """One row per finished run with the values every table above is computed from (``runs.csv`` beside
    results.md): the paired tables can be recomputed, and a new method's runs set against these, without the runs
    folder. ``method`` is the report's label (a method run with a non-default option is labelled with it)."""
    labels = label_methods(records)
    rows = []
    for r in sorted(records, key=lambda r: (r.dataset, labels[r.name], setting_order(*r.noise), r.seed)):
        value = metric_value(r.metrics, "top1")
        if not r.finished or value is None:
            continue
        counts = {k: r.epochs[-1].get(k) for k in ("sel_precision", "sel_recall") if r.epochs}
        rows.append({"task": r.dataset, "method": labels[r.name], "noise": r.noise[0], "rate": r.noise[1],
                     "seed": r.seed, "top1": value, **counts, "run_s": r.metrics.get("timings.total_s")})  # fmt: skip
    return rows


def _finished(records: list[RunRecord]) -> dict[tuple[str, str, tuple[str, float], int], tuple[RunRecord, float]]:
    """(method, task, (noise, rate), seed) -> (run, top-1 %) of every finished run. Keyed by the method's name
    (:func:`check_runs_folder` refuses a grid with two configs of one method): two runs with one key are a
    :class:`~visprompt.errors.DataError`, not one of them dropped."""
    return finished_results(records, {r.name: r.method for r in records}, "top1")


def _top1(records: list[RunRecord]) -> dict[tuple[str, str, tuple[str, float], int], float]:
    """Top-1 of every finished run: (method, task, (noise, rate), seed) -> %."""
    return {key: value for key, (_, value) in _finished(records).items()}


def group_mean_table(records: list[RunRecord], tasks: tuple[str, ...]) -> str:
    """Mean top-1 over ``tasks`` of each method's per-task mean over seeds, per setting.

    A cell is filled only when the method ran every task of the group on every seed run in the column (by any
    method, on any of its tasks), so every filled cell of a column averages the same (task, seed) pairs.
    """
    top1 = {k: v for k, v in _top1(records).items() if k[1] in tasks}
    settings = sorted({k[2] for k in top1}, key=lambda s: setting_order(*s))
    methods = sorted({k[0] for k in top1})
    seeds = {s: {k[3] for k in top1 if k[2] == s} for s in settings}
    cells: dict[tuple[str, tuple[str, float]], float] = {}
    for m in methods:
        for s in settings:
            per_task = [{k[3]: v for k, v in top1.items() if k[:3] == (m, t, s)} for t in tasks]
            if all(v.keys() == seeds[s] for v in per_task):
                cells[(m, s)] = statistics.fmean(statistics.fmean(v.values()) for v in per_task)
    best = {s: max((v for (m, t), v in cells.items() if t == s and m != "zeroshot"), default=None) for s in settings}
    lines = [
        f"## Mean over the {len(tasks)} tasks {', '.join(t.removeprefix('testbed-') for t in tasks)}",
        "",
        "Mean over tasks of each task's mean top-1 % over seeds (seeds per column: "
        + ", ".join(f"{setting_label(*s)} {len(seeds[s])}" for s in settings)
        + "); the best trained method of each column in **bold**.",
        "",
        "| method | " + " | ".join(setting_label(*s) for s in settings) + " |",
        "| --- |" + " ---: |" * len(settings),
    ]
    for m in methods:
        row = [cells.get((m, s)) for s in settings]
        if all(v is None for v in row):
            continue
        text = [
            "-" if v is None else (f"**{v:.2f}**" if v == best[s] else f"{v:.2f}")
            for v, s in zip(row, settings, strict=True)
        ]
        lines.append(f"| {m} | " + " | ".join(text) + " |")
    return "\n".join(lines) + "\n"


def split_table(records: list[RunRecord], task: str) -> str:
    """Precision / recall of each selecting method's clean set at the last epoch on ``task``, seed by seed: in seed
    order where every method of a column ran the same seeds, else each after its seed ("-" where a method lacks it)."""
    runs = [
        r
        for r in records
        if r.dataset == task and r.finished and r.epochs and "sel_precision" in r.epochs[-1]
        and r.method not in NO_SPLIT
    ]  # fmt: skip
    if not runs:
        return f"## Clean-set precision / recall on {task}\n\nno finished runs with a split\n"
    settings = sorted({r.noise for r in runs}, key=lambda s: setting_order(*s))
    methods = sorted({r.method for r in runs})
    last = {(r.method, r.noise, r.seed): r.epochs[-1] for r in runs}
    seeds = {s: sorted({r.seed for r in runs if r.noise == s}) for s in settings}  # every seed run in the column
    # where a method lacks a seed another of its column ran, the n-th pairs of two rows are two seeds' draws:
    # then each pair is labelled with its seed
    ran: dict[tuple[str, tuple[str, float]], set[int]] = defaultdict(set)  # (method, setting) -> its seeds
    for m, s, seed in last:
        ran[(m, s)].add(seed)
    labelled = any(ran[(m, s)] not in (set(), set(seeds[s])) for m in methods for s in settings)
    how = ', after its seed ("2: 0.90 / 0.50"; "2: -": no run of that seed)' if labelled else " (seed order)"
    lines = [
        f"## Clean-set precision / recall on {task} at the last epoch, seed by seed",
        "",
        f"Per cell: precision / recall of the samples trained as clean, one pair per seed{how}.",
        "",
        "| method | " + " | ".join(setting_label(*s) for s in settings) + " |",
        "| --- |" + " --- |" * len(settings),
    ]
    for m in methods:
        cells = []
        for s in settings:
            pairs = {seed: last.get((m, s, seed)) for seed in seeds[s]}
            text = {seed: "-" if e is None else f"{e['sel_precision']:.2f} / {e['sel_recall']:.2f}"
                    for seed, e in pairs.items()}  # fmt: skip
            if all(e is None for e in pairs.values()):
                cells.append("")
            elif labelled:
                cells.append(", ".join(f"{seed}: {t}" for seed, t in text.items()))
            else:
                cells.append(", ".join(text.values()))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def selection_table(records: list[RunRecord]) -> str:
    """Clean-set selection at the last epoch per method and setting: precision, recall and the kept fraction.

    Precision: the share of the samples a method trains as clean whose label is right; recall: the share of the
    right labels it keeps; kept: the fraction of the training set treated as clean. Means over the (task, seed)
    pairs on which every method of the column ran (a task or seed only some methods ran would make the rows
    incomparable).
    """
    runs: dict[tuple[str, tuple[str, float]], dict[tuple[str, int], tuple[float, float, float]]] = defaultdict(dict)
    for (method, task, setting, seed), (r, _) in _finished(records).items():
        last = r.epochs[-1] if r.epochs else {}
        if setting[0] != CLEAN and "sel_precision" in last and method not in NO_SPLIT:
            kept = last.get("n_clean", 0) / max(last.get("n_selected_from", 1), 1)
            runs[(method, setting)][(task, seed)] = (last["sel_precision"], last["sel_recall"], kept)
    # every row of a column averages the same (task, seed) pairs: those on which all the column's methods ran
    common: dict[tuple[str, float], set[tuple[str, int]]] = {}
    for (_, setting), by_pair in runs.items():
        common[setting] = common.get(setting, set(by_pair)) & set(by_pair)
    cells = {key: [by_pair[p] for p in sorted(common[key[1]])] for key, by_pair in runs.items()}
    settings = sorted({k[1] for k in cells}, key=lambda s: setting_order(*s))
    methods = sorted({k[0] for k in cells})
    lines = [
        "## Clean-set selection at the last epoch",
        "",
        "Precision / recall / kept fraction of the samples each method trains as clean, against the true labels "
        "(mean over the (task, seed) pairs every method of the column ran; from each run's log.jsonl).",
        "",
        "| method | " + " | ".join(setting_label(*s) for s in settings) + " |",
        "| --- |" + " ---: |" * len(settings),
    ]
    for method in methods:
        row = []
        for setting in settings:
            values = cells.get((method, setting), [])
            row.append(" / ".join(f"{statistics.fmean(v):.2f}" for v in zip(*values, strict=True)) if values else "")
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


_WITHIN = {True: "yes", False: "**no**", None: "not judged (one seed)"}  # the goals table's "within" column

BASELINES = ("zeroshot", "coop", "coop-gce", "cocoop", "nlprompt", "joapr")  # the paper's comparison methods


def goals_table(
    records: list[RunRecord], target: str = "visprompt-plus", paper: str = "visprompt", title: str = ""
) -> str:
    """Issue-12 goals of ``target`` on the finished runs, cell by cell (task x noise setting, paired over seeds).

    Per cell: ``target``'s mean, the best other method's, the paired difference to the best and to zero-shot
    (mean [95% t-interval] pairs won). "within" means the target is the best or the interval of its difference to
    the best reaches 0; a cell where the target is below the best on one seed has no interval and is not judged.
    Then every method's mean over all cells and the paired difference of ``target`` to the
    best baseline (:data:`BASELINES`) and to ``paper`` over all (task, setting, seed) pairs (pooled, descriptive).
    ``title`` names the subset of runs in the heading (e.g. "the 10-class tasks").
    """
    top1 = _top1(records)
    by_key = {(r.method, r.dataset, r.noise, r.seed): r for r in records if r.finished}
    heading = f"## Goals of {target}, cell by cell" + (f": {title}" if title else "")
    cells = sorted({(k[1], k[2]) for k in top1}, key=lambda c: (c[0], setting_order(*c[1])))
    methods = sorted({k[0] for k in top1})
    if target not in methods:
        return f"{heading}\n\nno finished {target} runs\n"

    def seeds_of(method: str, cell: tuple[str, tuple[str, float]]) -> dict[int, float]:
        return {k[3]: v for k, v in top1.items() if k[0] == method and (k[1], k[2]) == cell}

    def diff(a: dict[int, float], b: dict[int, float]) -> list[float]:
        return [a[s] - b[s] for s in sorted(a.keys() & b.keys())]

    compared: set[tuple[str, str, tuple[str, float], int]] = set()  # (other method, cell, seed) paired with target

    def note_pairs(other: str, cell: tuple[str, tuple[str, float]], seeds: Iterable[int]) -> None:
        compared.update((other, *cell, s) for s in seeds)

    lines = [
        heading,
        "",
        f"Mean top-1 % over seeds; {target} - best and - zero-shot are paired over seeds: mean [95% t-interval] "
        "pairs won.",
        "",
        f"| task | setting | seeds | {target} | best other (mean) | {target} - best | within | {target} - zero-shot |",
        "|---|---|---:|---:|---|---:|---|---:|",
    ]
    outside, below_zs, unjudged, no_zs, cell_means = [], [], [], [], {m: [] for m in methods}
    one_pair: list[str] = []  # cells below the best on one seed: no interval to judge them by
    other_seeds: dict[str, list[str]] = defaultdict(list)  # method -> cells where its seeds differ from target's
    for cell in cells:
        runs = {m: seeds_of(m, cell) for m in methods}
        name = f"{cell[0].removeprefix('testbed-')} {setting_label(*cell[1])}"
        if not runs[target]:  # nothing of the target's to judge here, and no mean over cells for anyone
            unjudged.append(name)
            continue
        # a mean over other seeds is not comparable (each seed draws its own shots and noisy labels): such a
        # method is neither the cell's best nor in the means over cells
        for m in [m for m, v in runs.items() if v and v.keys() != runs[target].keys()]:
            other_seeds[m].append(name)
            runs[m] = {}
        means = {m: statistics.fmean(v.values()) for m, v in runs.items() if v}
        for m, v in means.items():
            cell_means[m].append(v)
        to_zs = paired(diff(runs[target], runs["zeroshot"])) if runs.get("zeroshot") else None
        if to_zs is None:
            no_zs.append(name)
        else:
            note_pairs("zeroshot", cell, runs[target].keys() & runs["zeroshot"].keys())
        if len(means) == 1:  # no other method on these seeds: nothing to judge the cell by
            unjudged.append(name)
            lines.append(f"| {cell[0]} | {setting_label(*cell[1])} | {len(runs[target])} | {means[target]:.1f} | - | "
                         f"- | - | {to_zs.cell() if to_zs else '-'} |")  # fmt: skip
            continue
        best = max((m for m in means if m != target), key=means.get)
        to_best = paired(diff(runs[target], runs[best]))
        note_pairs(best, cell, runs[target].keys() & runs[best].keys())
        within: bool | None = means[target] >= means[best] or not (to_best.n > 1 and to_best.high < 0)
        if means[target] < means[best] and to_best.n < 2:  # below the best, and one pair gives no interval
            within = None
            one_pair.append(name)
        elif not within:
            outside.append(f"{name} ({to_best.mean:+.1f} vs {best})")
        if to_zs is not None and to_zs.mean < 0:
            below_zs.append(f"{name} ({to_zs.mean:+.1f})")
        lines.append(
            f"| {cell[0]} | {setting_label(*cell[1])} | {len(runs[target])} | {means[target]:.1f} | {best} "
            f"({means[best]:.1f}) | {to_best.cell()} | {_WITHIN[within]} | "
            f"{to_zs.cell() if to_zs else '-'} |"
        )
    if other_seeds:
        lines += ["", f"Left out where their seeds differ from {target}'s: " + "; ".join(
            f"{m} ({', '.join(c)})" for m, c in sorted(other_seeds.items()))]  # fmt: skip
    complete = [m for m in methods if len(cell_means[m]) == len(cells)]
    overall = {m: statistics.fmean(cell_means[m]) for m in complete}
    lines += ["", f"Mean over all {len(cells)} cells (methods with runs in every cell):", ""]
    lines += ["| method | mean top-1 % |", "|---|---:|"]
    lines += [f"| {m} | {overall[m]:.2f} |" for m in sorted(overall, key=overall.get, reverse=True)]
    baselines = [m for m in complete if m in BASELINES]
    partial = [m for m in BASELINES if m in methods and m not in complete]  # run, but not in every cell
    judged = len(cells) - len(unjudged) - len(one_pair)
    verdict = f"yes in the {judged} cells judged" if unjudged or one_pair else "yes"
    if not judged:  # a "yes" over no cell would read as a goal met
        verdict = "no cell judged"
    if outside:
        verdict = f"no ({len(outside)} of {len(cells)} cells: {'; '.join(outside)})"
    if unjudged:
        verdict += f"; not judged in {len(unjudged)} cells (no {target} runs, or no other method on its seeds: "
        verdict += f"{', '.join(unjudged)})"
    if one_pair:
        verdict += f"; not judged in {len(one_pair)} cells (below the best on one seed: no interval: "
        verdict += f"{', '.join(one_pair)})"
    summary = [
        f"- {target} is the best or within the paired interval of the best in every cell: {verdict}",
        "- never below zero-shot (cell means): "
        + (f"no ({len(below_zs)} of {len(cells)} cells: {'; '.join(below_zs)})" if below_zs else "yes")
        + (
            f"; not judged in {len(no_zs)} cells (no zero-shot run on {target}'s seeds: {', '.join(no_zs)})"
            if no_zs
            else ""
        ),
    ]
    if partial:  # "the best baseline" of a subset would be a label the numbers do not carry
        summary.append(f"- the best baseline over all cells: not computed ({', '.join(partial)} without runs in "
                       "every cell)")  # fmt: skip
    for other, goal in ((max(baselines, key=overall.get) if baselines and not partial else None, 3.0), (paper, 4.0)):
        if other is None or other not in overall or target not in overall:
            continue
        pooled = [d for cell in cells for d in diff(seeds_of(target, cell), seeds_of(other, cell))]
        for cell in cells:
            note_pairs(other, cell, seeds_of(target, cell).keys() & seeds_of(other, cell).keys())
        gap = overall[target] - overall[other]
        summary.append(f"- {target} - {other} over all cells: {_short_of(gap, goal)} points (goal >= +{goal:.0f}: "
                       f"{'met' if gap >= goal else 'not met'}); pooled pairs {paired(pooled).cell()}.")  # fmt: skip
    mixed = [k for k in sorted(compared) if crosses_environments(by_key[(target, *k[1:])], by_key[k])]
    if mixed:  # a difference between two environments' runs holds their rounding too, not only the methods'
        against = ", ".join(f"{n} against {m}" for m, n in sorted(Counter(k[0] for k in mixed).items()))
        summary.append(f"- {len(mixed)} of the {len(compared)} pairs compared above pair runs computed in different "
                       f'environments, whose differences include that part (docs/reliability.md, "Reproducibility"): '
                       f"{against}")  # fmt: skip
    return "\n".join([*lines, "", *summary]) + "\n"


def _short_of(value: float, goal: float) -> str:
    """``value`` to two decimals (``+2.99``), or to as many more as it takes not to print a value short of ``goal``
    as the goal itself (``+2.998``, not ``+3.00`` beside "not met"): the verdict is on the exact value."""
    for digits in range(2, 18):
        text = f"{value:+.{digits}f}"
        if (float(text) >= goal) == (value >= goal):
            return text
    return f"{value:+}"


if __name__ == "__main__":
    sys.exit(main())
