"""``visprompt train``: train and evaluate one run (skipped when done, resumed when interrupted)."""

from __future__ import annotations

import argparse

from visprompt.commands.config import add_config_arguments, resolve_config


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train and evaluate one run",
        description="Train a method on a few-shot noisy split and evaluate it on the test split. The run directory "
        "<out>/<name> holds config.yaml, split.json, log.jsonl, metrics.json, checkpoint.safetensors and status; a "
        "finished run is skipped, an interrupted one resumes after its last completed epoch.",
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--restart",
        action="store_true",
        help="delete the run directory's previous run (finished or not, any settings) and train afresh",
    )
    bars = parser.add_mutually_exclusive_group()
    bars.add_argument(
        "--progress", dest="progress", action="store_true", default=None, help="always show progress bars"
    )
    bars.add_argument("--no-progress", dest="progress", action="store_false", help="plain log lines, no bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from visprompt.engine.runner import train_run

    cfg = resolve_config(args)
    result = train_run(cfg, restart=args.restart, show_progress=args.progress)
    m = result.metrics
    state = "already done, skipped" if result.skipped else "done"
    if result.resumed_from:
        state += f", resumed after epoch {result.resumed_from}"
    print(f"{result.run_dir}: {state}")
    if m:
        total = m.get("timings", {}).get("total_s", float("nan"))
        print(f"top-1 {m['top1']:.2f}%  macro-F1 {m['macro_f1']:.2f}%  ({m['num_test']} test images, {total:.1f} s)")
    return 0
