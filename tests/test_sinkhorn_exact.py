"""The Sinkhorn solver's cheaper bookkeeping (buffers, one read-back per sweep) gives bit-identical results.

``reference_stage`` is the stage loop as it was before (kept here as the reference): the solver run with it and
with the library's loop must return the same plan, bit for bit, and the same statistics, on problems that
converge, that stop at ``max_iter`` and that absorb out-of-range scalings (sharp costs at small eps).
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from reference_paths import reference_stage
from visprompt.selection import sinkhorn
from visprompt.selection.ot import _cost


def _problems(full: bool) -> list[tuple[torch.Tensor, float, dict]]:
    g = torch.Generator().manual_seed(15)
    out = []
    shapes = ((16, 10), (16, 50), (2, 2), (3, 7), (160, 10)) if full else ((16, 10), (3, 7))
    for n, c in shapes:
        for temp in (0.3, 3.0, 30.0, 100.0) if full else (3.0, 100.0):
            for cost in ("neglogp", "negp"):
                probs = (torch.randn(n, c, generator=g) * temp).softmax(-1)
                for eps, kwargs in (
                    (0.01, {}),
                    (0.05, {}),
                    (0.01, {"eps_scaling": False, "max_newton": 0, "max_iter": 300}),
                    (0.01, {"max_iter": 37}),
                ):
                    out.append((_cost(probs, cost), eps, kwargs))
    return out


@pytest.mark.parametrize("full", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_solver_matches_the_reference_loop_bit_for_bit(monkeypatch: pytest.MonkeyPatch, full: bool) -> None:
    problems = _problems(full)  # the default suite runs 32 of the 160 problems (a minute on 2 cores for all)
    warnings.simplefilter("ignore")
    new = [sinkhorn.sinkhorn_log(cost, eps=eps, **kw) for cost, eps, kw in problems]
    monkeypatch.setattr(sinkhorn, "_solve_stage", reference_stage)
    ref = [sinkhorn.sinkhorn_log(cost, eps=eps, **kw) for cost, eps, kw in problems]
    unconverged = absorbed = 0
    for (plan, stats), (ref_plan, ref_stats) in zip(new, ref, strict=True):
        assert torch.equal(plan, ref_plan)
        assert stats == ref_stats
        unconverged += not stats.converged
    # the set exercises the paths that matter: runs cut at max_iter, and (sharp costs) absorptions
    assert unconverged > 0
    for cost, eps, _ in problems:
        kernel = torch.exp(-cost / eps)
        absorbed += bool(((kernel > 0) & (kernel < 1e-50)).any())
    assert absorbed > 0


def test_a_budget_of_zero_keeps_the_log_sweep_error() -> None:
    """With no sweep left after the log-domain sweep, the stage reports that sweep's error (not inf)."""
    g = torch.Generator().manual_seed(3)
    cost = _cost((torch.randn(16, 10, generator=g) * 3).softmax(-1), "neglogp")
    a, b = torch.full((16,), 1 / 16, dtype=torch.float64), torch.full((10,), 0.1, dtype=torch.float64)
    args = (-cost / 0.01, a, b, torch.zeros(16, dtype=torch.float64), torch.zeros(10, dtype=torch.float64), 1e-12)
    u, v, sweeps, err = sinkhorn._solve_stage(*args, 1)
    ru, rv, rsweeps, rerr = reference_stage(*args, 1)
    assert sweeps == rsweeps == 1 and math.isfinite(err) and err == rerr
    assert torch.equal(u, ru) and torch.equal(v, rv)
