"""Property tests of the OT split on random problems: marginals, invariants of the split, class symmetry."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from visprompt.selection import ot_split, sinkhorn_log

problems = st.tuples(
    st.integers(2, 40),  # N
    st.integers(2, 12),  # C
    st.floats(0.5, 8.0),  # logit scale: from diffuse to confident models
    st.integers(0, 2**31 - 1),  # seed
)


def _draw(n: int, c: int, scale: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    probs = (scale * torch.randn(n, c, generator=g, dtype=torch.float64)).softmax(1)  # (N, C)
    return probs, torch.randint(0, c, (n,), generator=g)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(problems, st.sampled_from(["neglogp", "negp"]))
def test_plan_meets_both_marginals(problem: tuple[int, int, float, int], cost: str) -> None:
    probs, _ = _draw(*problem)
    n, c = probs.shape
    matrix = -probs.log() if cost == "neglogp" else -probs
    plan, stats = sinkhorn_log(matrix, tol=1e-9)
    assert stats.converged and torch.isfinite(plan).all() and (plan >= 0).all()
    torch.testing.assert_close(plan.sum(1), torch.full((n,), 1 / n, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(plan.sum(0), torch.full((c,), 1 / c, dtype=torch.float64), atol=1e-9, rtol=0)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(problems, st.floats(0.0, 1.0))
def test_split_invariants(problem: tuple[int, int, float, int], budget: float) -> None:
    probs, labels = _draw(*problem)
    n = len(labels)
    result = ot_split(probs, labels, budget=budget)
    assert result.stats["converged"]
    assert not (result.clean & (result.pseudo_labels != labels)).any()  # clean => pseudo-label agrees
    assert result.num_clean <= math.floor(budget * n)
    assert ((result.confidence >= 0) & (result.confidence <= 1 + 1e-6)).all()
    assert result.stats["num_clean"] == result.num_clean and result.stats["n"] == n
    if budget == 1.0:
        assert torch.equal(result.clean, result.pseudo_labels == labels)


@settings(max_examples=10, deadline=None, derandomize=True)
@given(problems)
def test_renaming_classes_renames_pseudo_labels(problem: tuple[int, int, float, int]) -> None:
    probs, labels = _draw(*problem)
    c = probs.shape[1]
    perm = torch.randperm(c, generator=torch.Generator().manual_seed(problem[3] % 1000))  # new name of class k
    renamed = torch.empty_like(probs)
    renamed[:, perm] = probs  # (N, C)  column k moves to perm[k]
    a, b = ot_split(probs, labels), ot_split(renamed, perm[labels])
    assert torch.equal(perm[a.pseudo_labels], b.pseudo_labels)
    assert torch.equal(a.clean, b.clean)
    torch.testing.assert_close(a.confidence, b.confidence, atol=1e-5, rtol=0)
