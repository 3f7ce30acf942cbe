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
import sys
import time
from datetime import date
from pathlib import Path

from visprompt.fileio import atomic_write_text
from visprompt.report import build_report, collect_runs
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
    print(report.markdown.read_text())
    if args.docs is not None:
        args.docs.mkdir(parents=True, exist_ok=True)
        for plot in report.accuracy_plots:
            shutil.copyfile(plot, args.docs / plot.name)
        records = collect_runs(spec.out_dir)
        run_s = sum(r.metrics.get("timings.total_s", 0.0) for r in records if r.finished)
        header = (
            f"<!-- written by `python benchmarks/testbed_robustness.py --docs {args.docs}` on {date.today()}: "
            f"{sum(r.finished for r in records)} finished runs of {args.grid.name}, {run_s / 3600:.1f} h of run "
            f"time in all (the sum of each run's timings.total_s) on {platform.machine()}, {os.cpu_count()} CPUs, "
            f"one thread per run -->\n\n"
        )
        atomic_write_text(args.docs / "results.md", header + report.markdown.read_text())
    return 0 if result.ok else 1


def _progress(progress: SweepProgress) -> None:
    print(f"\r{progress}", end="", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
