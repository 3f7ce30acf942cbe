r"""Entropic optimal transport between N samples and C classes, solved in float64 (Sinkhorn, then Newton).

The problem (Cuturi 2013) for a cost :math:`M \in \mathbb{R}^{N \times C}`, masses :math:`a \in \mathbb{R}^N_{>0}`,
:math:`b \in \mathbb{R}^C_{>0}` with :math:`\sum_i a_i = \sum_k b_k`, and a regularisation :math:`\varepsilon > 0`:

.. math::

    Q^\star = \mathop{\arg\min}_{Q \ge 0,\ Q 1_C = a,\ Q^\top 1_N = b}
              \langle Q, M \rangle - \varepsilon H(Q), \qquad H(Q) = -\sum_{ik} Q_{ik} (\log Q_{ik} - 1).

Its solution is :math:`Q^\star_{ik} = \exp((f_i + g_k - M_{ik}) / \varepsilon)` for dual potentials
:math:`f, g`. Sinkhorn alternates the two marginal projections; in log domain, with :math:`u = f/\varepsilon`,
:math:`v = g/\varepsilon` and :math:`\mathrm{lse}` the log-sum-exp,

.. math::

    v_k \leftarrow \log b_k - \mathrm{lse}_i(u_i - M_{ik}/\varepsilon), \qquad
    u_i \leftarrow \log a_i - \mathrm{lse}_k(v_k - M_{ik}/\varepsilon),

which is exactly what POT's ``ot.bregman.sinkhorn_log`` iterates (column update first). After a column update the
column marginal is exact, so the row error of that plan costs nothing extra; we stop when

.. math::

    \mathrm{err} = \max(\lVert Q 1_C - a \rVert_1,\ \lVert Q^\top 1_N - b \rVert_1) \le \mathrm{tol}

and return that plan (one marginal exact, the other within ``tol``; the statistics are measured on it).

Three accelerations, none of which changes the solution:

* **Stabilised scaling** (Schmitzer 2019, "Stabilized sparse scaling algorithms"): after one log-domain sweep the
  current plan :math:`K_{ik} = \exp(u_i + v_k - M_{ik}/\varepsilon)` is stored and the iterations continue in
  the exp domain, :math:`\beta \leftarrow b / K^\top\alpha`, :math:`\alpha \leftarrow a / K\beta`, plan
  :math:`\mathrm{diag}(\alpha) K \mathrm{diag}(\beta)` (two matrix-vector products instead of two log-sum-exps
  over N x C). When a scaling leaves :math:`[10^{-50}, 10^{50}]` or stops being finite it is absorbed into
  :math:`u, v` and the log-domain sweep is redone. Entries of :math:`K` below :math:`e^{-575}` are set to 0
  (they carry at most :math:`10^{-200}` of mass after scaling, and subnormal arithmetic is an order of
  magnitude slower).
* **eps-scaling** (Kosowsky & Yuille 1994; Schmitzer 2019): solve a sequence
  :math:`\varepsilon_0 > \varepsilon_1 > \dots > \varepsilon` (halving from the cost range), warm-starting the
  potentials :math:`f, g` of each stage from the previous one; intermediate stages stop at a loose tolerance.
* **Newton finish** (:mod:`visprompt.selection.newton`): if Sinkhorn has not converged after 20 sweeps at the
  target eps, damped Newton steps on the C class potentials take over (Sinkhorn resumes if they stall). At
  :math:`\varepsilon = 0.01` with :math:`-\log p` costs plain Sinkhorn needs 10^3 to over 10^5 sweeps,
  depending on how close the plan is to block-diagonal; eps-scaling plus a few Newton steps converge in a few
  hundred sweeps' time on every problem we measured (``benchmarks/ot_split.py``).

Shapes: ``cost`` (N, C), ``a`` (N,), ``b`` (C,), plan (N, C). Work is done in float64 on ``cost.device``.

.. warning::
    If the tolerance is not reached within ``max_iter`` sweeps (and ``max_newton`` Newton steps), a
    :class:`ConvergenceWarning` is issued and the returned statistics say ``converged=False``; the plan is then
    the last iterate, not the solution.

References: M. Cuturi, "Sinkhorn distances", NeurIPS 2013. B. Schmitzer, "Stabilized sparse scaling algorithms
for entropy regularized transport problems", SIAM J. Sci. Comput. 2019. J. Feydy et al., "Interpolating between
optimal transport and MMD using Sinkhorn divergences", AISTATS 2019 (log-domain iterations). C. Brauer et al.,
"A Sinkhorn-Newton method for entropic optimal transport", 2017.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import torch

from visprompt.selection.newton import newton_semidual
from visprompt.selection.result import ConvergenceWarning

__all__ = ["SinkhornStats", "sinkhorn_log"]

_ABSORB = 1e50  # scalings outside [1/_ABSORB, _ABSORB] are folded into the log potentials
_LOG_NEGLIGIBLE = -575.0  # plan entries below exp(-575) ~ 1e-250 are set to 0: subnormal arithmetic is ~10x slower
_NEWTON_AFTER = 20  # Sinkhorn sweeps at the target eps before switching to Newton
_STAGE_TOL = 1e-2  # marginal-error tolerance of the intermediate eps-scaling stages
_EPS_DECAY = 0.5  # ratio between consecutive eps-scaling stages
_MASS_RTOL = 1e-8  # relative tolerance on sum(a) == sum(b)


@dataclass(frozen=True)
class SinkhornStats:
    """What the solver did; ``as_dict()`` is JSON-ready for run logs."""

    iterations: int  # Sinkhorn sweeps (one column + one row update), summed over eps stages
    newton_steps: int  # Newton steps on the semi-dual (0 when Sinkhorn converged on its own)
    marginal_error: float  # max(|Q 1 - a|_1, |Q^T 1 - b|_1) of the returned plan
    converged: bool  # marginal_error <= tol was reached at the target eps
    stages: int  # eps-scaling stages run (1 without eps-scaling)
    eps: float  # the target regularisation
    tol: float

    def as_dict(self) -> dict[str, bool | int | float]:
        return asdict(self)


def _check_inputs(cost: torch.Tensor, a: torch.Tensor, b: torch.Tensor, eps: float, tol: float, max_iter: int) -> None:
    if cost.dim() != 2 or cost.shape[0] == 0 or cost.shape[1] == 0:
        raise ValueError(f"cost must be a non-empty (N, C) matrix, got shape {tuple(cost.shape)}")
    if not torch.isfinite(cost).all():
        raise ValueError("cost contains NaN or infinite entries")
    if a.shape != (cost.shape[0],) or b.shape != (cost.shape[1],):
        raise ValueError(
            f"a and b must have shapes ({cost.shape[0]},) and ({cost.shape[1]},), got "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )
    for name, m in (("a", a), ("b", b)):
        if not torch.isfinite(m).all() or (m <= 0).any():
            raise ValueError(f"marginal {name} must be finite and strictly positive")
    mass_a, mass_b = float(a.sum()), float(b.sum())
    if abs(mass_a - mass_b) > _MASS_RTOL * max(mass_a, mass_b):
        raise ValueError(
            f"unbalanced masses: sum(a) = {mass_a!r} but sum(b) = {mass_b!r}; balanced OT needs them equal"
        )
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol!r}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter!r}")


def _row_error(log_rows: torch.Tensor, a: torch.Tensor) -> float:
    """|rows - a|_1 from the log row sums (N,) of the current plan."""
    return float((torch.exp(log_rows) - a).abs().sum())


def _scaling_sweeps(
    kernel: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    tol: float,
    budget: int,
    err: float,
) -> tuple[torch.Tensor, torch.Tensor, int, float, bool]:
    """Exp-domain sweeps on the plan diag(alpha) K diag(beta) from alpha = beta = 1; at most ``budget`` of them.

    Returns ``(u, v, sweeps, err, converged)`` with the last good scalings folded into (u, v); ``err`` is the
    last accepted sweep's error (the one passed in when none was). A sweep is rejected (and the loop left) when
    a new scaling is not finite or leaves [1/_ABSORB, _ABSORB].

    The arithmetic is that of the plain loop ``beta = b / (K^T alpha)``, ``alpha = a / (K beta)``, operation
    for operation; only the bookkeeping is cheaper: the two new scalings are written into one buffer (one
    min/max reduction decides the range check, NaN propagating as out of range) and the error and the range
    are read back in one transfer. The buffers alternate, so the previous sweep's scalings stay valid for
    the error and for a rejected sweep.
    """
    n = a.shape[0]
    kt = kernel.T
    alpha, beta = torch.ones_like(u), torch.ones_like(v)  # Q = diag(alpha) K diag(beta)
    buffers = [torch.empty(n + b.shape[0], dtype=a.dtype, device=a.device) for _ in range(2)]
    views = [(buf, buf[:n], buf[n:]) for buf in buffers]  # (alpha; beta) of a sweep in one vector
    col, row, diff = torch.empty_like(b), torch.empty_like(a), torch.empty_like(a)
    checks = torch.empty(3, dtype=a.dtype, device=a.device)  # error, min and max of the new scalings
    err_out, minmax_out = checks[0], (checks[1], checks[2])
    sweeps, turn = 0, 0
    while sweeps < budget:
        scalings, new_alpha, new_beta = views[turn]
        torch.div(b, torch.mv(kt, alpha, out=col), out=new_beta)  # (C,)  column update
        torch.mv(kernel, new_beta, out=row)  # (N,)  k_beta: row sums are alpha * k_beta
        torch.div(a, row, out=new_alpha)  # (N,)  row update
        torch.aminmax(scalings, out=minmax_out)
        torch.sum(torch.mul(alpha, row, out=diff).sub_(a).abs_(), dim=0, out=err_out)
        err_new, low, high = checks.tolist()
        if not (low > 1 / _ABSORB and high < _ABSORB):  # fold the last good scalings into (u, v)
            break  # and redo an exact log-domain sweep
        sweeps, err, beta = sweeps + 1, err_new, new_beta
        if err <= tol:  # the plan diag(alpha) K diag(beta): columns exact, rows within tol
            return u + alpha.log(), v + beta.log(), sweeps, err, True
        alpha, turn = new_alpha, 1 - turn
    return u + alpha.log(), v + beta.log(), sweeps, err, False


def _solve_stage(
    mr: torch.Tensor, a: torch.Tensor, b: torch.Tensor, u: torch.Tensor, v: torch.Tensor, tol: float, max_iter: int
) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """Sinkhorn at one eps from log potentials (u, v); ``mr = -cost / eps``. Returns (u, v, sweeps, error)."""
    log_a, log_b = a.log(), b.log()
    sweeps, err = 0, math.inf
    while sweeps < max_iter:
        # One exact log-domain sweep: fixes the scale of (u, v) whatever it was.
        v = log_b - torch.logsumexp(mr + u[:, None], dim=0)  # (C,)  columns now exact
        log_rows = torch.logsumexp(mr + v[None, :], dim=1)  # (N,)  row sums of Q(u, v) = lse + u
        sweeps, err = sweeps + 1, _row_error(log_rows + u, a)
        if err <= tol:
            return u, v, sweeps, err
        u = log_a - log_rows  # (N,)  rows now exact
        log_kernel = mr + u[:, None] + v[None, :]  # (N, C)  log of the current plan Q(u, v)
        kernel = torch.exp(log_kernel).masked_fill_(log_kernel < _LOG_NEGLIGIBLE, 0.0)  # no subnormals
        u, v, used, err, done = _scaling_sweeps(kernel, a, b, u, v, tol, max_iter - sweeps, err)
        sweeps += used
        if done:
            return u, v, sweeps, err
    return u, v, sweeps, err


@torch.no_grad()
def sinkhorn_log(
    cost: torch.Tensor,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    eps: float = 0.01,
    tol: float = 1e-6,
    max_iter: int = 20000,
    *,
    eps_scaling: bool = True,
    max_newton: int = 50,
    warn: bool = True,
) -> tuple[torch.Tensor, SinkhornStats]:
    """Entropic OT plan for ``cost`` between masses ``a`` and ``b``, in float64 (see the module docstring).

    Args:
        cost: (N, C) finite cost matrix M.
        a: (N,) positive source masses; uniform 1/N if None.
        b: (C,) positive target masses with the same total as ``a``; uniform 1/C if None.
        eps: entropic regularisation (``reg`` in POT); the plan is a Gibbs kernel exp(-M / eps) rescaled.
        tol: stop when max(|Q 1 - a|_1, |Q^T 1 - b|_1) <= tol. The L1 norm of a sum-one marginal is scale-free in N.
        max_iter: cap on Sinkhorn sweeps, summed over eps-scaling stages.
        eps_scaling: anneal eps from the cost range down to ``eps`` (same solution, far fewer sweeps at small eps).
        max_newton: cap on Newton steps, used when Sinkhorn has not converged after 20 sweeps at ``eps`` (see
            :mod:`visprompt.selection.newton`; a step costs O(N C^2)); 0 gives plain Sinkhorn.
        warn: issue a :class:`ConvergenceWarning` when ``tol`` is not reached.

    Returns:
        ``(plan, stats)``: the (N, C) float64 plan Q on ``cost.device`` and :class:`SinkhornStats`.

    Raises:
        ValueError: NaN/inf costs, non-positive masses, unbalanced masses (``sum(a) != sum(b)``), bad eps/tol.
    """
    n, c = cost.shape if cost.dim() == 2 else (0, 0)
    opts = {"dtype": torch.float64, "device": cost.device}
    a = torch.full((n,), 1.0 / max(n, 1), **opts) if a is None else a.to(**opts)
    b = torch.full((c,), 1.0 / max(c, 1), **opts) if b is None else b.to(**opts)
    _check_inputs(cost, a, b, eps, tol, max_iter)
    cost = cost.to(**opts)

    # eps schedule: eps_0 = cost range (the Gibbs kernel is then well conditioned), halved down to eps.
    schedule = [eps]
    if eps_scaling:
        stage_eps = float(cost.max() - cost.min())
        schedule = []
        while stage_eps > eps:
            schedule.append(stage_eps)
            stage_eps *= _EPS_DECAY
        schedule.append(eps)
        if len(schedule) > max_iter // 2:  # too few sweeps to spend on stages
            schedule = [eps]

    f = torch.zeros(n, **opts)  # dual potentials in cost units: f = eps * u, g = eps * v
    g = torch.zeros(c, **opts)
    sweeps, err = 0, math.inf
    for stage, stage_eps in enumerate(schedule[:-1]):  # intermediate stages: loose tolerance
        budget = max(max_iter - sweeps - (len(schedule) - 1 - stage), 1)
        u, v, used, err = _solve_stage(
            -cost / stage_eps, a, b, f / stage_eps, g / stage_eps, max(tol, _STAGE_TOL), budget
        )
        sweeps, f, g = sweeps + used, stage_eps * u, stage_eps * v

    # Final stage: Sinkhorn; if it has not converged after _NEWTON_AFTER sweeps, Newton; then Sinkhorn again
    # with whatever budget is left if Newton stopped short (rounding floor or max_newton).
    kernel, u, v, newton_steps = -cost / eps, f / eps, g / eps, 0
    first = min(max_iter - sweeps, _NEWTON_AFTER) if max_newton > 0 else max_iter - sweeps
    u, v, used, err = _solve_stage(kernel, a, b, u, v, tol, max(first, 1))
    sweeps += used
    if err > tol and max_newton > 0:
        u, v, newton_steps, err = newton_semidual(kernel, a, b, v, tol, max_newton)
        if err > tol and sweeps < max_iter:
            u, v, used, err = _solve_stage(kernel, a, b, u, v, tol, max_iter - sweeps)
            sweeps += used
    f, g = eps * u, eps * v
    converged = err <= tol

    plan = torch.exp((f[:, None] + g[None, :] - cost) / eps)  # (N, C)
    marginal_error = max(float((plan.sum(1) - a).abs().sum()), float((plan.sum(0) - b).abs().sum()))
    stats = SinkhornStats(sweeps, newton_steps, marginal_error, converged, len(schedule), float(eps), float(tol))
    if not converged and warn:
        warnings.warn(
            f"Sinkhorn did not converge: marginal error {marginal_error:.2e} > tol {tol:.1e} after {sweeps} sweeps "
            f"and {newton_steps} Newton steps (eps={eps}, N={n}, C={c}); increase max_iter or eps",
            ConvergenceWarning,
            stacklevel=3,  # the caller of the no_grad wrapper
        )
    return plan, stats
