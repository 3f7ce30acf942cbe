"""Paired comparisons of methods over seeds (and tasks): mean difference, 95% t-interval and wins.

Two runs are a pair when they share the task, the noise setting and the seed, so they saw the same few-shot set
and the same noisy labels. A claim that A beats B in a setting is made only when the interval excludes zero.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Paired", "paired"]


@dataclass(frozen=True)
class Paired:
    """Paired differences A - B: their mean, the two-sided 95% t-interval (nan for fewer than 2 pairs), pairs won
    by A (difference > 0), lost, and the number of pairs."""

    mean: float
    low: float
    high: float
    won: int
    lost: int
    n: int

    @property
    def excludes_zero(self) -> bool:
        return self.n > 1 and (self.low > 0 or self.high < 0)

    def cell(self) -> str:
        """``+1.2 [-0.3, +2.7] 4/5``: the Markdown table cell used across the docs."""
        interval = f" [{self.low:+.1f}, {self.high:+.1f}]" if self.n > 1 else ""
        return f"{self.mean:+.1f}{interval} {self.won}/{self.n}"


def paired(diffs: Sequence[float], confidence: float = 0.95) -> Paired:
    """Summarise paired differences (A - B per pair) with a t-interval of the mean."""
    if not diffs:
        raise ValueError("paired: no pairs")
    mean = statistics.fmean(diffs)
    won, lost = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    if len(diffs) < 2:
        return Paired(mean, math.nan, math.nan, won, lost, len(diffs))
    from scipy.stats import t

    half = float(t.ppf(0.5 + confidence / 2, len(diffs) - 1)) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return Paired(mean, mean - half, mean + half, won, lost, len(diffs))
