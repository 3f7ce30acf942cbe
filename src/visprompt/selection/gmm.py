r"""Loss-based clean/noisy split with a two-component 1-D Gaussian mixture (DivideMix, JoAPR).

Samples with wrong labels are learned late, so their training losses :math:`\ell_i` sit higher. Fit

.. math::

    p(\ell) = \sum_{j=1}^{2} \pi_j\, \mathcal{N}(\ell;\ \mu_j, \sigma_j^2)

by EM, and call sample i clean when the posterior of the low-mean component
:math:`w_i = \pi_c \mathcal{N}(\ell_i; \mu_c, \sigma_c^2) / p(\ell_i)`, :math:`c = \arg\min_j \mu_j`, exceeds a
threshold (0.5). Defaults follow DivideMix / JoAPR: losses min-max normalised to [0, 1], at most 10 EM iterations,
stop when the mean log-likelihood improves by less than 1e-2, variance floor ``reg_covar = 5e-4``.

EM (the same steps and stopping rule as scikit-learn's ``GaussianMixture``, so that both agree from the same
start): E-step :math:`r_{ij} \propto \pi_j \mathcal{N}(\ell_i; \mu_j, \sigma_j^2)`; M-step
:math:`n_j = \sum_i r_{ij}`, :math:`\pi_j = n_j / N`, :math:`\mu_j = \sum_i r_{ij} \ell_i / n_j`,
:math:`\sigma_j^2 = \sum_i r_{ij} (\ell_i - \mu_j)^2 / n_j + \text{reg\_covar}`. The start is the exact 1-D
2-means split (the threshold minimising the within-cluster sum of squares over the sorted losses) followed by one
M-step on the hard assignment: deterministic, no random restarts. Computed in float64.

References: J. Li, R. Socher, S. Hoi, "DivideMix", ICLR 2020. Y. Guo et al., "JoAPR: Cleaning the lens of prompt
learning for vision-language models", CVPR 2024.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from visprompt.selection.result import SplitResult

__all__ = ["GaussianMixture1D", "fit_gmm_1d", "gmm_split"]

_LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class GaussianMixture1D:
    """A fitted two-component 1-D mixture; component 0 has the lower mean."""

    weights: tuple[float, float]  # pi_j
    means: tuple[float, float]  # mu_j, ascending
    variances: tuple[float, float]  # sigma_j^2, reg_covar included
    log_likelihood: float  # mean log p(x_i) at the last E-step (scikit-learn's lower_bound_)
    iterations: int  # EM iterations run
    converged: bool  # log-likelihood change < tol before max_iter

    def log_joint(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 2) log pi_j N(x_i; mu_j, sigma_j^2) for (N,) values x."""
        opts = {"dtype": torch.float64, "device": x.device}
        weights, means, variances = (torch.tensor(p, **opts) for p in (self.weights, self.means, self.variances))
        return _log_joint(x.double(), weights, means, variances)

    def posterior(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 2) responsibilities of the two components for (N,) values x."""
        return torch.softmax(self.log_joint(x), dim=1)


def _log_joint(x: torch.Tensor, weights: torch.Tensor, means: torch.Tensor, variances: torch.Tensor) -> torch.Tensor:
    """(N, 2) log pi_j N(x_i; mu_j, sigma_j^2)."""
    sq = (x[:, None] - means[None, :]) ** 2  # (N, 2)
    return weights.log() - 0.5 * (_LOG_2PI + variances.log() + sq / variances)


def _two_means_split(x_sorted: torch.Tensor) -> int:
    """Size of the lower cluster of the optimal 1-D 2-means split of sorted values (at least 1, at most N - 1)."""
    n = x_sorted.shape[0]
    csum = torch.cumsum(x_sorted, 0)  # (N,)
    csq = torch.cumsum(x_sorted**2, 0)  # (N,)
    k = torch.arange(1, n, dtype=torch.float64, device=x_sorted.device)  # (N-1,)  size of the lower cluster
    left_sum, left_sq = csum[:-1], csq[:-1]
    right_sum, right_sq = csum[-1] - left_sum, csq[-1] - left_sq
    sse = (left_sq - left_sum**2 / k) + (right_sq - right_sum**2 / (n - k))  # (N-1,)
    return int(torch.argmin(sse)) + 1


def _m_step(x: torch.Tensor, resp: torch.Tensor, reg_covar: float) -> tuple[torch.Tensor, ...]:
    nk = resp.sum(0) + 10 * torch.finfo(torch.float64).eps  # (2,)  as sklearn: no empty component
    means = (resp * x[:, None]).sum(0) / nk  # (2,)
    variances = (resp * (x[:, None] - means) ** 2).sum(0) / nk + reg_covar  # (2,)
    return nk / nk.sum(), means, variances


def fit_gmm_1d(
    x: torch.Tensor,
    *,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    init: tuple[tuple[float, float], tuple[float, float], tuple[float, float]] | None = None,
) -> GaussianMixture1D:
    """Fit a two-component Gaussian mixture to (N,) values by EM (see the module docstring).

    Args:
        x: (N,) finite values, N >= 2.
        max_iter: cap on EM iterations.
        tol: stop when the mean log-likelihood changes by less than this.
        reg_covar: added to each variance after every M-step.
        init: optional starting (weights, means, variances); default: the exact 2-means split.

    Returns:
        :class:`GaussianMixture1D` with components sorted by mean.
    """
    x = x.detach().double().reshape(-1)
    if x.shape[0] < 2:
        raise ValueError(f"a two-component mixture needs at least 2 values, got {x.shape[0]}")
    if not torch.isfinite(x).all():
        raise ValueError("values contain NaN or infinite entries")
    opts = {"dtype": torch.float64, "device": x.device}
    if init is None:
        x_sorted = torch.sort(x).values
        hard = torch.zeros(x.shape[0], 2, **opts)  # (N, 2)
        lower = x <= x_sorted[_two_means_split(x_sorted) - 1]
        hard[lower, 0], hard[~lower, 1] = 1.0, 1.0
        weights, means, variances = _m_step(x, hard, reg_covar)
    else:
        weights, means, variances = (torch.tensor(p, **opts) for p in init)

    lower_bound, converged, iterations = -math.inf, False, 0
    while iterations < max_iter:
        iterations += 1
        log_joint = _log_joint(x, weights, means, variances)  # (N, 2)
        log_px = torch.logsumexp(log_joint, dim=1)  # (N,)
        weights, means, variances = _m_step(x, torch.exp(log_joint - log_px[:, None]), reg_covar)
        previous, lower_bound = lower_bound, float(log_px.mean())
        if abs(lower_bound - previous) < tol:
            converged = True
            break

    lo, hi = torch.argsort(means).tolist()  # clean (low-mean) component first
    pairs = [(float(t[lo]), float(t[hi])) for t in (weights, means, variances)]
    return GaussianMixture1D(*pairs, log_likelihood=lower_bound, iterations=iterations, converged=converged)


@torch.no_grad()
def gmm_split(
    losses: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    threshold: float = 0.5,
    normalize: bool = True,
    max_iter: int = 10,
    tol: float = 1e-2,
    reg_covar: float = 5e-4,
) -> SplitResult:
    """Clean where the low-loss component's posterior exceeds ``threshold`` (DivideMix / JoAPR defaults).

    Args:
        losses: (N,) per-sample training losses (e.g. cross-entropy on the given labels), N >= 2.
        labels: (N,) given labels, returned as ``pseudo_labels`` (a GMM does not relabel); zeros if None.
        threshold: clean iff P(clean | loss) > threshold.
        normalize: min-max normalise losses to [0, 1] first (DivideMix); the fitted parameters refer to them.
        max_iter, tol, reg_covar: EM settings (see :func:`fit_gmm_1d`).

    Returns:
        :class:`SplitResult` on ``losses.device``: ``confidence`` is P(clean | loss); ``stats`` holds ``n``,
        ``num_clean``, ``clean_fraction``, ``iterations``, ``converged``, ``log_likelihood`` and the mixture's
        ``weights``, ``means``, ``variances`` (clean component first). When every loss is equal there is nothing
        to separate: all samples are clean with confidence 1 and a warning is issued.
    """
    if losses.dim() != 1:
        raise ValueError(f"losses must be a 1-D tensor, got shape {tuple(losses.shape)}")
    n = losses.shape[0]
    x = losses.detach().double()
    if not torch.isfinite(x).all():
        raise ValueError("losses contain NaN or infinite entries")
    pseudo = torch.zeros(n, dtype=torch.long, device=losses.device) if labels is None else labels.long()
    if n >= 2 and float(x.max() - x.min()) == 0.0:
        warnings.warn("gmm_split: all losses are equal; every sample is marked clean", RuntimeWarning, stacklevel=3)
        ones = torch.ones(n, dtype=torch.float32, device=losses.device)
        stats = {"n": n, "num_clean": n, "clean_fraction": 1.0, "iterations": 0, "converged": True}
        return SplitResult(torch.ones(n, dtype=torch.bool, device=losses.device), pseudo, ones, stats)
    if normalize:
        x = (x - x.min()) / (x.max() - x.min())  # (N,)  in [0, 1]

    mixture = fit_gmm_1d(x, max_iter=max_iter, tol=tol, reg_covar=reg_covar)
    p_clean = mixture.posterior(x)[:, 0]  # (N,)
    clean = p_clean > threshold
    num_clean = int(clean.sum())
    stats = {
        "n": n,
        "num_clean": num_clean,
        "clean_fraction": num_clean / n,
        "iterations": mixture.iterations,
        "converged": mixture.converged,
        "log_likelihood": mixture.log_likelihood,
        "weights": list(mixture.weights),
        "means": list(mixture.means),
        "variances": list(mixture.variances),
    }
    return SplitResult(clean=clean, pseudo_labels=pseudo, confidence=p_clean.float(), stats=stats)
