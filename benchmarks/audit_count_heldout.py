"""Round 4 of the audit count's design (docs/audit.md): the pre-registered paired comparison on held-out seeds.

Reads the audit rows that ``benchmarks/audit.py`` wrote (``rows*.jsonl``: the audit's count ``estimated`` with
round 2's count ``estimated_round2`` and the zero-shot vote's ``estimated_vote`` recorded beside it on the same
labels) and prints, per group (the three 10-class tasks; testbed-many) and pooled:

* the paired difference of abs(estimate / true - 1), audit - round 2, its mean and 95% t-interval, and in how
  many settings the audit's count error is lower / equal / higher;
* settings within 20% (ratio in [0.8, 1.2]) and the lowest and highest ratio for the audit's count, round 2's
  count and the vote's count alone;
* the decision by the rule written down before the run: the audit's count (the candidate) ships if the pooled
  interval lies entirely below 0 and neither group's interval lies entirely above 0.

    python benchmarks/audit_count_heldout.py /work/out14/rows.jsonl /work/out14/rows-many.jsonl --seeds 5 6 7

Round 5 (``--baseline round4``): the candidate against round 4's count, which the rows record beside it as
``estimated_round4`` (and round 4's vote as ``estimated_vote_round4``); the same rule with that baseline.

``--breakdown`` prints instead, for the rows given (all detectors), settings within 20% and the lowest-highest
ratio by noise type and by rate for the audit's count, its recorded parts, cleanlab's and the loss ranking's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

KEYS = (("candidate", "estimated"), ("round 2's count", "estimated_round2"), ("vote alone", "estimated_vote"))
# --baseline round4 (round 5's test): the candidate against round 4's count, recorded beside it as estimated_round4
KEYS_ROUND4 = (
    ("candidate", "estimated"),
    ("round 4's count", "estimated_round4"),
    ("round 2's count", "estimated_round2"),
    ("vote alone", "estimated_vote"),
    ("round 4's vote", "estimated_vote_round4"),
)


def load(files: list[Path], seeds: set[int] | None, keys: tuple = KEYS) -> list[dict[str, Any]]:
    """The audit's rows (one per setting; the last row wins when a setting was written twice)."""
    rows: dict[tuple, dict[str, Any]] = {}
    for file in files:
        for line in file.read_text().splitlines():
            if not line.strip():
                continue
            r = json.loads(line)
            if r["detector"] != "audit" or (seeds is not None and r["seed"] not in seeds):
                continue
            rows[(r["task"], r["noise"], r["rate"], r["seed"])] = r
    missing = [k for k, r in rows.items() if any(key not in r for _, key in keys)]
    if missing:
        raise SystemExit(f"rows without {', '.join(key for _, key in keys[1:])}: {missing[:3]}")
    return list(rows.values())


def t_interval(diff: np.ndarray) -> tuple[float, float, float]:
    """Mean and two-sided 95% t-interval of the mean."""
    mean = float(diff.mean())
    half = float(stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff)))
    return mean, mean - half, mean + half


def summarise(rows: list[dict[str, Any]], keys: tuple = KEYS) -> dict[str, Any]:
    """The paired difference is candidate - keys[1] (the baseline)."""
    true = np.array([max(r["true"], 1) for r in rows], dtype=float)
    ratio = {name: np.array([r[key] for r in rows], dtype=float) / true for name, key in keys}
    err = {name: np.abs(a - 1) for name, a in ratio.items()}
    diff = err["candidate"] - err[keys[1][0]]
    mean, lo, hi = t_interval(diff)
    eps = 1e-12
    return {
        "n": len(rows),
        "diff": (mean, lo, hi),
        "lower_equal_higher": (int((diff < -eps).sum()), int((np.abs(diff) <= eps).sum()), int((diff > eps).sum())),
        "within": {name: int((e <= 0.2 + 1e-9).sum()) for name, e in err.items()},
        "range": {name: (float(a.min()), float(a.max())) for name, a in ratio.items()},
        "mean_error": {name: float(e.mean()) for name, e in err.items()},
    }


BREAKDOWN = (
    ("audit", "audit", "estimated"),
    ("audit, round-4 count", "audit", "estimated_round4"),
    ("audit, round-2 count", "audit", "estimated_round2"),
    ("audit, round-4 vote", "audit", "estimated_vote_round4"),
    ("audit, vote alone", "audit", "estimated_vote"),
    ("audit, head only", "audit", "estimated_head_only"),
    ("cleanlab", "cleanlab", "estimated"),
    ("loss", "loss", "estimated"),
)


def breakdown(files: list[Path], seeds: set[int] | None) -> None:
    """Settings within 20% and the lowest-highest ratio by noise type and by rate, per count (every task given)."""
    rows = [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if seeds is None or r["seed"] in seeds]
    cuts = [(name, lambda r, n=n: r["noise"] == n) for name, n in
            (("symmetric", "sym"), ("asymmetric", "asym"), ("instance", "instance"))]  # fmt: skip
    cuts += [(f"{rate:.0%}", lambda r, x=rate: abs(r["rate"] - x) < 1e-9) for rate in (0.1, 0.2, 0.4)]
    cuts += [("all but asymmetric 40%", lambda r: not (r["noise"] == "asym" and abs(r["rate"] - 0.4) < 1e-9)),
             ("all", lambda r: True)]  # fmt: skip
    cols = [(name, det, key) for name, det, key in BREAKDOWN if any(r["detector"] == det and key in r for r in rows)]
    print("\n| | " + " | ".join(c[0] for c in cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for cut, keep in cuts:
        cells = []
        for _, det, key in cols:
            a = np.array([r[key] / max(r["true"], 1) for r in rows if r["detector"] == det and key in r and keep(r)])
            inside = int((np.abs(a - 1) <= 0.2 + 1e-9).sum())
            cells.append(f"{inside} / {len(a)}, {a.min():.2f}-{a.max():.2f}")
        print(f"| {cut} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("rows", type=Path, nargs="+", help="rows*.jsonl files written by benchmarks/audit.py")
    parser.add_argument("--seeds", type=int, nargs="+", help="only these seeds (default: every row)")
    parser.add_argument("--breakdown", action="store_true", help="only the by-noise and by-rate table of every count")
    parser.add_argument("--baseline", choices=("round2", "round4"), default="round2",
                        help="the count the candidate is paired with (round 5's test: round4)")  # fmt: skip
    args = parser.parse_args(argv)
    keys = KEYS_ROUND4 if args.baseline == "round4" else KEYS
    base = keys[1][0]
    if args.breakdown:
        breakdown(args.rows, set(args.seeds) if args.seeds else None)
        return 0
    rows = load(args.rows, set(args.seeds) if args.seeds else None, keys)
    groups = {
        "three tasks": [r for r in rows if r["task"] != "testbed-many"],
        "testbed-many": [r for r in rows if r["task"] == "testbed-many"],
    }
    groups = {k: v for k, v in groups.items() if v}
    groups["pooled"] = rows
    res = {name: summarise(g, keys) for name, g in groups.items()}
    seeds = sorted({r["seed"] for r in rows})
    print(f"Seeds {seeds}; paired count error abs(estimate / true - 1), candidate - {base}.\n")
    print("| settings | candidate: within 20%, range | " + " | ".join(k for k, _ in keys[1:])
          + " | paired difference [95% t-interval]; lower / equal / higher |")  # fmt: skip
    print("|---|" + "---:|" * (len(keys) + 1))
    for name, s in res.items():
        cells = [f"{s['within'][k]} / {s['n']}, {s['range'][k][0]:.2f}-{s['range'][k][1]:.2f}" for k, _ in keys]
        mean, lo, hi = s["diff"]
        low, eq, high = s["lower_equal_higher"]
        print(f"| {name} ({s['n']}) | " + " | ".join(cells) + f" | {mean:+.3f} [{lo:+.3f}, {hi:+.3f}]; "
              f"{low} / {eq} / {high} |")  # fmt: skip
    print("\nMean count error: " + "; ".join(
        f"{name}: " + ", ".join(f"{k} {s['mean_error'][k]:.3f}" for k, _ in keys) for name, s in res.items()
    ))  # fmt: skip
    pooled_below = res["pooled"]["diff"][2] < 0
    group_above = [name for name in res if name != "pooled" and res[name]["diff"][1] > 0]
    ships = pooled_below and not group_above
    print(
        f"\nRule: pooled interval entirely below 0: {pooled_below}; a group's interval entirely above 0: "
        f"{', '.join(group_above) or 'none'}. Decision: {'ship the candidate' if ships else 'keep ' + base}."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
