"""The Sinkhorn solver and the OT split: parity with POT, marginals, honest statistics, planted clean sets."""

from __future__ import annotations

import math
import warnings

import numpy as np
import ot
import pytest
import torch

from visprompt.selection import ConvergenceWarning, ot_split, sinkhorn_log


def _random_problem(n: int, c: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    cost = torch.rand(n, c, generator=g, dtype=torch.float64)
    a = torch.rand(n, generator=g, dtype=torch.float64) + 0.1
    b = torch.rand(c, generator=g, dtype=torch.float64) + 0.1
    return cost, a / a.sum(), b / b.sum()


def _probs(n: int, c: int, seed: int, gap: float = 3.0, sigma: float = 1.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax of Gaussian logits with a margin on a random true class: (N, C) probs, (N,) true classes.

    At eps = 0.01 the conditioning of the OT problem varies wildly with the draw (a near-disconnected plan
    converges at a rate of 1 - 1e-6 per sweep); gap=1, sigma=0.05 gives problems POT solves to 1e-13 in ~1000.
    """
    g = torch.Generator().manual_seed(seed)
    true = torch.randint(0, c, (n,), generator=g)
    logits = sigma * torch.randn(n, c, generator=g, dtype=torch.float64)
    logits[torch.arange(n), true] += gap
    return logits.softmax(dim=1), true


def _marginal_error(plan: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> float:
    return max(float((plan.sum(1) - a).abs().sum()), float((plan.sum(0) - b).abs().sum()))


@pytest.mark.parametrize("eps_scaling", [True, False])
@pytest.mark.parametrize(("n", "c", "eps", "seed"), [(40, 7, 0.1, 0), (60, 12, 0.05, 1), (25, 30, 0.02, 2)])
def test_matches_pot_sinkhorn_log(n: int, c: int, eps: float, seed: int, eps_scaling: bool) -> None:
    cost, a, b = _random_problem(n, c, seed)
    plan, stats = sinkhorn_log(cost, a, b, eps, tol=1e-13, max_iter=200_000, eps_scaling=eps_scaling)
    reference = ot.bregman.sinkhorn_log(a.numpy(), b.numpy(), cost.numpy(), eps, numItermax=200_000, stopThr=1e-14)
    assert stats.converged
    assert plan.dtype == torch.float64 and plan.shape == (n, c)
    np.testing.assert_allclose(plan.numpy(), reference, rtol=0, atol=1e-8)
    assert float((plan - torch.from_numpy(reference)).abs().max()) < 1e-11  # in fact much closer


@pytest.mark.parametrize(("n", "c", "seed"), [(40, 8, 0), (48, 10, 3)])
def test_matches_pot_on_neglogp_costs_at_eps_001(n: int, c: int, seed: int) -> None:
    probs, _ = _probs(n, c, seed=seed, gap=1.0, sigma=0.05)
    cost = -probs.log()
    plan, stats = sinkhorn_log(cost, eps=0.01, tol=1e-12, max_iter=20_000)
    a, b = np.full(n, 1 / n), np.full(c, 1 / c)
    reference, log = ot.bregman.sinkhorn_log(a, b, cost.numpy(), 0.01, numItermax=20_000, stopThr=1e-13, log=True)
    assert stats.converged and log["niter"] < 19_999
    np.testing.assert_allclose(plan.numpy(), reference, rtol=0, atol=1e-8)
    assert float((plan - torch.from_numpy(reference)).abs().max()) < 1e-11


def test_statistics_are_those_of_the_returned_plan() -> None:
    cost, a, b = _random_problem(30, 6, seed=4)
    for tol in (1e-3, 1e-6, 1e-10):
        plan, stats = sinkhorn_log(cost, a, b, 0.05, tol=tol)
        assert stats.converged
        assert stats.marginal_error == pytest.approx(_marginal_error(plan, a, b), rel=1e-6, abs=1e-15)
        assert stats.marginal_error <= tol * (1 + 1e-6)
        assert 1 <= stats.iterations <= 20000 and stats.stages >= 1
        assert stats.eps == 0.05 and stats.tol == tol
        keys = {"iterations", "newton_steps", "marginal_error", "converged", "stages", "eps", "tol"}
        assert set(stats.as_dict()) == keys
    # A tighter tolerance takes more work and lands closer to the marginals.
    for max_newton in (0, 50):
        loose = sinkhorn_log(cost, a, b, 0.05, tol=1e-3, max_newton=max_newton)[1]
        tight = sinkhorn_log(cost, a, b, 0.05, tol=1e-10, max_newton=max_newton)[1]
        assert tight.iterations + tight.newton_steps > loose.iterations + loose.newton_steps
        assert tight.marginal_error < loose.marginal_error


def test_non_convergence_warns_and_is_recorded() -> None:
    probs, _ = _probs(200, 50, seed=5)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        plan, stats = sinkhorn_log(-probs.log(), eps=0.01, tol=1e-9, max_iter=30, eps_scaling=False, max_newton=0)
    assert not stats.converged
    assert stats.iterations == 30 and stats.newton_steps == 0
    assert stats.marginal_error > 1e-9
    assert stats.marginal_error == pytest.approx(
        _marginal_error(plan, torch.full((200,), 1 / 200), torch.full((50,), 0.02))
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sinkhorn_log(-probs.log(), eps=0.01, tol=1e-9, max_iter=30, max_newton=0, warn=False)  # silenced
    with pytest.warns(ConvergenceWarning):  # Newton capped too
        stats = sinkhorn_log(-probs.log(), eps=0.01, tol=1e-12, max_iter=30, eps_scaling=False, max_newton=1)[1]
    assert not stats.converged and stats.newton_steps == 1


def test_default_settings_converge_on_the_hard_case() -> None:
    """eps = 0.01 with -log p costs: where plain Sinkhorn crawls (the authors' 1000 iterations are not enough)."""
    for probs in (_probs(256, 100, seed=6)[0], _probs(120, 20, seed=7)[0]):  # the second: 10^5 sweeps reach 1e-6
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no ConvergenceWarning
            _, stats = sinkhorn_log(-probs.log(), tol=1e-10)
        assert stats.converged and stats.marginal_error <= 1e-10
        assert stats.iterations + 50 * stats.newton_steps < 2000  # a Newton step costs ~C sweeps at most
        plain = sinkhorn_log(-probs.log(), tol=1e-6, max_iter=1000, eps_scaling=False, max_newton=0, warn=False)[1]
        assert not plain.converged


def test_accelerations_reach_the_same_plan() -> None:
    """eps-scaling and the Newton finish change the path, not the solution."""
    probs, _ = _probs(64, 8, seed=7, gap=1.0, sigma=0.05)
    plain, ref = sinkhorn_log(-probs.log(), tol=1e-12, max_iter=50_000, eps_scaling=False, max_newton=0)
    assert ref.converged and ref.stages == 1 and ref.newton_steps == 0
    for eps_scaling, max_newton in ((True, 0), (False, 50), (True, 50)):
        plan, stats = sinkhorn_log(-probs.log(), tol=1e-12, eps_scaling=eps_scaling, max_newton=max_newton)
        assert stats.converged and (stats.stages > 1) == eps_scaling
        assert float((plan - plain).abs().max()) < 1e-11
        if max_newton:
            assert stats.newton_steps > 0 and stats.iterations < ref.iterations


@pytest.mark.parametrize(
    ("cost", "a", "b", "match"),
    [
        (torch.tensor([[0.0, float("nan")], [1.0, 0.0]]), None, None, "NaN"),
        (torch.tensor([[0.0, float("inf")], [1.0, 0.0]]), None, None, "NaN or infinite"),
        (torch.zeros(2, 2), torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.4]), "unbalanced masses"),
        (torch.zeros(2, 2), torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0]), "strictly positive"),
        (torch.zeros(2, 3), torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5]), "shapes"),
        (torch.zeros(0, 3), None, None, "non-empty"),
    ],
)
def test_bad_problems_raise(cost: torch.Tensor, a: torch.Tensor | None, b: torch.Tensor | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sinkhorn_log(cost, a, b)


def test_bad_solver_settings_raise() -> None:
    cost = torch.zeros(3, 2)
    for kwargs in ({"eps": 0.0}, {"eps": -1.0}, {"tol": 0.0}, {"max_iter": 0}):
        with pytest.raises(ValueError):
            sinkhorn_log(cost, **kwargs)


def _planted(n_per_class: int = 6, c: int = 5, noise: float = 0.4, seed: int = 0):
    """Probabilities of a model that knows every true class, and noisy labels with a planted noisy set."""
    g = torch.Generator().manual_seed(seed)
    true = torch.arange(c).repeat_interleave(n_per_class)  # balanced classes
    n = true.shape[0]
    noisy = torch.randperm(n, generator=g)[: int(noise * n)]
    labels = true.clone()
    labels[noisy] = (true[noisy] + 1 + torch.randint(0, c - 1, (noisy.shape[0],), generator=g)) % c
    logits = torch.randn(n, c, generator=g)
    logits[torch.arange(n), true] += 4.0
    return logits.softmax(1), labels, true


def test_ot_split_recovers_the_planted_clean_set() -> None:
    probs, labels, true = _planted()
    result = ot_split(probs, labels)
    assert torch.equal(result.pseudo_labels, true)
    assert torch.equal(result.clean, labels == true)
    assert result.stats["converged"] and result.stats["num_clean"] == int((labels == true).sum())
    assert result.stats["clean_fraction"] == pytest.approx(float((labels == true).float().mean()))
    assert result.stats["relabel_fraction"] == pytest.approx(float((labels != true).float().mean()))
    assert result.clean.dtype == torch.bool and result.pseudo_labels.dtype == torch.long
    assert ((result.confidence >= 0) & (result.confidence <= 1 + 1e-6)).all()


def test_class_marginal_corrects_a_biased_model() -> None:
    """A model biased towards class 0 gets most argmaxes wrong; equal class masses undo the bias."""
    probs, labels, true = _planted(n_per_class=8, c=4, noise=0.0, seed=1)
    biased = (probs.log() + torch.tensor([6.0, 0.0, 0.0, 0.0])).softmax(1)  # (N, C)  prior shift to class 0
    assert (biased.argmax(1) == 0).float().mean() > 0.6  # the plain argmax collapses
    result = ot_split(biased, labels)
    assert torch.equal(result.pseudo_labels, true)
    assert torch.bincount(result.pseudo_labels, minlength=4).tolist() == [8, 8, 8, 8]


def test_negp_cost_and_unknown_cost() -> None:
    probs, labels, true = _planted(seed=2)
    result = ot_split(probs, labels, cost="negp", eps=0.01)
    assert result.stats["cost"] == "negp" and result.stats["converged"]
    assert (result.pseudo_labels == true).float().mean() > 0.9
    with pytest.raises(ValueError, match="unknown OT cost"):
        ot_split(probs, labels, cost="kl")  # type: ignore[arg-type]


def test_budget_keeps_the_most_confident_agreeing_samples() -> None:
    probs, labels, _ = _planted(n_per_class=10, c=5, seed=3)
    full = ot_split(probs, labels)
    for budget in (0.0, 0.2, 0.5, 1.0):
        result = ot_split(probs, labels, budget=budget)
        kept = math.floor(budget * len(labels))
        top = torch.argsort(full.confidence, descending=True, stable=True)[:kept]
        expected = torch.zeros_like(full.clean)
        expected[top] = True
        assert torch.equal(result.clean, full.clean & expected)
        assert result.stats["budget"] == budget and result.num_clean <= kept
    assert torch.equal(ot_split(probs, labels, budget=1.0).clean, full.clean)
    with pytest.raises(ValueError, match="budget"):
        ot_split(probs, labels, budget=1.5)


def test_split_is_permutation_equivariant() -> None:
    probs, labels, _ = _planted(seed=4)
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    a, b = ot_split(probs, labels), ot_split(probs[perm], labels[perm])
    assert torch.equal(a.clean[perm], b.clean) and torch.equal(a.pseudo_labels[perm], b.pseudo_labels)
    torch.testing.assert_close(a.confidence[perm], b.confidence, atol=1e-5, rtol=0)


def test_low_precision_probabilities_are_accepted() -> None:
    probs, labels, true = _planted(seed=5)
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        result = ot_split(probs.to(dtype), labels)
        assert torch.equal(result.pseudo_labels, true)
        assert result.confidence.dtype == torch.float32 and result.clean.device == probs.device
    on_cpu = ot_split(probs, labels, device="cpu")
    assert torch.equal(on_cpu.clean, ot_split(probs, labels).clean) and on_cpu.clean.device == probs.device


@pytest.mark.parametrize(
    ("probs", "labels", "match"),
    [
        (torch.randn(6, 3), torch.zeros(6, dtype=torch.long), "probabilities"),  # logits, not probabilities
        (torch.full((6, 3), float("nan")), torch.zeros(6, dtype=torch.long), "NaN"),
        (torch.full((6, 3), 1 / 3), torch.zeros(5, dtype=torch.long), "shape"),
        (torch.full((6, 3), 1 / 3), torch.full((6,), 3), r"\[0, 3\)"),
        (torch.full((6, 3), 1 / 3), torch.zeros(6), "integer"),
    ],
)
def test_ot_split_rejects_bad_inputs(probs: torch.Tensor, labels: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ot_split(probs, labels)
