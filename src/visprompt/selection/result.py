"""The value every splitter returns: which training samples to trust, and why.

A splitter (the OT split, the GMM split) is a pure function of per-sample model outputs and the given labels. It
never edits a dataset; it returns a :class:`SplitResult` over the N samples it was given, in the order given, and
the caller decides what to do with it (weight losses, build loaders, log statistics).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

__all__ = ["ConvergenceWarning", "SplitResult"]

StatValue = bool | int | float | str | list[float]


class ConvergenceWarning(UserWarning):
    """An iterative solver stopped at its iteration cap before reaching its tolerance."""


@dataclass(frozen=True)
class SplitResult:
    """A clean/noisy split of N samples.

    ``stats`` holds plain JSON-ready values for the run log; the keys every splitter fills are ``n``,
    ``num_clean``, ``clean_fraction``, ``iterations`` and ``converged``. The OT split adds ``marginal_error``,
    ``stages``, ``eps``, ``cost``, ``budget``; the GMM split adds the fitted mixture (``means``, ``variances``,
    ``weights``, clean component first) and ``log_likelihood``.
    """

    clean: torch.Tensor  # (N,) bool: True where the given label is trusted
    pseudo_labels: torch.Tensor  # (N,) long: the splitter's label estimate (the given label if it has none)
    confidence: torch.Tensor  # (N,) float32 in [0, 1]: how sure the splitter is of `pseudo_labels`
    stats: Mapping[str, StatValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.clean.shape[0]
        if self.clean.dtype != torch.bool or self.clean.dim() != 1:
            raise ValueError(
                f"clean must be a 1-D bool tensor, got {self.clean.dtype} of shape {tuple(self.clean.shape)}"
            )
        for name in ("pseudo_labels", "confidence"):
            shape = tuple(getattr(self, name).shape)
            if shape != (n,):
                raise ValueError(f"{name} must have shape ({n},) like clean, got {shape}")

    def __len__(self) -> int:
        return self.clean.shape[0]

    @property
    def num_clean(self) -> int:
        return int(self.clean.sum())

    @property
    def clean_fraction(self) -> float:
        return self.num_clean / max(len(self), 1)

    @property
    def noisy(self) -> torch.Tensor:
        """(N,) bool: the complement of :attr:`clean`."""
        return ~self.clean

    @property
    def iterations(self) -> int:
        return int(self.stats.get("iterations", 0))

    @property
    def converged(self) -> bool:
        return bool(self.stats.get("converged", True))
