"""Benchmark: the OT split's solver against POT's ``ot.bregman.sinkhorn_log`` on the same problems.

Problems: N samples (few-shot balanced, N / C per class), C classes, CLIP-like probabilities p = softmax(z) with
z ~ N(0, 1.5^2) plus a margin of 3 on the true class (logit scale 100 times cosine gaps of ~0.03), cost -log p,
uniform marginals, eps = 0.01: the setting of VisPrompt's split. For each N, three solvers:

* ``ours``           ``visprompt.selection.sinkhorn_log`` as the split calls it: stabilised scaling, eps-scaling,
  Newton finish.
* ``ours-sinkhorn``  without the Newton finish (``max_newton=0``).
* ``ours-plain``     without eps-scaling and Newton: POT's iteration, in the exp domain.
* ``pot``         ``ot.bregman.sinkhorn_log`` (log domain; torch backend on the same float64 tensors by default).

Every solver gets the same tolerance and iteration cap. POT stops on the L2 norm of its column error (checked
every 10 sweeps), ours on max(L1 row error, L1 column error); the table reports both plans' errors in our metric
(``err``), whether the tolerance was reached by the solver's own criterion (``conv``), sweeps (``iters``, plus
Newton steps as ``+kN``), the median wall time of ``--repeats``
runs after a warm-up (POT: one run unless ``--pot-repeats``), the time ratio POT / solver, the largest entry-wise
difference from POT's plan and the share of pseudo-labels (row argmax) that agree with POT's.

    PYTHONPATH=src python benchmarks/ot_split.py                  # N = 1600, 16000; C = 100 (a few minutes)
    PYTHONPATH=src python benchmarks/ot_split.py --sizes 256 --skip-pot
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from functools import partial

import ot
import torch

from visprompt.selection import sinkhorn_log


def make_problem(n: int, c: int, seed: int) -> torch.Tensor:
    """(N, C) float64 cost -log p for balanced true classes and CLIP-like logits."""
    g = torch.Generator().manual_seed(seed)
    true = torch.arange(c).repeat(n // c + 1)[:n]  # (N,)  balanced, like a K-shot training set
    logits = 1.5 * torch.randn(n, c, generator=g, dtype=torch.float64)  # (N, C)
    logits[torch.arange(n), true] += 3.0
    return -torch.log_softmax(logits, dim=1)


def marginal_error(plan: torch.Tensor) -> float:
    """max(|Q 1 - 1/N|_1, |Q^T 1 - 1/C|_1): the solver's own stopping metric, applied to any plan."""
    n, c = plan.shape
    return max(float((plan.sum(1) - 1 / n).abs().sum()), float((plan.sum(0) - 1 / c).abs().sum()))


Solved = tuple[torch.Tensor, int | str, bool]  # plan (N, C), sweeps (+ Newton steps), tolerance reached


def timed(fn: Callable[[], Solved], repeats: int, warmup: bool) -> tuple[Solved, float]:
    """The last result of ``repeats`` runs (after an optional warm-up run) and their median wall time."""
    if warmup:
        fn()
    times = []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def solve_ours(cost: torch.Tensor, args: argparse.Namespace, eps_scaling: bool, max_newton: int) -> Solved:
    plan, stats = sinkhorn_log(
        cost,
        eps=args.eps,
        tol=args.tol,
        max_iter=args.max_iter,
        eps_scaling=eps_scaling,
        max_newton=max_newton,
        warn=False,
    )
    sweeps = f"{stats.iterations}+{stats.newton_steps}N" if stats.newton_steps else stats.iterations
    return plan, sweeps, stats.converged


def solve_pot(cost: torch.Tensor, args: argparse.Namespace) -> Solved:
    n, c = cost.shape
    a, b = torch.full((n,), 1.0 / n, dtype=torch.float64), torch.full((c,), 1.0 / c, dtype=torch.float64)
    inputs = (a, b, cost) if args.pot_backend == "torch" else (a.numpy(), b.numpy(), cost.numpy())
    plan, log = ot.bregman.sinkhorn_log(
        *inputs, args.eps, numItermax=args.max_iter, stopThr=args.tol, log=True, warn=False
    )
    return torch.as_tensor(plan), int(log["niter"]) + 1, float(log["err"][-1]) < args.tol


def run(args: argparse.Namespace) -> list[dict[str, object]]:
    rows = []
    for n in args.sizes:
        cost = make_problem(n, args.classes, args.seed)
        results = {
            "ours": timed(partial(solve_ours, cost, args, True, 50), args.repeats, warmup=True),
            "ours-sinkhorn": timed(partial(solve_ours, cost, args, True, 0), args.repeats, warmup=False),
            "ours-plain": timed(partial(solve_ours, cost, args, False, 0), args.repeats, warmup=False),
        }
        if not args.skip_pot:
            results["pot"] = timed(partial(solve_pot, cost, args), args.pot_repeats, warmup=False)
        reference = results.get("pot")
        for name, ((plan, iterations, converged), seconds) in results.items():
            row = {"N": n, "C": args.classes, "solver": name, "iters": iterations, "time_s": seconds}
            row.update({"err": marginal_error(plan), "conv": converged})
            if reference is not None:
                (ref_plan, _, _), ref_seconds = reference
                row["pot/time"] = ref_seconds / seconds
                row["max|dQ|"] = float((plan - ref_plan).abs().max())
                row["argmax=pot"] = float((plan.argmax(1) == ref_plan.argmax(1)).double().mean())
            rows.append(row)
    return rows


def print_table(rows: list[dict[str, object]]) -> None:
    columns = ["N", "C", "solver", "iters", "time_s", "pot/time", "err", "conv", "max|dQ|", "argmax=pot"]
    columns = [c for c in columns if any(c in r for r in rows)]
    fmt = {"time_s": "{:.3f}", "pot/time": "{:.1f}x", "err": "{:.1e}", "max|dQ|": "{:.1e}", "argmax=pot": "{:.4f}"}
    cells = [[fmt.get(c, "{}").format(r[c]) if c in r else "" for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1600, 16000], help="numbers of samples N")
    parser.add_argument("--classes", type=int, default=100, help="number of classes C")
    parser.add_argument("--eps", type=float, default=0.01)
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--max-iter", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of our solver (median reported)")
    parser.add_argument("--pot-repeats", type=int, default=1, help="timed runs of POT (slow)")
    parser.add_argument("--pot-backend", choices=["torch", "numpy"], default="torch")
    parser.add_argument("--skip-pot", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: stable timings)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", UserWarning)
    print(
        f"torch {torch.__version__}, POT {ot.__version__}, threads {torch.get_num_threads()}, eps {args.eps}, "
        f"tol {args.tol}, max_iter {args.max_iter}"
    )
    print_table(run(args))


if __name__ == "__main__":
    main()
