"""Audit at scale: the whole audit on 100k samples (features fed directly) and the full-set OT at Food-101N's size.

Each measurement runs in a fresh Python process, so its peak resident memory (``ru_maxrss``, the whole process:
torch, the data and the work) belongs to that measurement alone; the table gives wall-clock and CPU seconds and
that peak, with the same measurement at a small reference size in the same run as the ratio's base.

* ``audit``: :func:`visprompt.audit.audit_scores` on N clustered 512-d features, C classes, 20% symmetric noise
  (fabricated: class centres + noise; the AUROC is printed to show the scores still work at that size);
* ``ot``: one entropic OT plan (``visprompt.selection.ot.ot_split``, VisPrompt's cost -log p, eps 0.01) over
  N = 310,009 samples and C = 101 classes (Food-101N's training set), from random Dirichlet probabilities.

    nice python benchmarks/audit_scale.py                 # prints a markdown table
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

CASES = {
    "audit-ref": ("audit", 10_000, 100),
    "audit": ("audit", 100_000, 100),
    "ot-ref": ("ot", 31_001, 101),
    "ot": ("ot", 310_009, 101),
}


def _measure(kind: str, n: int, c: int) -> dict:
    import resource

    import torch

    torch.set_num_threads(int(os.environ.get("AUDIT_SCALE_THREADS", "2")))
    rng = np.random.default_rng(0)
    out: dict = {"kind": kind, "n": n, "c": c}
    if kind == "audit":
        from sklearn.metrics import roc_auc_score

        from visprompt.audit import audit_scores

        centres = rng.normal(size=(c, 512)).astype(np.float32)
        true = rng.integers(0, c, n)
        x = centres[true] + 1.5 * rng.normal(size=(n, 512)).astype(np.float32)
        given = true.copy()
        flip = rng.choice(n, n // 5, replace=False)
        given[flip] = (true[flip] + rng.integers(1, c, flip.size)) % c
        t0, c0 = time.perf_counter(), time.process_time()
        r = audit_scores(x, given, c)
        out.update(wall=time.perf_counter() - t0, cpu=time.process_time() - c0,
                   auroc=float(roc_auc_score(given != true, r.score)), estimated=r.estimated_errors,
                   true=int((given != true).sum()))  # fmt: skip
    else:
        import torch

        from visprompt.selection.ot import ot_split

        probs = torch.from_numpy(rng.dirichlet(np.full(c, 0.1), size=n))
        labels = torch.from_numpy(rng.integers(0, c, n))
        t0, c0 = time.perf_counter(), time.process_time()
        res = ot_split(probs, labels)
        out.update(wall=time.perf_counter() - t0, cpu=time.process_time() - c0, converged=bool(res.converged),
                   iterations=res.iterations)  # fmt: skip
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--one", nargs=3, metavar=("KIND", "N", "C"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(_measure(args.one[0], int(args.one[1]), int(args.one[2]))))
        return 0
    rows = {}
    for name in args.cases:
        kind, n, c = CASES[name]
        proc = subprocess.run([sys.executable, __file__, "--one", kind, str(n), str(c)], capture_output=True,
                              text=True, check=True)  # fmt: skip
        rows[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{name}: {rows[name]}", file=sys.stderr, flush=True)
    load = os.getloadavg()[0]
    print(f"<!-- {os.cpu_count()} CPUs, torch threads {os.environ.get('AUDIT_SCALE_THREADS', '2')}, "
          f"load average at end {load:.1f} -->\n")  # fmt: skip
    print("| case | N | C | wall s | CPU s | peak RSS MiB | ratio of wall to the reference | notes |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name, r in rows.items():
        ref = rows.get(f"{r['kind']}-ref")
        ratio = f"{r['wall'] / ref['wall']:.1f}x" if ref and ref is not r else "1.0x (reference)"
        if r["kind"] == "audit":
            notes = f"AUROC {r['auroc']:.3f}, estimated {r['estimated']} vs true {r['true']} errors"
        else:
            notes = f"{r['iterations']} Sinkhorn sweeps, converged {r['converged']}"
        print(f"| {name} | {r['n']:,} | {r['c']} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['peak_mb']:.0f} | {ratio} "
              f"| {notes} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
