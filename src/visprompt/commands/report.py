"""``visprompt report RUNS_DIR``: CSV and Markdown tables (mean ± std over seeds) and PNG plots of a runs folder."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="tables and plots of a folder of runs",
        description="Collect metrics.json and log.jsonl of every run under RUNS_DIR into runs.csv, epochs.csv, "
        "summary.csv and results.md (mean ± std over seeds, best per column in bold), and plot accuracy against "
        "noise rate and selection precision/recall against epoch.",
    )
    parser.add_argument("runs_dir", metavar="RUNS_DIR", help="folder holding run directories (at any depth)")
    parser.add_argument("--out", metavar="DIR", help="where to write the report (default: RUNS_DIR/report)")
    parser.add_argument("--metric", default="top1", help="metrics.json key to tabulate (default: top1)")
    parser.add_argument("--lower-is-better", action="store_true", help="bold the smallest mean instead")
    parser.add_argument(
        "--compare", nargs="+", default=[], metavar="A:B",
        help="also compare method A with B paired over seeds (same dataset, noise, seed and data) per setting: "
        "mean difference, 95%% t-interval and pairs won, in results.md and paired.csv (methods as the report "
        "labels them, e.g. visprompt-plus:coop)",
    )  # fmt: skip
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from visprompt.report import build_report

    report = build_report(
        args.runs_dir, args.out, metric=args.metric, higher_is_better=not args.lower_is_better, compare=args.compare
    )
    print(f"{report.num_runs} runs, {report.num_finished} finished; report in {report.out_dir}")
    for path in report.files:
        print(f"  {path}")
    return 0
