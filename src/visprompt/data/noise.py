"""Synthetic label noise on the few-shot training split: pure, seeded, O(N) functions on label arrays.

Notation: N training samples, C classes, labels y_i in [0, C), rate r in [0, 1), f false labels per class.

- ``sym`` (:func:`symmetric_noise`): exactly floor(r * N) samples, chosen uniformly without replacement, get
  y_i + u_i mod C with u_i ~ U{1, .., C-1}, i.e. a label drawn uniformly from the other C - 1 classes (the
  authors' and NLPrompt's protocol: the true class is never kept).
- ``asym`` (:func:`pair_noise`): the same count, y_i -> (y_i + 1) mod C (the authors' "pair flip").
- ``pairs-per-class`` (:func:`pairs_per_class_noise`): the PTNL/JoAPR protocol of a fixed number of false
  positives per class. In every class f samples are chosen and relabelled so that every class *receives* exactly
  f false labels: each observed class then holds f wrong and K - f right labels. Symmetric: the f * C chosen
  labels are permuted with no sample keeping its class (every sample's new label is uniform over the other
  classes, by symmetry); pair flip: y -> (y + 1) mod C. PTNL draws the false positives from images outside the
  K-shot set; relabelling inside it keeps these functions pure on label arrays and yields the same per-class
  composition.

The count floor(r * N) is computed from the decimal form of r (``0.29 * 100`` is 29, not 28.999...).
:func:`apply_noise` applies one of these to :class:`~visprompt.data.records.Sample` records: only the observed
``label`` (and its class name) changes, ``true_label`` is kept.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from decimal import Decimal

import numpy as np

from visprompt.data.records import Sample
from visprompt.errors import ConfigError, DataError, UnknownNameError

__all__ = [
    "NOISE_TYPES",
    "apply_noise",
    "check_noise_type",
    "noise_stats",
    "noise_tag",
    "num_noisy",
    "pair_noise",
    "pairs_per_class_noise",
    "symmetric_noise",
]

NOISE_TYPES = ("none", "sym", "asym", "pairs-per-class")
_NOISE_STREAM = 2  # apply_noise's generator is default_rng([_NOISE_STREAM, seed]), apart from few-shot sampling


def _check_rate(rate: float) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating)) or not 0.0 <= rate < 1.0:
        raise ConfigError(f"noise.rate: expected a value in [0, 1), got {rate!r}")
    return float(rate)


def _as_labels(labels: Sequence[int] | np.ndarray, num_classes: int) -> np.ndarray:
    y = np.asarray(labels, dtype=np.int64).reshape(-1)  # (N,)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"labels must lie in [0, {num_classes}), got values in [{y.min()}, {y.max()}]")
    return y


def num_noisy(n: int, rate: float) -> int:
    """floor(rate * n), exact for rates written in decimal (``num_noisy(100, 0.29) == 29``)."""
    return math.floor(Decimal(repr(_check_rate(rate))) * n)


def _flip_targets(y: np.ndarray, rate: float, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    k = num_noisy(len(y), rate)
    if k and num_classes < 2:
        raise DataError(f"label noise needs at least 2 classes, got {num_classes}")
    return rng.choice(len(y), size=k, replace=False) if k else np.empty(0, dtype=np.int64)


def symmetric_noise(
    labels: Sequence[int] | np.ndarray, rate: float, num_classes: int, rng: np.random.Generator
) -> np.ndarray:
    """Exactly floor(rate * N) labels replaced by a label uniform over the other C - 1 classes; a new array."""
    y = _as_labels(labels, num_classes)
    out = y.copy()
    idx = _flip_targets(y, rate, num_classes, rng)
    out[idx] = (y[idx] + rng.integers(1, num_classes, size=len(idx))) % num_classes  # never the same class
    return out


def pair_noise(
    labels: Sequence[int] | np.ndarray, rate: float, num_classes: int, rng: np.random.Generator
) -> np.ndarray:
    """Exactly floor(rate * N) labels mapped y -> (y + 1) mod C; a new array."""
    y = _as_labels(labels, num_classes)
    out = y.copy()
    idx = _flip_targets(y, rate, num_classes, rng)
    out[idx] = (y[idx] + 1) % num_classes
    return out


def _derange_multiset(src: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random permutation ``dst`` of ``src`` (every class f times, C >= 3) with dst[i] != src[i] everywhere.

    Shuffle, then repair each fixed point i by swapping with a random j where neither src[j] nor dst[j] is
    src[i]; at least (C - 2) f such j exist, so each repair takes O(1) expected draws and removes one fixed point.
    """
    dst = rng.permutation(src)
    for i in np.flatnonzero(dst == src):
        c = src[i]
        if dst[i] != c:  # already repaired by an earlier swap
            continue
        while True:
            j = int(rng.integers(len(src)))
            if src[j] != c and dst[j] != c:
                break
        dst[i], dst[j] = dst[j], c
    return dst


def pairs_per_class_noise(
    labels: Sequence[int] | np.ndarray,
    false_per_class: int,
    num_classes: int,
    rng: np.random.Generator,
    pair_flip: bool = False,
) -> np.ndarray:
    """Relabel f samples of every class so that every class holds exactly f false labels; a new array.

    Every class in [0, C) must hold at least f samples. Symmetric: no chosen sample keeps its class and each class
    receives f of them; ``pair_flip``: the chosen samples of class y go to (y + 1) mod C.
    """
    y = _as_labels(labels, num_classes)
    f = int(false_per_class)
    if f != false_per_class or f < 0:
        raise ConfigError(f"noise.false_per_class: expected an integer >= 0, got {false_per_class!r}")
    out = y.copy()
    if f == 0:
        return out
    if num_classes < 2:
        raise DataError(f"label noise needs at least 2 classes, got {num_classes}")
    counts = np.bincount(y, minlength=num_classes)  # (C,)
    short = np.flatnonzero(counts < f)
    if short.size:
        c = int(short[0])
        raise ConfigError(f"noise.false_per_class={f} exceeds the {counts[c]} training samples of class {c}")
    order = np.argsort(y, kind="stable")  # positions grouped by class
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])  # (C,) first position of each class in `order`
    chosen = np.concatenate(
        [order[s + rng.choice(n, size=f, replace=False)] for s, n in zip(starts, counts, strict=True)]
    )
    src = y[chosen]  # (C * f,) class c repeated f times
    if pair_flip:
        dst = (src + 1) % num_classes
    elif num_classes == 2:
        dst = 1 - src
    else:
        dst = _derange_multiset(src, rng)
    out[chosen] = dst
    return out


def check_noise_type(noise_type: str) -> str:
    """``noise_type`` if it is one of :data:`NOISE_TYPES`; otherwise an error naming the closest type."""
    if noise_type not in NOISE_TYPES:
        close = difflib.get_close_matches(str(noise_type), NOISE_TYPES, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownNameError(f"unknown noise type {noise_type!r}{hint} (known: {', '.join(NOISE_TYPES)})")
    return noise_type


def noise_tag(noise_type: str, rate: float = 0.0, false_per_class: int = 0, pair_flip: bool = False) -> str:
    """A short name of a noise setting for file names and cache keys (``sym0.5``, ``ppc4-pair``, ``none``)."""
    if noise_type == "pairs-per-class":
        return f"ppc{false_per_class}" + ("-pair" if pair_flip else "") if false_per_class else "none"
    if noise_type in ("sym", "asym") and rate > 0:
        return f"{noise_type}{rate!r}"
    return "none"


def apply_noise(
    samples: Sequence[Sample],
    classnames: Sequence[str],
    noise_type: str,
    rate: float = 0.0,
    false_per_class: int = 0,
    pair_flip: bool = False,
    seed: int = 0,
) -> tuple[Sample, ...]:
    """The samples with noisy observed labels (``true_label`` kept); deterministic given ``seed``.

    ``noise_type`` is one of :data:`NOISE_TYPES`; ``rate`` applies to sym/asym, ``false_per_class`` and
    ``pair_flip`` to pairs-per-class. Bad settings raise :class:`ConfigError`/:class:`UnknownNameError`.
    """
    check_noise_type(noise_type)
    _check_rate(rate)
    num_classes = len(classnames)
    labels = np.fromiter((s.label for s in samples), dtype=np.int64, count=len(samples))  # (N,)
    rng = np.random.default_rng([_NOISE_STREAM, seed])
    if noise_type == "sym":
        noisy = symmetric_noise(labels, rate, num_classes, rng)
    elif noise_type == "asym":
        noisy = pair_noise(labels, rate, num_classes, rng)
    elif noise_type == "pairs-per-class":
        noisy = pairs_per_class_noise(labels, false_per_class, num_classes, rng, pair_flip)
    else:
        noisy = labels
    return tuple(
        s if new == s.label else s.relabel(int(new), classnames[new])
        for s, new in zip(samples, noisy.tolist(), strict=True)
    )


def noise_stats(samples: Sequence[Sample]) -> dict[str, float | int | None]:
    """Counts of a (noisy) training set: size, samples whose label differs from the known truth, unknown truths."""
    known = [s for s in samples if s.true_label is not None]
    noisy = sum(s.label != s.true_label for s in known)
    return {
        "num_samples": len(samples),
        "num_noisy": noisy,
        "num_unknown": len(samples) - len(known),
        "noise_rate": noisy / len(known) if known else None,
    }
