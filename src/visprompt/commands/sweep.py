"""``visprompt sweep GRID.yaml``: run every run of a grid file on Ray, skipping finished runs, retrying failed ones."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from visprompt.errors import ConfigError
from visprompt.sweep import expand_sweep, load_sweep, read_status, run_sweep
from visprompt.sweep.progress import ProgressDisplay
from visprompt.sweep.state import STALE_REMEDY, check_finished


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="run a grid of runs on Ray (resumable)",
        description="Expand GRID.yaml into runs and run them as Ray tasks. Finished runs (status done) are "
        "skipped, so running the same command again resumes an interrupted sweep; failed runs are retried. A finished "
        "run made with other settings or inputs than the grid gives now is refused (--dry-run lists it as stale).",
    )
    parser.add_argument("grid", metavar="GRID.yaml", help="grid file (see configs/sweeps/)")
    parser.add_argument("--address", help="Ray cluster address (default: a local Ray instance)")
    parser.add_argument("--gpus-per-run", type=float, default=0.0, metavar="F", help="GPUs per run, e.g. 0.25")
    parser.add_argument("--cpus-per-run", type=float, default=1.0, metavar="F", help="CPUs per run (default 1)")
    parser.add_argument("--num-cpus", type=int, metavar="N", help="CPUs of the local Ray instance (default: all)")
    parser.add_argument("--max-retries", type=int, default=1, metavar="N", help="retries of a failed run (default 1)")
    parser.add_argument("--out", metavar="DIR", help="folder of the run directories (default: the grid's out_dir)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
        help="add to the grid's base (a key that an axis sets is refused)",
    )  # fmt: skip
    parser.add_argument("--dry-run", action="store_true", help="list the runs and their status (or stale), run nothing")
    parser.add_argument("--run-fn", metavar="MODULE:FUNCTION", help="run function (default: the training engine)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    spec = load_sweep(args.grid, out_dir=args.out, overrides=args.overrides)
    runs = expand_sweep(spec)
    if args.dry_run:
        stale, touched = check_finished(runs)  # what the sweep checks before it starts, backbones not loaded
        for sweep_run in runs:
            if sweep_run.name in stale:
                print(f"{'stale':8s} {stale[sweep_run.name]}")
            else:
                print(f"{read_status(sweep_run.path) or 'pending':8s} {sweep_run.name}")
        print(f"{len(runs)} runs in {spec.out_dir}")
        if stale:
            print(f"{len(stale)} stale runs: finished with other settings or inputs than the grid gives now, so the "
                  f"sweep would refuse to start; {STALE_REMEDY}")  # fmt: skip
        if touched:
            name, file = next(iter(touched.items()))
            print(f"{len(touched)} finished runs' backbone files changed size or time since, e.g. {name}: {file}; "
                  "the sweep compares the backbone's checksum and refuses the runs if it changed")  # fmt: skip
        return 0
    display = ProgressDisplay()
    try:
        result = run_sweep(
            runs,
            _load_run_fn(args.run_fn) if args.run_fn else None,
            out_dir=spec.out_dir,
            address=args.address,
            num_cpus=args.num_cpus,
            cpus_per_run=args.cpus_per_run,
            gpus_per_run=args.gpus_per_run,
            max_retries=args.max_retries,
            on_progress=display,
        )
    finally:
        display.close()
    done = sum(o.status in ("done", "skipped") for o in result.outcomes)
    retried = sum(o.attempts > 1 for o in result.outcomes if o.status == "done")
    print(f"sweep {spec.name}: {done}/{len(runs)} runs done ({retried} after a retry), {len(result.failed)} failed, "
          f"{result.seconds:.1f} s; results in {spec.out_dir}")  # fmt: skip
    for outcome in result.failed:
        print(f"  failed after {outcome.attempts} attempt(s): {outcome.name}: {outcome.error}")
    if result.failed:
        print("  (errors in <run dir>/error.txt and worker.log; run the same command again to retry)")
    print(f"report: visprompt report {spec.out_dir}")
    return 0 if result.ok else 1


def _load_run_fn(spec: str) -> Any:
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ConfigError(f"--run-fn {spec!r}: expected MODULE:FUNCTION, e.g. mypackage.train:run")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"--run-fn {spec!r}: cannot import it ({exc})") from None
    if not callable(fn):
        raise ConfigError(f"--run-fn {spec!r}: not callable")
    return fn
