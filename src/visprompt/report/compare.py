"""Paired comparisons of two methods in a runs folder: ``visprompt report RUNS --compare A:B``.

Two runs are a pair when they share the dataset, the noise setting and the seed **and** trained, validated and
tested on the same samples with the same labels, as their ``split.json`` records them. Sharing a seed is not
enough: a folder can hold one method at 16 shots and another at 8, or runs of two data versions, and an interval
over such "pairs" would not be a paired comparison, so the comparison is refused with a line naming the two runs.

For each (dataset, noise setting) where both methods have runs on common seeds, a comparison gives the mean of
each, the paired difference A - B (mean, 95% t-interval, pairs won; :mod:`visprompt.report.paired`), and how many
pairs pair runs computed in different environments (their difference holds the environments' rounding too); then
the same pooled over every (dataset, setting, seed) pair. Method names are the report's labels
(``visprompt[prompt.gate=zero]`` for a variant).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visprompt.config import setting_label
from visprompt.errors import ConfigError, DataError
from visprompt.report.collect import RunRecord, finished_results
from visprompt.report.paired import Paired, paired
from visprompt.report.tables import _escape, across_environments_note, crosses_environments, setting_order

__all__ = ["ALL", "Comparison", "compare_methods", "comparison_lines", "comparison_rows", "parse_comparison"]

#: the ``dataset`` of the comparison pooled over every dataset, setting and seed
ALL = "all"
_SPLIT_PARTS = ("classnames", "train", "val", "test")  # what a run saw; ``root`` and ``stats`` are not compared


@dataclass(frozen=True)
class Comparison:
    """A - B on one dataset and noise setting (or pooled: ``dataset`` :data:`ALL`, ``noise`` ``""``)."""

    a: str
    b: str
    dataset: str
    noise: str
    rate: float
    mean_a: float
    mean_b: float
    stats: Paired
    across_environments: int  # pairs whose two runs were computed in different environments

    @property
    def setting(self) -> str:
        return setting_label(self.noise, self.rate) if self.noise else "all settings"


def parse_comparison(text: str, labels: Iterable[str]) -> tuple[str, str]:
    """``A:B`` of ``--compare``, both among the report's method labels; a one-line error otherwise."""
    a, sep, b = _split_outside_brackets(text)  # a label holds ':' only inside its brackets, if at all
    if not sep or not a or not b:
        raise ConfigError(f"--compare: expected A:B (two method labels of the report), got {text!r}")
    known = sorted(set(labels))
    for name in (a, b):
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
            hint = f"; closest: {', '.join(close)}" if close else f"; the folder's methods: {', '.join(known)}"
            raise ConfigError(f"--compare {text}: no finished runs of method {name!r}{hint}")
    if a == b:
        raise ConfigError(f"--compare {text}: a method compared with itself")
    return a, b


def compare_methods(
    records: Sequence[RunRecord], labels: Mapping[str, str], metric: str, pairs: Sequence[tuple[str, str]]
) -> list[Comparison]:
    """Every comparison A - B of ``pairs`` per (dataset, setting) and pooled; a :class:`DataError` when two runs
    that would pair did not see the same data (see the module docstring)."""
    runs = finished_results(records, labels, metric)
    digests: dict[Path, str] = {}
    out = []
    for a, b in pairs:
        cells = sorted({k[1:3] for k in runs if k[0] == a} & {k[1:3] for k in runs if k[0] == b},
                       key=lambda c: (c[0], setting_order(*c[1])))  # fmt: skip
        pooled: list[tuple[RunRecord, float, RunRecord, float]] = []
        for dataset, setting in cells:
            seeds = sorted(s for (m, d, n, s) in runs if (m, d, n) == (a, dataset, setting))
            both = [(*runs[(a, dataset, setting, s)], *runs[(b, dataset, setting, s)]) for s in seeds
                    if (b, dataset, setting, s) in runs]  # fmt: skip
            if not both:
                continue
            for run_a, _, run_b, _ in both:
                if _data_digest(run_a, digests) != _data_digest(run_b, digests):
                    raise DataError(
                        f"--compare {a}:{b}: runs {run_a.name} and {run_b.name} share dataset, noise and seed but "
                        "not their training, validation or test samples and labels (split.json): they are not a pair"
                    )
            out.append(_comparison(a, b, dataset, setting, both))
            pooled += both
        if not pooled:
            raise DataError(f"--compare {a}:{b}: the two methods have no finished runs on a common dataset, noise "
                            "setting and seed")  # fmt: skip
        out.append(_comparison(a, b, ALL, ("", math.nan), pooled))
    return out


def comparison_lines(comparisons: Sequence[Comparison], metric: str, higher_is_better: bool = True) -> list[str]:
    """The report's "Paired comparisons" section (Markdown lines), one table per A - B. A pair is won by A when
    A's value is the better one: higher, or lower with ``higher_is_better`` false."""
    if not comparisons:
        return []
    better = "higher" if higher_is_better else "lower"
    lines = [
        "",
        "## Paired comparisons",
        "",
        f"Paired over seeds: runs of the two methods with the same dataset, noise setting and seed, which saw the "
        f"same samples and labels. A - B in `{metric}`: mean [95% t-interval] and pairs won by A (A {better}); an "
        "interval that holds 0 is no difference.",
    ]
    crossing = 0
    for a, b in dict.fromkeys((c.a, c.b) for c in comparisons):
        lines += ["", f"### {_escape(a)} - {_escape(b)}", "",
                  f"| dataset | setting | pairs | {_escape(a)} | {_escape(b)} | A - B |",
                  "| --- | --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
        for c in comparisons:
            if (c.a, c.b) != (a, b):
                continue
            mixed = f" ({c.across_environments} across environments)" if c.across_environments else ""
            crossing += c.across_environments if c.dataset != ALL else 0
            won = c.stats.won if higher_is_better else c.stats.lost
            interval = f" [{c.stats.low:+.2f}, {c.stats.high:+.2f}]" if c.stats.n > 1 else ""
            lines.append(f"| {c.dataset} | {c.setting} | {c.stats.n} | {c.mean_a:.2f} | {c.mean_b:.2f} | "
                         f"{c.stats.mean:+.2f}{interval} {won}/{c.stats.n}{mixed} |")  # fmt: skip
    if crossing:
        lines += ["", across_environments_note(crossing)]
    return lines


def comparison_rows(comparisons: Sequence[Comparison], higher_is_better: bool = True) -> list[dict[str, Any]]:
    """One CSV row per comparison: ``won_by_a`` and ``won_by_b`` count the pairs whose better value (``better``:
    higher, or lower with ``higher_is_better`` false) is A's and B's, as in the Markdown tables."""
    return [
        {
            "a": c.a,
            "b": c.b,
            "dataset": c.dataset,
            "noise_type": c.noise or ALL,
            "noise_rate": None if math.isnan(c.rate) else c.rate,
            "pairs": c.stats.n,
            "mean_a": c.mean_a,
            "mean_b": c.mean_b,
            "diff": c.stats.mean,
            "low": None if math.isnan(c.stats.low) else c.stats.low,
            "high": None if math.isnan(c.stats.high) else c.stats.high,
            "better": "higher" if higher_is_better else "lower",
            "won_by_a": c.stats.won if higher_is_better else c.stats.lost,
            "won_by_b": c.stats.lost if higher_is_better else c.stats.won,
            "across_environments": c.across_environments,
        }
        for c in comparisons
    ]


def _comparison(
    a: str, b: str, dataset: str, setting: tuple[str, float], both: list[tuple[RunRecord, float, RunRecord, float]]
) -> Comparison:
    return Comparison(
        a, b, dataset, *setting,
        mean_a=statistics.fmean(va for _, va, _, _ in both),
        mean_b=statistics.fmean(vb for _, _, _, vb in both),
        stats=paired([va - vb for _, va, _, vb in both]),
        across_environments=sum(crosses_environments(ra, rb) for ra, _, rb, _ in both),
    )  # fmt: skip


def _data_digest(record: RunRecord, cache: dict[Path, str]) -> str:
    """A digest of the samples and labels a run trained, validated and tested on (its ``split.json``)."""
    if record.path not in cache:
        path = record.path / "split.json"
        try:
            split = json.loads(path.read_text())
            parts = {key: split[key] for key in _SPLIT_PARTS}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: cannot read the run's samples and labels to pair it ({exc})") from None
        cache[record.path] = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return cache[record.path]


def _split_outside_brackets(text: str) -> tuple[str, str, str]:
    depth = 0
    for i, ch in enumerate(text):
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == ":" and depth == 0:
            return text[:i], ":", text[i + 1 :]
    return text, "", ""
