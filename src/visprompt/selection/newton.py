r"""Damped Newton on the semi-dual of entropic OT: the finishing step for ill-conditioned problems.

At small :math:`\varepsilon` Sinkhorn can crawl: when the plan is nearly block-diagonal (groups of classes that
exchange almost no mass, common with :math:`-\log p` costs at :math:`\varepsilon = 0.01`) its error shrinks by a
factor :math:`1 - \delta` per sweep with :math:`\delta` as small as :math:`10^{-6}`. The remedy (Brauer et al.
2017, "A Sinkhorn-Newton method for entropic optimal transport") is second order. With rows always exact, the
plan is a function of the C class potentials :math:`v` alone (in units of :math:`\varepsilon`,
:math:`K = -M/\varepsilon`):

.. math::

    Q_{ik}(v) = a_i\, \mathrm{softmax}_k(K_{ik} + v_k), \qquad
    \Phi(v) = \sum_k b_k v_k - \sum_i a_i\, \mathrm{lse}_k(K_{ik} + v_k),

    \nabla \Phi = b - Q^\top 1_N, \qquad
    H = -\nabla^2 \Phi = \mathrm{diag}(c) - Q^\top \mathrm{diag}(1/a)\, Q, \quad c = Q^\top 1_N \quad (C \times C).

:math:`\Phi` is concave (the semi-dual up to constants) and H is positive semi-definite with null vector
:math:`1_C` (shifting every :math:`v_k` changes nothing). The step solves

.. math::

    (H + \mu\, \mathrm{diag}(c) + \lambda 1 1^\top)\, \Delta = \nabla \Phi

(Levenberg-Marquardt). For :math:`\mu \to 0` it is Newton's step; for large :math:`\mu`,
:math:`\Delta_k \approx (b_k - c_k) / (\mu c_k) \approx \log(b_k / c_k) / \mu`, a damped Sinkhorn column update,
which is what directions with almost no curvature (nearly disconnected blocks of the plan) need. :math:`\mu` is
adapted by the ratio of the actual to the predicted increase of :math:`\Phi` (trust-region rule): shrunk after
good steps, grown after poor ones, so that near the solution full Newton steps converge quadratically. One step
costs :math:`O(N C^2)` (forming H) plus a C x C solve: a handful replaces thousands of sweeps.
"""

from __future__ import annotations

import math

import torch

__all__ = ["newton_semidual"]

_MU_START, _MU_MIN, _MU_MAX = 1e-6, 1e-12, 1e10  # damping: first value, floor, give-up ceiling
_ROUNDING = 1e-13  # relative size of Phi's rounding: predicted gains below it are judged by the marginal error


def _evaluate(kernel: torch.Tensor, a: torch.Tensor, b: torch.Tensor, v: torch.Tensor):
    """Row log-normalisers (N,), Phi(v), the row-exact plan (N, C) and its column sums (C,)."""
    lse = torch.logsumexp(kernel + v[None, :], dim=1)  # (N,)
    plan = torch.exp(kernel + v[None, :] + (a.log() - lse)[:, None])  # (N, C)  rows exact
    return lse, float(b @ v - a @ lse), plan, plan.sum(dim=0)


def _solve_spd(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor | None:
    """matrix^-1 rhs by Cholesky; None when the matrix is not numerically positive definite."""
    chol, info = torch.linalg.cholesky_ex(matrix)
    if int(info) != 0:
        return None
    return torch.cholesky_solve(rhs[:, None], chol).squeeze(1)


def newton_semidual(
    kernel: torch.Tensor, a: torch.Tensor, b: torch.Tensor, v: torch.Tensor, tol: float, max_steps: int
) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """Maximise the semi-dual from class potentials ``v`` (C,); ``kernel = -cost / eps`` (N, C), float64.

    Returns ``(u, v, steps, err)``: log potentials of the plan exp(kernel + u + v) (rows exact), the accepted
    steps and the column error |Q^T 1 - b|_1 (the row error is 0 up to rounding). Stops at ``err <= tol``, after
    ``max_steps`` steps, or when no damping gives progress (rounding floor); the caller checks ``err``.
    """
    lse, phi, plan, col = _evaluate(kernel, a, b, v)
    err, steps, mu = float((b - col).abs().sum()), 0, _MU_START
    gauge = float(b.mean()) / b.shape[0]  # lambda: lifts the null vector 1 to the scale of H's spectrum
    while err > tol and steps < max_steps and mu <= _MU_MAX:
        grad = b - col  # (C,)
        scaled = plan / a.sqrt()[:, None]  # (N, C)  scaled^T scaled = Q^T diag(1/a) Q
        hess = torch.diag(col) - scaled.T @ scaled  # (C, C)
        diag = torch.diag(col.clamp_min(torch.finfo(col.dtype).tiny))  # (C, C)  LM metric diag(c)
        while mu <= _MU_MAX:  # find a damping that gives progress
            delta = _solve_spd(hess + mu * diag + gauge, grad)  # (C,)
            if delta is None:  # H's rounding made the system indefinite: damp more
                mu *= 4.0
                continue
            predicted = float(grad @ delta - 0.5 * delta @ (hess @ delta))
            trial = _evaluate(kernel, a, b, v + delta)
            trial_err = float((b - trial[3]).abs().sum())
            if predicted <= _ROUNDING * (abs(phi) + 1.0):  # Phi cannot tell: progress = a smaller error
                good = trial_err < err
                rho = 1.0 if good else 0.0
            else:
                rho = (trial[1] - phi) / predicted
                good = rho > 0.25 and math.isfinite(trial_err)
            if good:
                break
            mu *= 4.0
        else:
            break
        v, (lse, phi, plan, col), err, steps = v + delta, trial, trial_err, steps + 1
        if rho > 0.75:
            mu = max(mu / 4.0, _MU_MIN)
    return a.log() - lse, v, steps, err
