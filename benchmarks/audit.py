"""Label-audit benchmark: how well each detector finds the wrong labels of the testbed tasks' full training sets.

Every task's training split (all of it: ``shots: all``) gets symmetric, asymmetric or instance-dependent noise
at 10, 20 and 40% from the package's own noise code, for seeds 2-4 (seed 1 was used to design the audit's
score). Detectors, all on the same frozen testbed-CLIP image features:

* ``audit``: :func:`visprompt.audit.audit_scores` (cross-fitted zero-shot-started head, two rounds, OT balancing);
* ``audit-disagree``: the same audit with the earlier flagged rule (every sample whose suggested label differs
  from the given one; their number as the estimate);
* ``audit+visprompt``: the same with a trained VisPrompt run's probabilities multiplied in (what
  ``visprompt audit RUN_DIR`` does), only with ``--visprompt`` (trains one run per setting);
* ``visprompt``: that run's probabilities alone (score 1 - p(given), flagged = argmax != given);
* ``cleanlab``: cleanlab 2.9 ``find_label_issues`` + ``get_label_quality_scores`` on 5-fold out-of-fold
  probabilities of a logistic regression (scikit-learn defaults, max_iter 1000): its documented recipe;
* ``zero-shot``: zero-shot CLIP disagreement (score 1 - p_zs(given), flagged = argmax != given);
* ``loss``: in-sample cross-entropy of a logistic regression fitted on all noisy labels (small-loss ranking;
  flagged = argmax != given).

Metrics per setting: AUROC and AUPRC of the score against "label is wrong", precision and recall of the flagged
set, precision at k = the true number of errors, estimated vs true error count. Each detector's estimate of the
count: the audit's ``estimated_errors`` (EM noise-model estimate); cleanlab's ``num_label_issues`` (its default,
equal to the size of ``find_label_issues``; the ``off_diagonal_calibrated`` variant is kept beside it as
``estimated_calibrated``); the flagged count for the others. The audit's rows also keep the earlier estimates,
round 2's (EM on the head mix alone) as ``estimated_round2`` and round 1's (EM on round 1's head alone) as
``estimated_head_only``, and the zero-shot vote's count as ``estimated_vote``, so that all are compared on the
same labels.

    nice python benchmarks/audit.py --out /work/scratch/audit-bench --root DATA > docs/audit-results.md
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

TASKS = ("testbed-backgrounds", "testbed-colours", "testbed-scenes")
NOISES = ("sym", "asym", "instance")
RATES = (0.1, 0.2, 0.4)
EVAL_SEEDS = (2, 3, 4)
DESIGN_SEEDS = (1,)
DETECTORS = ("audit", "audit-disagree", "audit+visprompt", "visprompt", "cleanlab", "zero-shot", "loss")


# ------------------------------------------------------------------------------------------------ data


def task_features(task: str, root: Path, cache: Path) -> dict[str, Any]:
    """Frozen testbed-CLIP pooled features of the task's whole training split, its clean labels and text features."""
    file = cache / f"{task}-features.npz"
    if file.is_file():
        d = np.load(file, allow_pickle=False)
        return {k: d[k] for k in d.files}
    import torch

    from visprompt.audit.features import zero_shot_embeddings
    from visprompt.data.datasets import load_dataset
    from visprompt.engine.build import image_transform
    from visprompt.engine.data import encode_samples
    from visprompt.engine.runtime import resolve_precision
    from visprompt.testbed import load_testbed_clip

    clip = load_testbed_clip("cpu")
    splits = load_dataset(task, root)
    feats = encode_samples(clip, splits.train, image_transform(clip), batch_size=100, device=torch.device("cpu"),
                           precision=resolve_precision("fp32", torch.device("cpu")), keep_tokens=False)  # fmt: skip
    out = {
        "features": feats.pooled.numpy(),
        "labels": np.array([s.label for s in splits.train]),
        "text": zero_shot_embeddings(clip, splits.classnames, task).numpy(),
        "zs_scale": np.array(float(clip.logit_scale.exp())),
    }
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(file, **out)
    return out


def noisy_labels(task: str, root: Path, noise: str, rate: float, seed: int, features: np.ndarray) -> np.ndarray:
    """Given labels of the training split under ``noise`` at ``rate`` with ``seed`` (the package's noise code)."""
    import visprompt.testbed  # noqa: F401  (registers the testbed tasks)
    from visprompt.config import NoiseSpec
    from visprompt.data.datasets import load_dataset
    from visprompt.data.noise import apply_noise

    splits = load_dataset(task, root)
    noisy = apply_noise(splits.train, splits.classnames, NoiseSpec(type=noise, rate=rate), seed=seed, features=features)
    return np.array([s.label for s in noisy])


# ------------------------------------------------------------------------------------------------ detectors


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _disagreement(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    score = 1.0 - probs[np.arange(len(labels)), labels]
    return score, probs.argmax(axis=1) != labels


def run_audit(d: dict[str, Any], labels: np.ndarray, extra: np.ndarray | None = None) -> Any:
    from visprompt.audit import audit_scores

    return audit_scores(d["features"], labels, int(d["text"].shape[0]), text_features=d["text"], extra_probs=extra,
                        zs_scale=float(d["zs_scale"]))  # fmt: skip


def detect_audit(d: dict[str, Any], labels: np.ndarray, extra: np.ndarray | None = None, r: Any = None) -> tuple:
    """The audit as shipped: its score, its flagged set (top estimate of the disagreements), its estimate."""
    r = run_audit(d, labels, extra) if r is None else r
    counts = {"estimated": r.estimated_errors, "disagreements": r.stats["disagreements"],
              "estimated_head_only": round(r.stats["estimate_head_only"]),
              "estimated_round2": round(r.stats["estimate_round2"])}  # fmt: skip
    if r.stats.get("estimate_vote") is not None:
        counts["estimated_vote"] = round(r.stats["estimate_vote"])
    return r.score, r.flagged, counts


def detect_audit_disagree(r: Any) -> tuple:
    """The same audit with the earlier rule: flagged = every disagreement, estimate = their number."""
    return r.score, r.suggested != r.given


def _lr() -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=1000)


def detect_cleanlab(d: dict[str, Any], labels: np.ndarray, seed: int) -> tuple[Any, ...]:
    from cleanlab.count import num_label_issues
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    probs = cross_val_predict(_lr(), d["features"], labels, cv=folds, method="predict_proba")
    quality = get_label_quality_scores(labels, probs)
    issues = find_label_issues(labels, probs)
    counts = {
        "estimated": int(num_label_issues(labels, probs)),
        "estimated_calibrated": int(num_label_issues(labels, probs, estimation_method="off_diagonal_calibrated")),
    }
    return 1.0 - quality, issues, counts


def detect_zero_shot(d: dict[str, Any], labels: np.ndarray) -> tuple[np.ndarray, ...]:
    x = d["features"] / np.linalg.norm(d["features"], axis=1, keepdims=True)
    t = d["text"] / np.linalg.norm(d["text"], axis=1, keepdims=True)
    return _disagreement(_softmax(float(d["zs_scale"]) * x @ t.T), labels)


def detect_loss(d: dict[str, Any], labels: np.ndarray) -> tuple[np.ndarray, ...]:
    probs = _lr().fit(d["features"], labels).predict_proba(d["features"])
    score = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None))
    return score, probs.argmax(axis=1) != labels


def visprompt_probs(task: str, root: Path, noise: str, rate: float, seed: int, out: Path, epochs: int) -> np.ndarray:
    """Probabilities on its training samples of a VisPrompt run trained on the whole noisy training split."""
    from visprompt.audit.run import run_probabilities
    from visprompt.config import load_config
    from visprompt.engine.runner import train_run

    cfg = load_config(overrides=[
        f"data.dataset={task}", f"data.root={root}", "data.shots=all", "data.augment=false", "backbone.arch=testbed",
        "backbone.weights=null", "method.name=visprompt", f"noise.type={noise}", f"noise.rate={rate}",
        f"run.seed={seed}", f"optim.epochs={epochs}", f"run.out_dir={out}", "run.threads=1",
    ], method="visprompt")  # fmt: skip
    result = train_run(cfg, show_progress=False)
    return run_probabilities(result.run_dir, device="cpu")[1]


# ------------------------------------------------------------------------------------------------ metrics


def metrics(score: np.ndarray, flagged: np.ndarray, wrong: np.ndarray, estimated: int | None = None) -> dict[str, Any]:
    """Ranking and flagged-set metrics; ``estimated``: the detector's count of errors (None: the flagged count)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    k = int(wrong.sum())
    top = np.argsort(-score, kind="stable")[:k]
    hits = int((flagged & wrong).sum())
    return {
        "auroc": float(roc_auc_score(wrong, score)),
        "auprc": float(average_precision_score(wrong, score)),
        "precision": hits / max(int(flagged.sum()), 1),
        "recall": hits / max(k, 1),
        "p@k": float(wrong[top].mean()) if k else float("nan"),
        "flagged": int(flagged.sum()),
        "estimated": int(flagged.sum()) if estimated is None else int(estimated),
        "true": k,
    }


def run_setting(d: dict, task: str, root: Path, noise: str, rate: float, seed: int, args: argparse.Namespace) -> list:
    labels = noisy_labels(task, root, noise, rate, seed, d["features"])
    wrong = labels != d["labels"]
    rows = []
    once: dict[str, Any] = {}

    def audit() -> Any:
        if "r" not in once:
            once["r"] = run_audit(d, labels)
        return once["r"]

    detectors: dict[str, Any] = {
        "audit": lambda: detect_audit(d, labels, r=audit()),
        "audit-disagree": lambda: detect_audit_disagree(audit()),
        "cleanlab": lambda: detect_cleanlab(d, labels, seed),
        "zero-shot": lambda: detect_zero_shot(d, labels),
        "loss": lambda: detect_loss(d, labels),
    }
    if args.visprompt:
        cache: dict[str, np.ndarray] = {}

        def vp() -> np.ndarray:
            if "p" not in cache:
                cache["p"] = visprompt_probs(task, root, noise, rate, seed, args.out / "runs", args.epochs)
            return cache["p"]

        detectors["visprompt"] = lambda: _disagreement(vp(), labels)
        detectors["audit+visprompt"] = lambda: detect_audit(d, labels, extra=vp())
    for name, fn in detectors.items():
        t0 = time.perf_counter()
        score, flagged, *more = fn()
        counts = more[0] if more else {}
        m = metrics(np.asarray(score, dtype=float), np.asarray(flagged, dtype=bool), wrong, counts.get("estimated"))
        rows.append({"task": task, "noise": noise, "rate": rate, "seed": seed, "detector": name,
                     "seconds": time.perf_counter() - t0, **m,
                     **{k: v for k, v in counts.items() if k != "estimated"}})  # fmt: skip
    return rows


# ------------------------------------------------------------------------------------------------ tables


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def _value(row: dict[str, Any], metric: str) -> float:
    return abs(row["estimated"] / max(row["true"], 1) - 1) if metric == "count error" else row[metric]


def _counts(rows: list[dict[str, Any]], key: str = "estimated") -> np.ndarray:
    return np.array([r[key] / max(r["true"], 1) for r in rows if key in r])


def count_tables(rows: list[dict[str, Any]], dets: list[str], settings: list[tuple]) -> list[str]:
    """Estimated / true number of label errors: per detector over all settings, then per task x noise cell."""
    columns = [(d, "estimated") for d in dets]
    if any("estimated_calibrated" in r for r in rows):
        columns.insert(dets.index("cleanlab") + 1, ("cleanlab", "estimated_calibrated"))
    for key in ("estimated_head_only", "estimated_vote", "estimated_round2"):  # the audit's parts and earlier counts
        if any(key in r for r in rows):
            columns.insert(dets.index("audit") + 1, ("audit", key))
    names = {"estimated_calibrated": "calibrated", "estimated_head_only": "round-1 head only",
             "estimated_round2": "round-2 count", "estimated_vote": "zero-shot vote count"}  # fmt: skip

    def name(det: str, key: str) -> str:
        return det if key == "estimated" else f"{det} ({names[key]})"

    out = ["", "## Estimated vs true number of label errors", "",
           "Ratio = estimated / true number of wrong labels per setting (task x noise x rate x seed); within 20% = "
           "ratio in [0.8, 1.2].", "",
           "| detector | settings within 20% | mean abs(ratio - 1) | lowest ratio | highest ratio |",
           "|---|---:|---:|---:|---:|"]  # fmt: skip
    for det, key in columns:
        a = _counts([r for r in rows if r["detector"] == det], key)
        if len(a):
            inside = int((np.abs(a - 1) <= 0.2 + 1e-9).sum())
            out.append(f"| {name(det, key)} | {inside} / {len(a)} | {np.mean(np.abs(a - 1)):.2f} | "
                       f"{a.min():.2f} | {a.max():.2f} |")  # fmt: skip
    rng = np.random.default_rng(0)
    audit = [r for r in rows if r["detector"] == "audit"]
    for key in ("estimated_round2", "estimated_head_only"):
        both = [r for r in audit if key in r]
        if not both:
            continue
        diff = np.array([abs(r["estimated"] / max(r["true"], 1) - 1) - abs(r[key] / max(r["true"], 1) - 1)
                         for r in both])  # fmt: skip
        lo, hi = np.percentile(rng.choice(diff, size=(2000, len(diff))).mean(axis=1), [2.5, 97.5])
        out.append(f"\nPaired, the audit's count against its {names[key]} (abs(ratio - 1), audit - {names[key]}, "
                   f"95% bootstrap interval over {len(diff)} settings): {diff.mean():+.3f} [{lo:+.3f}, {hi:+.3f}]; "
                   f"lower in {int((diff < -1e-9).sum())}, equal in {int((abs(diff) <= 1e-9).sum())}, "
                   f"higher in {int((diff > 1e-9).sum())}.")  # fmt: skip
    out += ["", "Per task x noise cell: mean ratio over seeds [lowest, highest], seeds within 20%.", "",
            "| task | noise | true | " + " | ".join(name(d, k) for d, k in columns) + " |",
            "|---|---|---:|" + "---:|" * len(columns)]  # fmt: skip
    for s in settings:
        cell = [r for r in rows if (r["task"], r["noise"], r["rate"]) == s]
        true = _mean([r["true"] for r in cell if r["detector"] == dets[0]])
        shown = []
        for det, key in columns:
            a = _counts([r for r in cell if r["detector"] == det], key)
            inside = int((np.abs(a - 1) <= 0.2 + 1e-9).sum())
            shown.append(f"{a.mean():.2f} [{a.min():.2f}, {a.max():.2f}] {inside}/{len(a)}" if len(a) else "")
        out.append(f"| {s[0]} | {s[1]} {s[2]:.0%} | {true:.0f} | " + " | ".join(shown) + " |")
    return out


def tables(rows: list[dict[str, Any]]) -> str:
    """Markdown: means per detector, per-setting AUROC / P@k / counts, and paired win counts against cleanlab."""
    dets = [d for d in DETECTORS if any(r["detector"] == d for r in rows)]
    out = ["## Means over every task, noise setting and seed", "",
           "| detector | AUROC | AUPRC | precision | recall | P@k | flagged / true | estimated / true | within 20% |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for det in dets:
        rs = [r for r in rows if r["detector"] == det]
        ratio = _counts(rs)
        flagged = _mean([r.get("flagged", r["estimated"]) / max(r["true"], 1) for r in rs])
        inside = int((np.abs(ratio - 1) <= 0.2 + 1e-9).sum())
        out.append(f"| {det} | {_mean([r['auroc'] for r in rs]):.3f} | {_mean([r['auprc'] for r in rs]):.3f} | "
                   f"{_mean([r['precision'] for r in rs]):.3f} | {_mean([r['recall'] for r in rs]):.3f} | "
                   f"{_mean([r['p@k'] for r in rs]):.3f} | {flagged:.2f} | {ratio.mean():.2f} | "
                   f"{inside} / {len(ratio)} |")  # fmt: skip
    settings = sorted({(r["task"], r["noise"], r["rate"]) for r in rows})
    cell: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        cell[(r["task"], r["noise"], r["rate"])][r["detector"]].append(r)
    for metric, label in (("auroc", "AUROC"), ("p@k", "precision at k (k = true number of errors)")):
        out += ["", f"## {label} per setting (mean over seeds)", "",
                "| task | noise | " + " | ".join(dets) + " |", "|---|---|" + "---:|" * len(dets)]  # fmt: skip
        for s in settings:
            vals = {d: _mean([r[metric] for r in cell[s][d]]) for d in dets}
            best = max(vals.values())
            shown = [f"**{v:.3f}**" if v == best else f"{v:.3f}" for v in vals.values()]
            out.append(f"| {s[0]} | {s[1]} {s[2]:.0%} | " + " | ".join(shown) + " |")
    out += count_tables(rows, dets, settings)
    out += ["", "## Paired comparison with cleanlab (per task x noise x rate x seed)", "",
            "Difference = detector - cleanlab on the same noisy labels; mean with a 95% bootstrap interval over the "
            "paired settings; wins / ties / losses. `count error` = abs(estimated / true - 1): lower is better, so "
            "a win is a negative difference.", "",
            "| detector | metric | mean difference [95% CI] | wins / ties / losses |",
            "|---|---|---:|---:|"]  # fmt: skip
    rng = np.random.default_rng(0)
    keyed = {(r["task"], r["noise"], r["rate"], r["seed"], r["detector"]): r for r in rows}
    for det in dets:
        if det == "cleanlab":
            continue
        for metric in ("auroc", "p@k", "auprc", "count error"):
            diffs = []
            for (t, n, rt, sd, dd), r in keyed.items():
                if dd == det and (t, n, rt, sd, "cleanlab") in keyed:
                    diffs.append(_value(r, metric) - _value(keyed[(t, n, rt, sd, "cleanlab")], metric))
            if not diffs:
                continue
            a = np.array(diffs)
            boot = rng.choice(a, size=(2000, len(a))).mean(axis=1)
            lo, hi = np.percentile(boot, [2.5, 97.5])
            w, ti, lo_n = int((a > 1e-9).sum()), int((abs(a) <= 1e-9).sum()), int((a < -1e-9).sum())
            if metric == "count error":
                w, lo_n = lo_n, w
            out.append(f"| {det} | {metric} | {a.mean():+.3f} [{lo:+.3f}, {hi:+.3f}] | {w} / {ti} / {lo_n} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("DATA"), help="testbed data root (built when missing)")
    parser.add_argument("--out", type=Path, required=True, help="folder for caches, runs and rows.jsonl")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--noises", nargs="+", default=list(NOISES))
    parser.add_argument("--rates", nargs="+", type=float, default=list(RATES))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(EVAL_SEEDS))
    parser.add_argument("--design", action="store_true", help="the design seeds (1) instead of --seeds")
    parser.add_argument("--visprompt", action="store_true", help="also train VisPrompt per setting (slow)")
    parser.add_argument("--epochs", type=int, default=30, help="VisPrompt epochs")
    parser.add_argument("--rows", default="rows", help="rows file stem under --out (parallel jobs: one each)")
    parser.add_argument(
        "--tables-only",
        action="store_true",
        help="print the tables of every rows*.jsonl under --out (for --tasks and the seeds) only",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from visprompt.testbed import build_testbed

    seeds = DESIGN_SEEDS if args.design else tuple(args.seeds)
    prefix = "design-" if args.design else ""
    if args.tables_only:
        files = sorted(args.out.glob(f"{prefix}rows*.jsonl"))
        rows = [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if r["seed"] in seeds and r["task"] in args.tasks]
        unique = {(r["task"], r["noise"], r["rate"], r["seed"], r["detector"]): r for r in rows}
        print(tables(list(unique.values())))
        return 0
    build_testbed(args.root, list(args.tasks))
    rows_file = args.out / f"{prefix}{args.rows}.jsonl"
    args.out.mkdir(parents=True, exist_ok=True)
    done = {json.dumps(k) for k in _done_keys(rows_file)}
    started = time.perf_counter()
    for task in args.tasks:
        d = task_features(task, args.root, args.out / "features")
        for seed in seeds:  # seed outermost: an interrupted benchmark has whole seeds of every setting
            for noise in args.noises:
                for rate in args.rates:
                    key = json.dumps([task, noise, rate, seed])
                    if key in done:
                        continue
                    rows = run_setting(d, task, args.root, noise, rate, seed, args)
                    with open(rows_file, "a") as f:
                        f.write("".join(json.dumps(r) + "\n" for r in rows))
                    print(f"{task} {noise} {rate} seed {seed}: "
                          + ", ".join(f"{r['detector']} {r['auroc']:.3f}/{r['p@k']:.3f}" for r in rows),
                          file=sys.stderr, flush=True)  # fmt: skip
    rows = [json.loads(line) for line in rows_file.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["seed"] in seeds and r["task"] in args.tasks]
    print(f"<!-- {len({(r['task'], r['noise'], r['rate'], r['seed']) for r in rows})} settings; this call took "
          f"{time.perf_counter() - started:.0f} s -->\n")  # fmt: skip
    print(tables(rows))
    return 0


def _done_keys(file: Path) -> set[tuple]:
    if not file.is_file():
        return set()
    keys = set()
    for line in file.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            keys.add((r["task"], r["noise"], r["rate"], r["seed"]))
    return {tuple(k) for k in keys}


if __name__ == "__main__":
    sys.exit(main())
