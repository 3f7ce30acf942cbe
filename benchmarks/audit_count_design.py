"""How the audit's estimate of the number of label errors was chosen: candidate estimators on the design seed.

For each testbed task x noise (sym / asym / instance) x rate (10 / 20 / 40%) at one seed (default 1, the design
seed; the held-out seeds 2-4 are for ``benchmarks/audit.py``), the audit's two cross-fitted heads are computed
once (round 1 on every given label, round 2 on the samples round 1 kept; the same functions
``audit_scores`` uses), with a 5-fold out-of-fold logistic regression (cleanlab's recipe) and zero-shot CLIP
probabilities beside them. Every candidate count is then a cheap function of these arrays:

* ``flagged``: samples whose suggested label (argmax of the round-2 mix of head and OT rows) differs from the
  given one (the count the audit reported before);
* ``posterior sum``: sum over samples of 1 - the round-2 mix's probability of the given label;
* ``cleanlab``: ``num_label_issues`` on the logistic regression's probabilities (default and calibrated);
* ``EM (prior)``: :func:`visprompt.audit.estimate_error_count` (maximum-likelihood class-conditional transition
  matrix; expected number of wrong labels under its posterior) with the named prior over the true class:
  round 1's head ``h1`` (the chosen one), round 2's head ``h2``, the logistic regression, ``h1`` at other
  temperatures (``h1^a``, renormalised), ``h1`` times zero-shot probabilities to a power, ``h1`` after
  undoing the fitted transition once (``deconvolved``);
* ``tail ratio``: a mixture-proportion estimate: the share of samples scoring above t divided by the share of
  synthetic wrong labels (every other class of every sample) scoring above t, t = 0.9.

Prints one table: estimate / true per setting, then per candidate the mean abs(ratio - 1), the worst ratio and
how many settings are within 20%.

    OMP_NUM_THREADS=1 nice python benchmarks/audit_count_design.py --root DATA --out /tmp/audit-bench
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from audit import NOISES, RATES, TASKS, _lr, _softmax, noisy_labels, task_features

from visprompt.audit import estimate_error_count
from visprompt.audit.score import _ot_rows, crossfit_probs


def arrays(d: dict, labels: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Round 1 and 2 heads and OT rows as ``audit_scores`` computes them, LR out-of-fold and zero-shot probs."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    c = int(d["text"].shape[0])
    x = F.normalize(torch.as_tensor(d["features"], dtype=torch.float32), dim=-1)
    y = torch.as_tensor(labels)
    text = F.normalize(torch.as_tensor(d["text"], dtype=torch.float32), dim=-1)
    counts = torch.bincount(y, minlength=c).double()
    mass = (counts + 1e-3) / (counts + 1e-3).sum()
    out, keep = {}, None
    for r in range(2):
        q = crossfit_probs(x, y, c, text, folds=5, seed=r, train_mask=keep)
        pi = _ot_rows(q, mass, 1.0)
        keep = (0.5 * (q + pi)).argmax(-1) == y
        out[f"h{r + 1}"], out[f"pi{r + 1}"] = q.numpy().astype(np.float64), pi.numpy().astype(np.float64)
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    out["lr"] = cross_val_predict(_lr(), d["features"], labels, cv=folds, method="predict_proba")
    out["zs"] = _softmax(float(d["zs_scale"]) * (x @ text.T).numpy())
    return out


def _norm(p: np.ndarray) -> np.ndarray:
    return p / p.sum(axis=1, keepdims=True)


def _em(p: np.ndarray, y: np.ndarray) -> float:
    return estimate_error_count(p, y)[0]


def _deconvolved(p: np.ndarray, y: np.ndarray) -> float:
    _, t, _ = estimate_error_count(p, y)
    return _em(_norm(np.clip(p @ np.linalg.inv(t), 1e-6, None)), y)


def _tail_ratio(mix: np.ndarray, y: np.ndarray, t: float = 0.9) -> float:
    n, c = mix.shape
    observed = (1 - mix[np.arange(n), y] > t).mean()
    other = np.ones_like(mix, dtype=bool)
    other[np.arange(n), y] = False
    synthetic = ((1 - mix > t) & other).sum() / (n * (c - 1))
    return float(observed / max(synthetic, 1e-9) * n)


def candidates(a: dict[str, np.ndarray], y: np.ndarray) -> dict[str, float]:
    from cleanlab.count import num_label_issues

    n = len(y)
    mix = 0.5 * (a["h2"] + a["pi2"])
    h1 = np.clip(a["h1"], 1e-12, None)
    return {
        "flagged": float((mix.argmax(1) != y).sum()),
        "posterior sum": float((1 - mix[np.arange(n), y]).sum()),
        "cleanlab": float(num_label_issues(y, a["lr"])),
        "cleanlab calibrated": float(num_label_issues(y, a["lr"], estimation_method="off_diagonal_calibrated")),
        "tail ratio": _tail_ratio(mix, y),
        "EM (h1, chosen)": _em(a["h1"], y),
        "EM (h2)": _em(a["h2"], y),
        "EM (LR)": _em(a["lr"], y),
        "EM (h1^0.75)": _em(_norm(h1**0.75), y),
        "EM (h1^1.5)": _em(_norm(h1**1.5), y),
        "EM (h1 zs^0.25)": _em(_norm(h1 * a["zs"] ** 0.25), y),
        "EM (h1 deconvolved)": _deconvolved(a["h1"], y),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("DATA"))
    parser.add_argument("--out", type=Path, required=True, help="folder of the features cache (benchmarks/audit.py)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    ratios: dict[str, list[float]] = {}
    lines = []
    for task in args.tasks:
        d = task_features(task, args.root, args.out / "features")
        for noise in NOISES:
            for rate in RATES:
                y = noisy_labels(task, args.root, noise, rate, args.seed, d["features"])
                true = int((y != d["labels"]).sum())
                est = candidates(arrays(d, y, args.seed), y)
                for k, v in est.items():
                    ratios.setdefault(k, []).append(v / true)
                lines.append(
                    f"| {task} | {noise} {rate:.0%} | {true} | "
                    + " | ".join(f"{v / true:.2f}" for v in est.values())
                    + " |"
                )
                print(lines[-1], file=sys.stderr, flush=True)
    names = list(ratios)
    print(f"Estimate / true number of label errors, seed {args.seed}\n")
    print("| task | noise | true | " + " | ".join(names) + " |")
    print("|---|---|---:|" + "---:|" * len(names))
    print("\n".join(lines))
    print("\n| candidate | mean abs(ratio - 1) | lowest | highest | within 20% |\n|---|---:|---:|---:|---:|")
    for k, v in ratios.items():
        a = np.array(v)
        print(f"| {k} | {np.mean(np.abs(a - 1)):.2f} | {a.min():.2f} | {a.max():.2f} | "
              f"{int((np.abs(a - 1) <= 0.2 + 1e-9).sum())} / {len(a)} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
