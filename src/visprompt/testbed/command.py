"""``visprompt testbed build --root DATA``: write the offline testbed's downstream tasks in CoOp's layout.

Wired into the CLI by ``visprompt.commands`` (``add_parser(subparsers)`` sets ``func``; ``run(args) -> int``).
"""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from visprompt.testbed.tasks import TASKS

    testbed = subparsers.add_parser("testbed", help="the offline testbed (tiny CLIP + procedural tasks)")
    sub = testbed.add_subparsers(dest="testbed_command", metavar="ACTION", required=True)
    build = sub.add_parser(
        "build",
        help="render the testbed's few-shot tasks under a data root",
        description="Render the testbed's downstream tasks (deterministic in --seed) into DATA/<folder>/ with "
        "a CoOp split file, so the dataset loader reads them like the real benchmarks. Complete tasks are "
        "skipped. Tasks: " + ", ".join(t.name for t in TASKS) + ".",
    )
    build.add_argument("--root", default="DATA", help="data root (default: DATA)")
    build.add_argument("--task", action="append", help="task name (repeatable; default: all)")
    build.add_argument("--seed", type=int, default=0, help="rendering seed (default: 0)")
    build.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from visprompt.testbed.build import build_testbed
    from visprompt.testbed.tasks import TASKS_BY_NAME

    for folder in build_testbed(args.root, args.task, seed=args.seed):
        task = next(t for t in TASKS_BY_NAME.values() if t.folder == folder.name)
        counts = ", ".join(f"{k} {v}" for k, v in task.expected_counts.items())
        print(f"{task.name}: {folder} ({task.num_classes} classes; {counts})")
    return 0
