"""``visprompt demo``: the method comparison on the embedded offline testbed, in minutes on a CPU.

Builds one testbed task under ``--root`` (if it is not there yet), trains zero-shot CLIP, CoOp, NLPrompt,
VisPrompt and visprompt-plus on it under symmetric label noise at each ``--rate`` with the shipped tiny CLIP,
then writes the report (tables and plots) of the runs folder and prints its table. Finished runs are skipped, so
a second ``visprompt demo`` only re-prints the results. The testbed is a stand-in for real CLIP weights and datasets
(see ``src/visprompt/testbed/assets/MODEL_CARD.md``); its numbers say nothing about real benchmarks.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from visprompt.config import RunConfig, load_config

DEFAULT_METHODS = ("zeroshot", "coop", "nlprompt", "visprompt", "visprompt-plus")
DEFAULT_TASK = "testbed-backgrounds"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="compare the methods under label noise on the offline testbed (a few minutes on a CPU)",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    demo.add_argument("--root", default="DATA", help="data root the testbed task is built under (default: DATA)")
    demo.add_argument("--out", default="runs/demo", help="runs folder (default: runs/demo)")
    demo.add_argument("--task", default=DEFAULT_TASK, help=f"testbed task (default: {DEFAULT_TASK})")
    demo.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), metavar="METHOD")
    demo.add_argument("--rates", nargs="+", type=float, default=[0.5, 0.75], metavar="RATE", help="sym noise rates")
    demo.add_argument("--shots", type=int, default=16)
    demo.add_argument("--epochs", type=int, default=30, help="training epochs per run (default: 30)")
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--device", default="auto")
    demo.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides", help="override (repeatable)"
    )
    demo.set_defaults(func=run)


def demo_config(args: argparse.Namespace, method: str, rate: float) -> RunConfig:
    """The RunConfig of one demo run: the method's preset on the testbed task with its tiny CLIP."""
    overrides = [
        f"data.dataset={args.task}",
        f"data.root={args.root}",
        f"data.shots={args.shots}",
        "data.augment=false",  # frozen image features are computed once and cached: the demo's speed
        "backbone.arch=testbed",
        "backbone.weights=null",  # the checkpoint shipped with the package
        "noise.type=sym",
        f"noise.rate={rate}",
        f"optim.epochs={args.epochs}",
        f"run.seed={args.seed}",
        f"run.out_dir={args.out}",
        f"run.device={args.device}",
        *args.overrides,
    ]
    return load_config(overrides=overrides, method=method)


def run(args: argparse.Namespace) -> int:
    from visprompt.engine.runner import train_run
    from visprompt.report import build_report
    from visprompt.testbed import build_testbed

    started = time.perf_counter()
    if not args.verbose:  # the demo prints its own progress; the per-epoch log lines are for -v
        logging.getLogger("visprompt").setLevel(logging.WARNING)
    configs = [demo_config(args, method, rate) for rate in args.rates for method in args.methods]  # validate first
    build_testbed(args.root, [args.task])
    for i, cfg in enumerate(configs, 1):
        print(f"[{i}/{len(configs)}] {cfg.method.name} at {cfg.noise.rate:.0%} symmetric noise", flush=True)
        result = train_run(cfg)
        top1 = result.metrics.get("top1")
        note = " (already done)" if result.skipped else ""
        print(f"    top-1 {top1:.2f}%{note}" if isinstance(top1, float) else f"    {result.status}", flush=True)
    report = build_report(args.out)
    print()
    print(Path(report.markdown).read_text())
    print(f"runs: {args.out}   report: {report.markdown}   plots: {', '.join(map(str, report.accuracy_plots))}")
    print(f"demo finished in {time.perf_counter() - started:.0f} s")
    return 0
