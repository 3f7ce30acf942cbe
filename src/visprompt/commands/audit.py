"""``visprompt audit``: rank a dataset's training labels by how likely they are wrong, with a report.

Two forms: ``visprompt audit RUN_DIR`` audits the training samples of a finished run; ``visprompt audit --dataset
folder|csv|<name> ...`` first trains the method it needs (default ``visprompt``, on every training image:
``data.shots=all``, no augmentation, so the frozen features are computed once) and then audits that run. Outputs
go to ``<run>/audit/`` (or ``--to DIR``): ``audit.csv``, ``audit.html`` and ``summary.json``; ``--fix OUT.csv``
also writes the corrected label file: every row of the dataset, the flagged labels changed. It is refused, before
anything is trained or written, for a run that did not audit every training label (``data.shots`` not ``all``,
or synthetic noise). Nothing is written until the audit has succeeded, and every file is written atomically.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from visprompt.commands.config import add_config_arguments, resolve_config
from visprompt.config import RunConfig
from visprompt.errors import ConfigError

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="find the wrong labels of a dataset (ranked CSV, HTML report, corrected label file)",
        description="Audit the training labels of a run (RUN_DIR) or of a dataset (--dataset ...: trains the "
        "method first, on every training image). Writes audit.csv (ranked), audit.html (self-contained) and "
        "summary.json to RUN_DIR/audit or --to DIR.",
    )
    parser.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="a run directory written by visprompt train")
    parser.add_argument("--to", metavar="DIR", help="where the audit files go (default: <run>/audit)")
    parser.add_argument(
        "--fix", metavar="OUT.csv",
        help="also write the corrected label file (every row of the dataset, CSV layout) here; needs a run on "
        "every training image (data.shots=all) with the dataset's own labels (no synthetic noise)",
    )  # fmt: skip
    parser.add_argument("--data", metavar="ROOT", help="RUN_DIR's images live under this root now (RUN_DIR only)")
    parser.add_argument("--thumbnails", type=int, default=500, help="rows of audit.html with a thumbnail (500)")
    parser.add_argument("--folds", type=int, default=5, help="cross-fitting folds (5)")
    add_config_arguments(parser)
    parser.set_defaults(func=run)


def _one_shot_config(args: argparse.Namespace) -> RunConfig:
    """The configuration of the run the one-shot form trains (every training image, no augmentation)."""
    if args.shots is None:
        args.shots = "all"
    if args.method is None:
        args.method = "visprompt"
    args.overrides = ["data.augment=false", *args.overrides]  # frozen features once; the user's --set still wins
    return resolve_config(args)


def _refuse_training_options(args: argparse.Namespace) -> None:
    """A RUN_DIR audit uses the run as it was trained: an option that would only shape a new training run is refused."""
    from visprompt.commands.config import SHORTHANDS

    given = [f"--{flag.replace('_', '-')}" for flag in ("backbone", "method", *SHORTHANDS) if flag != "device"
             and getattr(args, flag, None) is not None]  # fmt: skip
    given += ["--config"] * bool(args.config) + ["--set"] * bool(args.overrides)
    if given:
        raise ConfigError(
            f"{given[0]}: only with --dataset (auditing RUN_DIR uses the run's own settings; --data names a new "
            "image root)"
        )


def run(args: argparse.Namespace) -> int:
    from visprompt.audit.report import check_fix_source, class_summary, confused_pairs, write_csv, write_fix, write_html
    from visprompt.audit.run import audit_run, fix_source, run_config
    from visprompt.engine.inference import run_splits
    from visprompt.engine.rundir import RunDir
    from visprompt.engine.runner import train_run
    from visprompt.fileio import atomic_write_json

    if args.run_dir and args.dataset:
        raise ConfigError("give either RUN_DIR or --dataset, not both")
    if not args.run_dir and not args.dataset:
        raise ConfigError("give a RUN_DIR to audit, or --dataset folder|csv|<name> to train and audit")
    if args.run_dir:
        _refuse_training_options(args)
    elif args.data:  # the one-shot form would train on the dataset's images and audit the ones under --data
        raise ConfigError("--data: only with RUN_DIR (it names a new root of the run's images); with --dataset give "
                          "the images with --root or --set data.path")  # fmt: skip
    if args.folds < 2:
        raise ConfigError(f"--folds: expected an integer >= 2, got {args.folds}")
    fix = Path(args.fix) if args.fix else None
    cfg = _one_shot_config(args) if args.dataset else None
    source = None
    if fix is not None:  # a file that could not hold every row, checked, is refused before anything is written
        cfg = cfg or run_config(args.run_dir)
        source = fix_source(cfg, fix, args.data)
    run_dir = Path(args.run_dir) if args.run_dir else train_run(cfg).run_dir
    if source is not None:  # the run's training samples are the source's training rows (the source unchanged)
        check_fix_source(source.splits, run_splits(RunDir(run_dir), cfg, args.data).train)
    device = args.device or "auto"
    audit = audit_run(run_dir, device=device, data_root=args.data, folds=args.folds)
    out = Path(args.to) if args.to else run_dir / "audit"
    r, names = audit.result, audit.splits.classnames
    write_csv(out / "audit.csv", audit.samples, r, names)
    write_html(out / "audit.html", audit.samples, r, names, title=f"visprompt audit: {run_dir.name}",
               thumbnails=args.thumbnails)  # fmt: skip
    true = [s.true_label for s in audit.samples]
    known = all(t is not None for t in true) and any(t != s.label for t, s in zip(true, audit.samples, strict=True))
    summary = {
        "run": str(run_dir),
        "samples": len(audit.samples),
        "estimated_errors": r.estimated_errors,
        "flagged": int(r.flagged.sum()),
        "true_errors": sum(t != s.label for t, s in zip(true, audit.samples, strict=True)) if known else None,
        "per_class": class_summary(r, names),
        "confused_pairs": confused_pairs(r, names),
        "timings": audit.timings,
        "stats": r.stats,
    }
    atomic_write_json(out / "summary.json", summary)
    if source is not None:
        write_fix(fix, source.splits, audit.samples, r, source.labels)
    n = len(audit.samples)
    est, flagged = r.estimated_errors, int(r.flagged.sum())
    print(f"{n} training samples audited: about {est} wrong labels ({100 * est / n:.1f}%), {flagged} flagged"
          + (f"; {summary['true_errors']} labels are known to be wrong" if known else ""))  # fmt: skip
    rows = sum(len(getattr(source.splits, key)) for key in ("train", "val", "test")) if source else 0
    print(
        f"report: {out / 'audit.html'}  ranked list: {out / 'audit.csv'}"
        + (f"  corrected labels: {fix} (all {rows} rows of the dataset, {flagged} changed)" if fix else "")
    )
    return 0
