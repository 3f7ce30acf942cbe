"""VisPrompt's ablations on the offline testbed: each variant is the ``visprompt`` preset with a few overrides.

An override ``method=NAME`` starts the variant from another method preset instead (``visprompt-faithful``,
``visprompt-plus``, or a baseline such as ``nlprompt``).

Every variant runs on every testbed task, noise setting and seed through the sweep runner (finished runs are
skipped, so an interrupted study resumes), then the script prints Markdown tables of top-1 accuracy:

* the mean over tasks and seeds per setting, with the paired difference to the defaults (same task, seed and
  noisy labels) and how many of those pairs the variant wins;
* the mean +- std over seeds per task and setting.

The tables read each variant's folder under ``--out`` and the defaults' (every bracket pairs with them): a finished
run there whose saved config differs from what this command gives it, or a run of the asked tasks, settings and
seeds at a path the variant's grid does not name, is refused with a one-line error before anything runs, as is a
``--goals`` folder holding a run that the benchmark grid does not name.

    python benchmarks/testbed_ablations.py                      # every variant, 3 tasks x 3 settings x 3 seeds
    python benchmarks/testbed_ablations.py --variants defaults no-noisy-loss --seeds 1 --table out.md
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from visprompt.config import parse_override
from visprompt.errors import ConfigError, DataError, VispromptError
from visprompt.report.collect import CLEAN, RunRecord, collect_runs, metric_value
from visprompt.report.paired import paired
from visprompt.report.tables import across_environments_note, crosses_environments, environment_lines, setting_label
from visprompt.sweep import SweepRun, SweepSpec, expand_sweep, load_sweep, refuse_stale, run_sweep
from visprompt.sweep.progress import ProgressDisplay
from visprompt.testbed import build_testbed

#: ``visprompt-plus``'s relabelling as registered until 2026-12-07 (off): pinned in every variant measured before the
#: recipe relabelled, so that it stays what it ran as (a variant's own relabelling fields come after it and win)
PLUS_20261206 = ["method.relabel=false", "method.relabel_by=model", "method.relabel_max_kept=1.0"]
#: ``visprompt-plus``'s noisy part as registered until 2026-12-06 (weight x kept fraction, GCE q 0.5), and its
#: relabelling: pinned in the variants measured on that recipe, in the same way
PLUS_20261201 = ["method.noisy_weight=kept", "method.q_schedule=fixed", *PLUS_20261206]
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "defaults": ("the `visprompt` preset (paper protocol)", []),
    "no-noisy-loss": ("no loss on the OT-noisy part", ["method.loss.noisy=none"]),
    "mae-noisy": ("MAE on the noisy part (q = 1)", ["method.loss.q=1.0"]),
    "full-ot": ("one OT split over the training set per epoch", ["method.selection.scope=full"]),
    "full-ot-no-noisy": (
        "full-set OT and no noisy-part loss",
        ["method.selection.scope=full", "method.loss.noisy=none"],
    ),
    "no-guidance": ("no visual guidance (CoOp's prompt, VisPrompt's split and loss)", ["prompt.visual_guidance=false"]),
    "no-ffn": ("no FFN after the cross-attention", ["prompt.use_ffn=false"]),
    "gate-zero": ("gate forced to 0 (visual branch silenced)", ["prompt.gate=zero"]),
    "film-global": ("FiLM from the mean visual token", ["prompt.film_mode=global"]),
    "cost-negp": ("OT cost -p instead of -log p", ["method.selection.cost=negp"]),
    "alpha-0.8": ("alpha = 0.8 (more weight on the clean part)", ["method.loss.alpha=0.8"]),
    "faithful": (
        "the authors' loop: split at epoch start in eval mode per mini-batch, then clean-only and noisy-only batches",
        ["method=visprompt-faithful"],
    ),
    "normalize-alpha": (
        "both loss weights divided by alpha (a clean sample gets CoOp's step at the same lr)",
        ["method.loss.normalize_alpha=true"],
    ),
    "lr-0.004": ("twice the learning rate (the other way to undo alpha = 0.5's halved step)", ["optim.lr=0.004"]),
    "plus": ("`visprompt-plus` (its preset)", ["method=visprompt-plus"]),
    "plus-relabel-0.9": (
        "full-set OT, prior 1, OT-noisy samples trained on pseudo-labels the model gives >= 0.9, others no loss",
        [
            "method=visprompt-plus",
            *PLUS_20261206,
            "method.prior_weight=1.0",
            "method.prior_schedule=fixed",
            "method.relabel=true",
            "method.relabel_min_prob=0.9",
            "method.loss.noisy=ce",
            "method.noisy_weight=fixed",
            "method.q_schedule=fixed",
        ],
    ),
    "plus-no-relabel": (
        "full-set OT, prior 1, no loss on the OT-noisy part",
        [
            "method=visprompt-plus",
            *PLUS_20261206,
            "method.q_schedule=fixed",
            "method.prior_weight=1.0",
            "method.prior_schedule=fixed",
            "method.loss.noisy=none",
            "method.noisy_weight=fixed",
        ],
    ),
    "plus-gce-no-prior": (
        "full-set OT, GCE on the OT-noisy part's given labels, weights normalised by alpha, no prior",
        [
            "method=visprompt-plus",
            *PLUS_20261206,
            "method.q_schedule=fixed",
            "method.prior_weight=0",
            "method.prior_schedule=fixed",
            "method.noisy_weight=fixed",
        ],
    ),
    "plus-gce-prior-0.25": (
        "as plus-gce-no-prior, with the zero-shot prior at a fixed weight 0.25",
        [
            "method=visprompt-plus",
            *PLUS_20261206,
            "method.q_schedule=fixed",
            "method.prior_weight=0.25",
            "method.prior_schedule=fixed",
            "method.noisy_weight=fixed",
        ],
    ),
    "plus-kept-prior-0.25-fixed": (
        "`visprompt-plus` with the zero-shot prior at a fixed weight 0.25 instead of 1 - the kept fraction",
        ["method=visprompt-plus", *PLUS_20261201, "method.prior_weight=0.25", "method.prior_schedule=fixed"],
    ),
    "plus-first": (
        "`visprompt-plus` as first registered: the zero-shot prior at 1 x (1 - the kept fraction)",
        ["method=visprompt-plus", *PLUS_20261201, "method.prior_weight=1.0"],
    ),
    "plus-alpha-0.8": (
        "`visprompt-plus` as first registered, with alpha = 0.8 (noisy-part weight 0.25 x the kept fraction)",
        ["method=visprompt-plus", *PLUS_20261201, "method.prior_weight=1.0", "method.loss.alpha=0.8"],
    ),
    "plus-prior-0.5": (
        "`visprompt-plus` with the zero-shot prior at 0.5 x (1 - the kept fraction) instead of 1 x",
        ["method=visprompt-plus", *PLUS_20261201, "method.prior_weight=0.5"],
    ),
    "plus-prior-0.25": (
        "`visprompt-plus` with the zero-shot prior at 0.25 x (1 - the kept fraction) instead of 1 x",
        ["method=visprompt-plus", *PLUS_20261201, "method.prior_weight=0.25"],
    ),
    "plus-prior-0.75": (
        "`visprompt-plus` with the zero-shot prior at 0.75 x (1 - the kept fraction) instead of 1 x",
        ["method=visprompt-plus", *PLUS_20261201, "method.prior_weight=0.75"],
    ),
    "plus-prior-squared": (
        "`visprompt-plus` with the zero-shot prior at (1 - the kept fraction) squared instead of 1 x it",
        ["method=visprompt-plus", *PLUS_20261201, "method.prior_weight=1.0", "method.prior_schedule=noise-squared"],
    ),
    "plus-alpha-0.8-prior-0.5": (
        "`visprompt-plus` with alpha = 0.8 and the prior at 0.5 x (1 - the kept fraction)",
        ["method=visprompt-plus", *PLUS_20261201, "method.loss.alpha=0.8", "method.prior_weight=0.5"],
    ),
    "plus-alpha-0.8-prior-2": (
        "`visprompt-plus` with alpha = 0.8 and the prior at 2 x (1 - the kept fraction)",
        ["method=visprompt-plus", *PLUS_20261201, "method.loss.alpha=0.8", "method.prior_weight=2.0"],
    ),
    "plus-zs-target": (
        "`visprompt-plus` with the split's noisy part trained towards zero-shot CLIP's distribution, not its labels",
        ["method=visprompt-plus", *PLUS_20261201, "method.noisy_target=zeroshot"],
    ),
    "plus-zs-target-fixed": (
        "as plus-zs-target, the noisy part at full weight (not x the kept fraction)",
        [
            "method=visprompt-plus",
            *PLUS_20261206,
            "method.q_schedule=fixed",
            "method.noisy_target=zeroshot",
            "method.noisy_weight=fixed",
        ],
    ),
    "plus-zs-mixed": (
        "`visprompt-plus` with the split's noisy part trained kept x on its labels + (1 - kept) x towards zero-shot",
        [
            "method=visprompt-plus",
            *PLUS_20261206,
            "method.q_schedule=fixed",
            "method.noisy_target=mixed",
            "method.noisy_weight=fixed",
        ],
    ),
    "plus-gate-zero": (
        "`visprompt-plus` with the FiLM gate forced to 0 (its visual branch silenced: a CoOp prompt, plus's split)",
        ["method=visprompt-plus", *PLUS_20261201, "prompt.gate=zero"],
    ),
    "plus-gate-lr10": (
        "`visprompt-plus` with the gate's learning rate 10x the others' (prompt.gate_lr_scale=10)",
        ["method=visprompt-plus", *PLUS_20261201, "prompt.gate_lr_scale=10"],
    ),
    "plus-gate-kept": (
        "`visprompt-plus` with the gate x the split's kept fraction (method.gate_schedule=kept)",
        ["method=visprompt-plus", *PLUS_20261201, "method.gate_schedule=kept"],
    ),
    "plus-gate-kept2": (
        "`visprompt-plus` with the gate x the split's kept fraction squared (method.gate_schedule=kept-squared)",
        ["method=visprompt-plus", *PLUS_20261201, "method.gate_schedule=kept-squared"],
    ),
    "plus-mae": (
        "`visprompt-plus` with MAE instead of GCE on the split's noisy part (method.loss.q=1)",
        ["method=visprompt-plus", *PLUS_20261201, "method.loss.q=1.0"],
    ),
    "plus-noisy-kept2": (
        "`visprompt-plus` with the noisy part's weight x the kept fraction squared (method.noisy_weight=kept-squared)",
        ["method=visprompt-plus", *PLUS_20261206, "method.q_schedule=fixed", "method.noisy_weight=kept-squared"],
    ),
    "plus-qnoise": (
        "`visprompt-plus` with the noisy part's GCE q = 1 - the kept fraction (method.q_schedule=noise)",
        ["method=visprompt-plus", *PLUS_20261206, "method.noisy_weight=kept", "method.q_schedule=noise"],
    ),
    "plus-kept2-qnoise": (
        "`visprompt-plus` with the noisy part's weight x kept fraction squared and its GCE q = 1 - kept fraction",
        ["method=visprompt-plus", *PLUS_20261206, "method.noisy_weight=kept-squared", "method.q_schedule=noise"],
    ),
    "plus-kept-odds": (
        "`visprompt-plus` with the noisy part's weight (kept / (1 - kept))^2, at most 1, and its GCE q = 1 - kept",
        ["method=visprompt-plus", *PLUS_20261206, "method.noisy_weight=kept-odds", "method.q_schedule=noise"],
    ),
    "plus-kept-spread": (
        "`visprompt-plus` with the noisy part's weight `kept-odds` while its rejections spread over the other classes, "
        "`kept-squared` while they concentrate (a pair flip), and its GCE q = 1 - kept",
        ["method=visprompt-plus", *PLUS_20261206, "method.noisy_weight=kept-spread", "method.q_schedule=noise"],
    ),
    "plus-spread-classes": (
        "`visprompt-plus` with `kept-spread`'s spread part weighed by the odds of a rejected label against one other "
        "class, (C - 1) k / (1 - k), full from 9 (noisy_weight=kept-spread-classes): `kept-spread` at 10 classes",
        ["method=visprompt-plus", *PLUS_20261206, "method.noisy_weight=kept-spread-classes", "method.q_schedule=noise"],
    ),
    "plus-fixed-qnoise": (
        "`visprompt-plus` with the noisy part at full weight and its GCE q = 1 - kept",
        ["method=visprompt-plus", *PLUS_20261206, "method.noisy_weight=fixed", "method.q_schedule=noise"],
    ),
    "plus-fixed": (
        "`visprompt-plus` with the noisy part at full weight and the GCE's own q (as `visprompt` trains it)",
        ["method=visprompt-plus", *PLUS_20261206, "method.noisy_weight=fixed", "method.q_schedule=fixed"],
    ),
    "plus-no-prior": (
        "`visprompt-plus` without the zero-shot prior (method.prior_weight=0)",
        ["method=visprompt-plus", *PLUS_20261206, "method.prior_weight=0"],
    ),
    "plus-half-step": (
        "`visprompt-plus` with VisPrompt's loss weights (alpha, 1 - alpha), not divided by alpha: half its step",
        ["method=visprompt-plus", *PLUS_20261206, "method.loss.normalize_alpha=false"],
    ),
    "plus-relabel-0.5": (
        "`visprompt-plus` with its split's noisy part trained on the OT pseudo-labels the model gives >= 0.5, "
        "the others no loss (method.relabel=true)",
        ["method=visprompt-plus", *PLUS_20261206, "method.relabel=true", "method.relabel_min_prob=0.5"],
    ),
    "plus-relabel-0.8": (
        "as plus-relabel-0.5, pseudo-labels the model gives >= 0.8",
        ["method=visprompt-plus", *PLUS_20261206, "method.relabel=true", "method.relabel_min_prob=0.8"],
    ),
    "plus-relabel-posterior": (
        "`visprompt-plus` with its split's noisy part trained on the OT pseudo-label where, with the given label "
        "weighed by the split's noise estimate, it is >= 0.5 likely; the others on their labels (relabel_by=posterior)",
        ["method=visprompt-plus", *PLUS_20261206, "method.relabel=true", "method.relabel_by=posterior"],
    ),
    "plus-relabel-agree": (
        "as plus-relabel-posterior, moving a label only where the frozen zero-shot CLIP's class is the pseudo-label "
        "too (relabel_by=posterior-zeroshot)",
        ["method=visprompt-plus", *PLUS_20261206, "method.relabel=true", "method.relabel_by=posterior-zeroshot"],
    ),
    "plus-relabel-low-kept": (
        "as plus-relabel-posterior, in the epochs whose split keeps at most 0.3 of the training set only; the other "
        "epochs as the recipe (relabel_max_kept=0.3)",
        ["method=visprompt-plus", "method.relabel=true", "method.relabel_by=posterior", "method.relabel_max_kept=0.3"],
    ),
    "zeroshot": ("baseline: zero-shot CLIP", ["method=zeroshot"]),
    "coop": ("baseline: CoOp", ["method=coop"]),
    "coop-gce": ("baseline: CoOp + GCE", ["method=coop-gce"]),
    "nlprompt": ("baseline: NLPrompt", ["method=nlprompt"]),
    "joapr": ("baseline: JoAPR", ["method=joapr"]),
    "clean-only": ("the `visprompt-clean-only` preset", ["method=visprompt-clean-only"]),
    "nlprompt-recipe": (
        "NLPrompt's split and loss (full-set OT, cost -p, CE then MAE passes) with VisPrompt's prompt",
        [
            "method.selection.scope=full",
            "method.selection.cost=negp",
            "method.loss.noisy=mae",
            "method.loss.schedule=sequential",
        ],
    ),
}
ROOT = Path(__file__).resolve().parents[1]
GRID = ROOT / "configs" / "sweeps" / "testbed.yaml"  # the benchmark's (testbed-plus-goals.yaml is a subset of it)
TASKS = ("testbed-backgrounds", "testbed-colours", "testbed-scenes")
SETTINGS = ("sym:0.5", "sym:0.75", "asym:0.375")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="NAME")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), metavar="TYPE:RATE")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (default: 30, as the demo)")
    parser.add_argument("--root", default="DATA", help="data root of the testbed tasks (built when missing)")
    parser.add_argument("--out", default="runs/testbed-ablations", help="runs folder (default: %(default)s)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    parser.add_argument("--table", type=Path, default=None, help="also write the Markdown tables to this file")
    parser.add_argument(
        "--compare", nargs="+", default=[], metavar="A:B",
        help="also print paired differences A - B per setting with a 95%% t-interval and win counts",
    )  # fmt: skip
    parser.add_argument(
        "--stats", nargs="+", default=[], metavar="KEY",
        help="also print the mean over tasks and seeds of these last-epoch log values (e.g. gate_mean gate_std)",
    )  # fmt: skip
    parser.add_argument("--no-run", action="store_true", help="only tabulate the finished runs under --out")
    parser.add_argument(
        "--goals", type=Path, default=None, metavar="GRID_RUNS",
        help="also print issue 12's goal summary of each visprompt-plus variant against the other methods' runs "
        "in this folder of the benchmark grid (configs/sweeps/testbed.yaml, or its subset testbed-plus-goals.yaml; "
        "same tasks, settings and seeds)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    out = Path(args.out).resolve()
    try:  # every bad argument is one line and exit 2, before anything is run
        settings = _settings(args.settings)
        pairs = [_pair(item, args.variants) for item in args.compare]
        design = (args.root, args.epochs, args.tasks, settings, args.seeds)
        # the tables read the variants' folders and, for each variant's difference to them, the defaults'
        read = {name: variant_runs(out, name, *design) for name in dict.fromkeys([*args.variants, "defaults"])}
        runs = [run for name in args.variants for run in read[name]]  # what is run: the variants asked for
        for name, checked in read.items():  # the sweep refuses stale runs too, but not --no-run, nor the defaults
            refuse_stale(checked, f"--out {out / name}", "pass the --root and --epochs they were made with (or, for "
                         "changed inputs, the data and weights), or use another --out")  # fmt: skip
        refuse_strays(out, [run for checked in read.values() for run in checked], list(read), args.tasks, settings,
                      args.seeds)  # fmt: skip
        if args.goals is not None:
            check_goals_folder(args.goals, args.root)
        build_testbed(args.root, args.tasks)
    except VispromptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ok = True
    if not args.no_run:
        started = time.perf_counter()
        try:
            result = run_sweep(runs, out_dir=out, num_cpus=args.num_cpus, on_progress=ProgressDisplay())
        except VispromptError as exc:  # e.g. another sweep writes to --out
            print(f"error: {exc}", file=sys.stderr)
            return 2
        seconds = time.perf_counter() - started
        print(f"\n{len(runs)} runs in {seconds:.0f} s ({len(result.failed)} failed)", file=sys.stderr)
        ok = result.ok

    try:  # two runs of one seed, written to --out since the check above (by another sweep)
        text = ablation_tables(out, args.variants, args.tasks, settings, args.seeds)
        if pairs:
            text += "\n" + paired_table(out, pairs, args.tasks, settings, args.seeds)
        for key in args.stats:
            text += "\n" + last_epoch_table(out, key, args.variants, args.tasks, settings, args.seeds)
        if args.goals is not None:
            text += "\n" + goals_summaries(out, args.goals, args.variants, args.tasks, settings, args.seeds)
    except VispromptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(text)
    if args.table is not None:
        args.table.write_text(text)
    return 0 if ok else 1


def variant_runs(
    out: Path, name: str, root: str, epochs: int, tasks: list[str], settings: list[tuple[str, float]], seeds: list[int]
) -> list[SweepRun]:
    """The runs of variant ``name`` under ``out / name``: every task x setting x seed, on the benchmark's protocol
    (:data:`GRID`'s base: tiny CLIP, 16 shots)."""
    base = {
        **load_sweep(GRID).base,
        "method": "visprompt",
        "data.root": str(Path(root).resolve()),
        "optim.epochs": epochs,
        **dict(parse_override(item) for item in VARIANTS[name][1]),
    }
    grids = tuple({"dataset": tasks, "noise.type": [noise], "noise.rate": [rate], "run.seed": seeds}
                  for noise, rate in settings)  # fmt: skip
    return expand_sweep(SweepSpec(name, out / name, base, (), grids))


def check_goals_folder(folder: Path, root: str) -> None:
    """Refuse (:class:`ConfigError`) a ``--goals`` folder holding a run that the benchmark grid does not name, or a
    finished run of another method than ``visprompt-plus`` (whose runs the variants replace) whose saved config
    differs from what the grid gives it now: the goal summaries compare against every such run of the folder."""
    from testbed_robustness import unnamed_runs

    runs = expand_sweep(load_sweep(GRID, out_dir=folder, overrides=[f"data.root={Path(root).resolve()}"]))
    extra = unnamed_runs(runs, collect_runs(folder))
    if extra:
        raise ConfigError(
            f"--goals {folder}: {len(extra)} runs that the grid {GRID.relative_to(ROOT)} does not name, e.g. "
            f"{extra[0].name}; the goal summaries would compare against them: move them out"
        )
    others = [run for run in runs if run.config.method.name != "visprompt-plus"]
    refuse_stale(others, f"--goals {folder}", "pass the --root they were made with, or re-run them")


def refuse_strays(
    out: Path, runs: list[SweepRun], variants: list[str], tasks: list[str], settings: list[tuple[str, float]],
    seeds: list[int],
) -> None:  # fmt: skip
    """Refuse (:class:`ConfigError`) a run under ``out / VARIANT`` of the tables' tasks, settings and seeds that
    ``runs`` do not name (a leftover at another path, such as ``asym-0`` beside ``sym-0``): the tables would read it
    for its seed, unchecked. Runs of other tasks, settings or seeds (another study in the same ``--out``) are not
    read, and may stay."""
    from testbed_robustness import unnamed_runs

    wanted = set(_as_recorded(settings))
    read = [r for v in variants for r in collect_runs(out / v) if _in_design(r, tasks, wanted, seeds)]
    extra = unnamed_runs(runs, read)
    if extra:
        raise ConfigError(
            f"--out {out}: {len(extra)} runs of the tables' tasks, settings and seeds at a path their variant's grid "
            f"does not name, e.g. {extra[0].path.relative_to(out)}; move them out (each would stand for its seed)"
        )


def finished_runs(
    out: Path, variants: list[str], tasks: list[str], settings: list[tuple[str, float]], seeds: list[int]
) -> dict[tuple[str, str, str, float, int], RunRecord]:
    """Every finished run with a top-1 of ``variants`` x ``tasks`` x ``settings`` x ``seeds`` under ``out`` (one
    folder per variant): (variant, task, noise type, rate, seed) -> its record.

    Two such runs with one key are a :class:`DataError`: which of them is the seed's run is not for a table to
    pick (the later one would replace the other without a word)."""
    wanted = set(_as_recorded(settings))
    runs: dict[tuple[str, str, str, float, int], RunRecord] = {}
    for variant in variants:
        for record in collect_runs(out / variant):
            if not (record.finished and metric_value(record.metrics, "top1") is not None and
                    _in_design(record, tasks, wanted, seeds)):  # fmt: skip
                continue
            key = (variant, record.dataset, *record.noise, record.seed)
            if key in runs:
                raise DataError(
                    f"runs {runs[key].path} and {record.path} are both {variant} on {record.dataset}, "
                    f"{setting_label(*record.noise)}, seed {record.seed}: remove one (a seed counts once)"
                )
            runs[key] = record
    return runs


def last_epoch_table(
    out: Path, key: str, variants: list[str], tasks: list[str], settings: list[tuple[str, float]], seeds: list[int]
) -> str:
    """Each variant's last-epoch log value ``key`` per setting: mean [min, max] over tasks x seeds."""
    runs = finished_runs(out, variants, tasks, settings, seeds)
    last = {k: r.epochs[-1][key] for k, r in runs.items() if r.epochs and key in r.epochs[-1]}
    settings = _as_recorded(settings)
    lines = [
        f"Last-epoch `{key}`: mean [min, max] over tasks x seeds ('-': not logged or not every run finished).",
        "",
        "| variant | " + " | ".join(setting_label(noise, rate) for noise, rate in settings) + " |",
        "|---|" + "---:|" * len(settings),
    ]
    for variant in variants:
        cells = []
        for noise, rate in settings:
            values = [last.get((variant, t, noise, rate, s)) for t in tasks for s in seeds]
            ok = values and all(v is not None for v in values)
            cells.append(f"{statistics.fmean(values):.2f} [{min(values):.2f}, {max(values):.2f}]" if ok else "-")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def paired_table(
    out: Path, pairs: list[tuple[str, str]], tasks: list[str], settings: list[tuple[str, float]], seeds: list[int]
) -> str:
    """Paired differences A - B (same task, seed, noisy labels) per setting and pooled over all settings.

    A cell whose pairs include runs computed in two different environments says how many: such a difference holds
    the environment's rounding too, which is not part of what "A - B" names."""
    runs = finished_runs(out, list(dict.fromkeys(v for pair in pairs for v in pair)), tasks, settings, seeds)
    settings = _as_recorded(settings)
    cols = [setting_label(noise, rate) for noise, rate in settings]
    lines = [
        "Paired differences in top-1 points, A - B over tasks x seeds: mean [95% t-interval] and pairs won by A.",
        "",
        "| A - B | " + " | ".join(cols) + " | all settings |",
        "|---|" + "---:|" * (len(cols) + 1),
    ]
    crossing = 0
    for a, b in pairs:
        cells, pooled, pooled_crossing = [], [], 0
        for noise, rate in settings:
            both = [
                (runs[(a, t, noise, rate, s)], runs[(b, t, noise, rate, s)])
                for t in tasks
                for s in seeds
                if (a, t, noise, rate, s) in runs and (b, t, noise, rate, s) in runs
            ]
            diffs = [metric_value(ra.metrics, "top1") - metric_value(rb.metrics, "top1") for ra, rb in both]
            mixed = sum(crosses_environments(ra, rb) for ra, rb in both)
            pooled += diffs
            pooled_crossing += mixed
            cells.append(_paired_cell(diffs, mixed))
        crossing += pooled_crossing
        lines.append(f"| {a} - {b} | " + " | ".join(cells) + f" | {_paired_cell(pooled, pooled_crossing)} |")
    if crossing:
        lines += [
            "",
            across_environments_note(crossing) + " Re-run both sides in one environment for a clean comparison.",
        ]
    return "\n".join(lines) + "\n"


def goals_summaries(
    out: Path, grid: Path, variants: list[str], tasks: list[str], settings: list[tuple[str, float]], seeds: list[int]
) -> str:
    """Each ``visprompt-plus`` variant in place of the grid's ``visprompt-plus``: the goal summary of
    :func:`testbed_robustness.goals_table` over the chosen tasks, settings and seeds."""
    from testbed_robustness import goals_table

    wanted = set(_as_recorded(settings))

    def keep(r: RunRecord) -> bool:
        return r.finished and _in_design(r, tasks, wanted, seeds)

    others = [r for r in collect_runs(grid) if keep(r) and r.method != "visprompt-plus"]
    lines = [f"Goal summaries against the runs in {grid} ({len(tasks)} tasks x {len(wanted)} settings x seeds "
             f"{', '.join(map(str, seeds))}):", ""]  # fmt: skip
    for name in variants:
        mine = [r for r in collect_runs(out / name) if keep(r) and r.method == "visprompt-plus"]
        if not mine:
            continue
        table = goals_table(others + mine)
        lines += [f"{name}:", *[line for line in table.splitlines() if line.startswith("- ")], ""]
    return "\n".join(lines)


def _paired_cell(diffs: list[float], across_environments: int = 0) -> str:
    if not diffs:
        return "-"
    mixed = f" ({across_environments} across environments)" if across_environments else ""
    return paired(diffs).cell() + mixed


def ablation_tables(
    out: Path, variants: list[str], tasks: list[str], settings: list[tuple[str, float]], seeds: list[int]
) -> str:
    """The Markdown tables of the finished runs under ``out`` (one folder per variant), then the environments they
    were computed in (the defaults' runs that a bracket pairs with included).

    A bracket whose pairs include runs computed in two different environments says how many."""
    runs = finished_runs(out, list(dict.fromkeys([*variants, "defaults"])), tasks, settings, seeds)
    top1 = {key: metric_value(record.metrics, "top1") for key, record in runs.items()}
    settings = _as_recorded(settings)
    cols = [setting_label(noise, rate) for noise, rate in settings]
    lines = [
        f"Mean top-1 % over {len(tasks)} tasks x {len(seeds)} seeds; in brackets the paired difference to the "
        "defaults (same task, seed and noisy labels) and the pairs won.",
        "",
        "| variant | what changes | " + " | ".join(cols) + " |",
        "|---|---|" + "---:|" * len(cols),
    ]
    paired_with: set[tuple[str, str, str, float, int]] = set()  # the defaults' runs in a bracket
    crossing = 0
    for variant in variants:
        cells = []
        for noise, rate in settings:
            keys = [(t, noise, rate, s) for t in tasks for s in seeds]
            mine = [top1.get((variant, *k)) for k in keys]
            if any(v is None for v in mine):
                cells.append(f"{sum(v is not None for v in mine)}/{len(keys)} runs")
                continue
            cell = f"{statistics.fmean(mine):.1f}"
            base = [top1.get(("defaults", *k)) for k in keys]
            if variant != "defaults" and all(v is not None for v in base):
                diffs = [a - b for a, b in zip(mine, base, strict=True)]
                mixed = sum(crosses_environments(runs[(variant, *k)], runs[("defaults", *k)]) for k in keys)
                paired_with.update(("defaults", *k) for k in keys)
                crossing += mixed
                cell += f" ({statistics.fmean(diffs):+.1f}, {sum(d > 0 for d in diffs)}/{len(diffs)}"
                cell += f", {mixed} across environments)" if mixed else ")"
            cells.append(cell)
        lines.append(f"| {variant} | {VARIANTS[variant][0]} | " + " | ".join(cells) + " |")
    if crossing:
        lines += ["", across_environments_note(crossing)]
    header = [f"{t.removeprefix('testbed-')} {c}" for t in tasks for c in cols]
    rows, partial = [], False
    for variant in variants:
        cells = []
        for task in tasks:
            for noise, rate in settings:
                values = [top1[k] for s in seeds if (k := (variant, task, noise, rate, s)) in top1]
                cell = f"{statistics.fmean(values):.1f}" if values else "-"
                cell += f" +- {statistics.stdev(values):.1f}" if len(values) > 1 else ""  # no spread from one seed
                if values and len(values) < len(seeds):  # a mean over the seeds that finished: says how many
                    cell += f" ({len(values)}/{len(seeds)} runs)"
                    partial = True
                cells.append(cell)
        rows.append(f"| {variant} | " + " | ".join(cells) + " |")
    note = " (k/n runs: the mean of the k seeds that finished)" if partial else ""
    lines += ["", f"Per task, mean +- std over seeds{note}:", ""]
    lines += ["| variant | " + " | ".join(header) + " |", "|---|" + "---:|" * len(header), *rows]
    shown = {k for v in variants for t in tasks for n, r in settings for s in seeds if (k := (v, t, n, r, s)) in runs}
    lines += environment_lines([runs[k] for k in sorted(shown | paired_with)])
    return "\n".join(lines) + "\n"


def _settings(texts: list[str]) -> list[tuple[str, float]]:
    """``--settings``: each TYPE:RATE; one setting given twice (``sym:0`` and ``asym:0`` are both the clean one) is
    refused, as its runs would be two runs of each seed."""
    settings = [_setting(text) for text in texts]
    twice = [s for s, n in Counter(_as_recorded(settings)).items() if n > 1]
    if twice:
        why = " (a rate of 0 is the clean setting whatever the type)" if twice[0][0] == CLEAN else ""
        raise ConfigError(f"--settings {' '.join(texts)}: {setting_label(*twice[0])} given twice{why}; give each "
                          "setting once")  # fmt: skip
    return settings


def _setting(text: str) -> tuple[str, float]:
    noise, _, rate = text.partition(":")
    try:
        return noise, float(rate)
    except ValueError:
        raise ConfigError(f"--settings: expected TYPE:RATE such as sym:0.5, got {text!r}") from None


def _as_recorded(settings: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """``settings`` as :attr:`RunRecord.noise` gives them: a rate of 0 is the clean setting."""
    return [(CLEAN, 0.0) if rate == 0 else (noise, rate) for noise, rate in settings]


def _in_design(record: RunRecord, tasks: list[str], settings: set[tuple[str, float]], seeds: list[int]) -> bool:
    return record.dataset in tasks and record.noise in settings and record.seed in seeds


def _pair(text: str, variants: list[str]) -> tuple[str, str]:
    """``A:B`` of ``--compare``; both among ``--variants``, the runs checked against their configs."""
    a, sep, b = text.partition(":")
    if not sep or not a or not b:
        raise ConfigError(f"--compare: expected A:B such as alpha-0.8:defaults, got {text!r}")
    missing = [name for name in (a, b) if name not in variants]
    if missing:
        raise ConfigError(f"--compare {text}: {', '.join(missing)} not in --variants (add it, so its runs are checked)")
    return a, b


if __name__ == "__main__":
    sys.exit(main())
