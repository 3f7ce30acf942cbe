"""The offline testbed's robustness benchmark: every method x task x noise setting x seed, then its report.

Builds the testbed tasks the grid names (when missing), runs the grid through the sweep runner (finished runs
are skipped, so an interrupted benchmark resumes where it stopped), writes the report of the runs folder and
copies its table and accuracy plots to ``--docs`` with a header saying how they were made.

    python benchmarks/testbed_robustness.py                                  # configs/sweeps/testbed.yaml
    python benchmarks/testbed_robustness.py --num-cpus 2 --docs docs/testbed-benchmark
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import statistics
import sys
import time
from collections import defaultdict
from datetime import date
from pathlib import Path

from visprompt.fileio import atomic_write_text
from visprompt.report import RunRecord, build_report, collect_runs
from visprompt.report.collect import CLEAN
from visprompt.report.tables import setting_label, setting_order
from visprompt.sweep import SweepProgress, expand_sweep, load_sweep, run_sweep
from visprompt.testbed import build_testbed

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", type=Path, default=ROOT / "configs" / "sweeps" / "testbed.yaml")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    parser.add_argument("--docs", type=Path, default=None, help="copy the table and plots here (default: none)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    spec = load_sweep(args.grid)
    runs = expand_sweep(spec)
    roots = {r.config.data.root for r in runs}
    for root in roots:
        build_testbed(root, sorted({r.config.data.dataset for r in runs if r.config.data.root == root}))
    started = time.perf_counter()
    result = run_sweep(runs, out_dir=spec.out_dir, num_cpus=args.num_cpus, on_progress=_progress)
    seconds = time.perf_counter() - started
    print(f"\n{len(runs)} runs ({len(result.failed)} failed) in {seconds / 60:.1f} min", file=sys.stderr)
    report = build_report(spec.out_dir)
    records = collect_runs(spec.out_dir)
    selection = selection_table(records)
    print(report.markdown.read_text() + "\n" + selection)
    if args.docs is not None:
        args.docs.mkdir(parents=True, exist_ok=True)
        for plot in report.accuracy_plots:
            shutil.copyfile(plot, args.docs / plot.name)
        run_s = sum(r.metrics.get("timings.total_s", 0.0) for r in records if r.finished)
        header = (
            f"<!-- written by `python benchmarks/testbed_robustness.py --docs {args.docs}` on {date.today()}: "
            f"{sum(r.finished for r in records)} finished runs of {args.grid.name}, {run_s / 3600:.1f} h of run "
            f"time in all (the sum of each run's timings.total_s) on {platform.machine()}, {os.cpu_count()} CPUs, "
            f"one thread per run -->\n\n"
        )
        atomic_write_text(args.docs / "results.md", header + report.markdown.read_text() + "\n" + selection)
    return 0 if result.ok else 1


def selection_table(records: list[RunRecord]) -> str:
    """Clean-set selection at the last epoch per method and setting: precision, recall and the kept fraction.

    Precision: the share of the samples a method trains as clean whose label is right; recall: the share of the
    right labels it keeps; kept: the fraction of the training set treated as clean. Means over tasks and seeds.
    """
    cells: dict[tuple[str, tuple[str, float]], list[tuple[float, float, float]]] = defaultdict(list)
    for r in records:
        last = r.epochs[-1] if r.finished and r.epochs else {}
        if r.noise[0] != CLEAN and "sel_precision" in last and r.method not in ("coop", "coop-gce", "cocoop"):
            kept = last.get("n_clean", 0) / max(last.get("n_selected_from", 1), 1)
            cells[(r.method, r.noise)].append((last["sel_precision"], last["sel_recall"], kept))
    settings = sorted({k[1] for k in cells}, key=lambda s: setting_order(*s))
    methods = sorted({k[0] for k in cells})
    lines = [
        "## Clean-set selection at the last epoch",
        "",
        "Precision / recall / kept fraction of the samples each method trains as clean, against the true labels "
        "(mean over tasks and seeds; from each run's log.jsonl).",
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


def _progress(progress: SweepProgress) -> None:
    print(f"\r{progress}", end="", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
