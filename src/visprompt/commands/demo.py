"""``visprompt demo``: the method comparison on the embedded offline testbed, in minutes on a CPU.

Builds one testbed task under ``--root`` (if it is not there yet), trains zero-shot CLIP, CoOp, NLPrompt,
VisPrompt and visprompt-plus on it under symmetric label noise (another with ``--set noise.type``) at each
``--rates`` value with the shipped tiny CLIP, then writes the report (tables and plots) of the runs folder and
prints its table. Finished runs are skipped, so
a second ``visprompt demo`` only re-prints the results. The testbed is a stand-in for real CLIP weights and datasets
(see ``src/visprompt/testbed/assets/MODEL_CARD.md``); its numbers say nothing about real benchmarks.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from visprompt.config import RunConfig, flatten_tree, load_config, nest_tree, parse_override
from visprompt.errors import ConfigError

DEFAULT_METHODS = ("zeroshot", "coop", "nlprompt", "visprompt", "visprompt-plus")
DEFAULT_TASK = "testbed-backgrounds"
# The config keys the demo's own flags set: a --set on one would replace the flag's value unseen (--set noise.rate
# gives every --rates run the same rate)
FLAG_KEYS = {"data.dataset": "--task", "data.root": "--root", "data.shots": "--shots", "noise.rate": "--rates",
             "optim.epochs": "--epochs", "run.seed": "--seed", "run.out_dir": "--out", "run.device": "--device",
             "method.name": "--methods"}  # fmt: skip


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
    demo.add_argument("--rates", nargs="+", type=float, default=[0.5, 0.75], metavar="RATE", help="noise rates")
    demo.add_argument("--shots", type=int, default=16)
    demo.add_argument("--epochs", type=int, default=30, help="training epochs per run (default: 30)")
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--device", default="auto")
    demo.add_argument(
        "--jobs", type=int, default=None, metavar="N",
        help="runs trained at once, each in its own process with cores/N torch threads (default: 2 on a CPU with "
        "2 or more cores, else 1); the results are the same",
    )  # fmt: skip
    demo.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides", help="override (repeatable)"
    )
    demo.set_defaults(func=run)


def demo_config(args: argparse.Namespace, method: str, rate: float) -> RunConfig:
    """The RunConfig of one demo run: the method's preset on the testbed task with its tiny CLIP; a ``--set`` of a
    key a flag sets (:data:`FLAG_KEYS`) is refused."""
    for item in args.overrides:
        key, value = parse_override(item)
        for given in flatten_tree(nest_tree({key: value})):
            if given in FLAG_KEYS:
                raise ConfigError(f"--set {given}: the demo sets it from {FLAG_KEYS[given]}; use {FLAG_KEYS[given]}")
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
    from visprompt.report import build_report
    from visprompt.testbed import build_testbed

    started = time.perf_counter()
    if not args.verbose:  # the demo prints its own progress; the per-epoch log lines are for -v
        logging.getLogger("visprompt").setLevel(logging.WARNING)
    configs = [demo_config(args, method, rate) for rate in args.rates for method in args.methods]  # validate first
    jobs = _jobs(args, configs)
    build_testbed(args.root, [args.task])
    if jobs == 1:
        for i, cfg in enumerate(configs, 1):
            print(f"[{i}/{len(configs)}] {_what(cfg)}", flush=True)
            print(f"    {_outcome(*_train(cfg))}", flush=True)
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        configs = [
            cfg if cfg.run.threads else dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, threads=threads))
            for cfg in configs
        ]
        print(f"training {len(configs)} runs, {jobs} at a time", flush=True)
        context = multiprocessing.get_context("spawn")  # a fresh interpreter per worker: no forked torch state
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = {pool.submit(_train, cfg): cfg for cfg in configs}
            try:
                for i, future in enumerate(as_completed(futures), 1):
                    print(f"[{i}/{len(configs)}] {_what(futures[future])}: {_outcome(*future.result())}", flush=True)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    report = build_report(args.out)
    print()
    print(Path(report.markdown).read_text())
    print(f"runs: {args.out}   report: {report.markdown}   plots: {', '.join(map(str, report.accuracy_plots))}")
    print(f"demo finished in {time.perf_counter() - started:.0f} s")
    return 0


def _jobs(args: argparse.Namespace, configs: list[RunConfig]) -> int:
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs: expected an integer >= 1, got {args.jobs}")
    if args.jobs is not None:
        return min(args.jobs, len(configs))
    on_cpu = args.device == "cpu" or (args.device == "auto" and not _cuda())
    return min(2, os.cpu_count() or 1, len(configs)) if on_cpu else 1


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _train(cfg: RunConfig) -> tuple[float | None, str, bool]:
    """Train one demo run (in this process or a worker's): its top-1, status and whether it was done already."""
    from visprompt.engine.runner import train_run

    logging.getLogger("visprompt").setLevel(logging.WARNING)
    result = train_run(cfg, show_progress=False)
    top1 = result.metrics.get("top1")
    return (top1 if isinstance(top1, float) else None), str(result.status), result.skipped


def _what(cfg: RunConfig) -> str:
    """The run in the words of the report's table: ``coop at sym 50% noise``, ``coop on clean labels``."""
    name = cfg.method.name
    return f"{name} on clean labels" if cfg.noise.is_clean else f"{name} at {cfg.noise.label} noise"


def _outcome(top1: float | None, status: str, skipped: bool) -> str:
    note = " (already done)" if skipped else ""
    return f"top-1 {top1:.2f}%{note}" if top1 is not None else status
