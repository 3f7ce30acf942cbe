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
- ``asym-semantic`` (:func:`semantic_noise`): the same count and the same choice of samples as ``sym``/``asym``,
  y_i -> t[y_i] where t[c] is the class whose CLIP text embedding is nearest to c's (:func:`nearest_other_class`
  of a (C, C) similarity matrix). The map comes from the run's frozen CLIP (``engine.noise_inputs``).
- ``instance`` (:func:`instance_noise`): instance-dependent noise as in Xia et al., NeurIPS 2020 ("Part-dependent
  label noise", the IDN generation as commonly implemented). Per sample a flip rate q_i ~ N(r, 0.1^2) truncated
  to [0, 1]; one random projection W (d, C) with N(0, 1) entries; p_i = softmax over the classes c != y_i of
  (x_i @ W)_c, scaled by q_i, and 1 - q_i on y_i; the new label is drawn from p_i. x_i is the sample's frozen
  CLIP image feature, L2-normalised here. The realised count is random: its mean is the truncated normal's,
  r itself from r = 0.3 up, a little above r below (0.145 for r = 0.125). Xia et al.'s code draws one W per
  true class; one shared W, as here, keeps the dependence on the feature and the seed. Rate 0 flips nothing.
- ``open-set`` (:func:`open_set_noise`): exactly floor(r * N) samples, chosen as for ``sym``, keep their label
  but get an image drawn without replacement from a pool of images outside the label set (by default the
  training images of the last ``open_set_classes`` classes, which :func:`~visprompt.data.pipeline.prepare_fewshot`
  removes from the task). Their ``true_label`` is their class in the full dataset, an index >= C: known, and
  never equal to the observed label, so they count as noisy everywhere (:func:`noise_stats`, selection metrics).

The count floor(r * N) is computed from the decimal form of r (``0.29 * 100`` is 29, not 28.999...).
:func:`apply_noise` applies one of these to :class:`~visprompt.data.records.Sample` records: only the observed
``label`` (and its class name) changes, ``true_label`` is kept (open-set: the image changes instead).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any

import numpy as np

from visprompt.config import NoiseSpec
from visprompt.data.records import Sample
from visprompt.errors import ConfigError, DataError
from visprompt.registry import NOISE_TYPES, NoiseTypeDef

__all__ = [
    "INSTANCE_STD",
    "apply_noise",
    "instance_noise",
    "nearest_other_class",
    "noise_stats",
    "num_noisy",
    "open_set_noise",
    "pair_noise",
    "pairs_per_class_noise",
    "semantic_noise",
    "symmetric_noise",
]

INSTANCE_STD = 0.1  # instance: standard deviation of the per-sample flip rate's truncated normal
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


def nearest_other_class(similarity: np.ndarray) -> np.ndarray:
    """t[c] = argmax over c' != c of similarity[c, c'] (ties: the lowest index); a (C,) array from a (C, C) one."""
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1] or sim.shape[0] < 2:
        raise DataError(f"class similarity: expected a (C, C) matrix with C >= 2, got shape {sim.shape}")
    sim = sim.copy()
    np.fill_diagonal(sim, -np.inf)  # a class is never its own target
    return sim.argmax(axis=1)  # (C,)


def _check_targets(targets: np.ndarray, num_classes: int) -> np.ndarray:
    t = np.asarray(targets)
    if t.ndim == 2:
        return nearest_other_class(t)
    t = t.astype(np.int64).reshape(-1)  # (C,)
    if t.shape != (num_classes,) or (t < 0).any() or (t >= num_classes).any() or (t == np.arange(num_classes)).any():
        raise DataError(f"semantic targets: expected {num_classes} classes in [0, {num_classes}), none its own target")
    return t


def semantic_noise(
    labels: Sequence[int] | np.ndarray,
    rate: float,
    num_classes: int,
    targets: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Exactly floor(rate * N) labels mapped y -> targets[y]; a new array.

    ``targets`` is the (C,) nearest-other-class map, or a (C, C) class similarity matrix it is derived from
    (:func:`nearest_other_class`). The flipped samples are the ones :func:`pair_noise` flips with the same ``rng``.
    """
    y = _as_labels(labels, num_classes)
    t = _check_targets(targets, num_classes)
    out = y.copy()
    idx = _flip_targets(y, rate, num_classes, rng)
    out[idx] = t[y[idx]]
    return out


def _truncated_normal(mean: float, std: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` draws of N(mean, std^2) conditioned on [0, 1], by redrawing the ones outside (mean in [0, 1])."""
    q = rng.normal(mean, std, size=size)  # (N,)
    bad = np.flatnonzero((q < 0) | (q > 1))
    while bad.size:  # each round keeps at least ~half of them (mean inside [0, 1])
        q[bad] = rng.normal(mean, std, size=bad.size)
        bad = bad[(q[bad] < 0) | (q[bad] > 1)]
    return q


def instance_noise(
    labels: Sequence[int] | np.ndarray,
    rate: float,
    num_classes: int,
    features: np.ndarray,
    rng: np.random.Generator,
    std: float = INSTANCE_STD,
) -> np.ndarray:
    """Instance-dependent labels (Xia et al. 2020; see the module docstring); a new array. Rate 0: no change.

    ``features`` (N, d) are the samples' image features (L2-normalised here). The generator draws the flip rates
    q (N,), then W (d, C), then one uniform per sample, so the same seed and features give the same labels.
    """
    y = _as_labels(labels, num_classes)
    rate = _check_rate(rate)
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != len(y):
        raise DataError(f"instance noise: expected ({len(y)}, d) features, got shape {x.shape}")
    if rate == 0 or len(y) == 0:
        return y.copy()
    if num_classes < 2:
        raise DataError(f"label noise needs at least 2 classes, got {num_classes}")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # (N, d) unit rows
    q = _truncated_normal(rate, std, len(y), rng)  # (N,) per-sample flip rates
    w = rng.standard_normal((x.shape[1], num_classes))  # (d, C) random projection
    scores = x @ w  # (N, C)
    rows = np.arange(len(y))
    scores[rows, y] = -np.inf  # the softmax runs over the other classes only
    p = np.exp(scores - scores.max(axis=1, keepdims=True))  # (N, C), 0 on y_i
    p *= (q / p.sum(axis=1))[:, None]  # the other classes share q_i
    p[rows, y] = 1.0 - q  # (N, C), rows sum to 1
    u = rng.random(len(y))[:, None]  # (N, 1)
    cdf = np.cumsum(p, axis=1)  # (N, C)
    return np.minimum((u >= cdf).sum(axis=1), num_classes - 1).astype(np.int64)  # inverse-CDF draw


def open_set_noise(
    num_samples: int, rate: float, pool_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Which floor(rate * N) samples get an out-of-set image, and which pool images, distinct, they get.

    Returns (positions (k,), pool positions (k,)); the positions are the ones :func:`symmetric_noise` would
    choose with the same ``rng``. A pool smaller than k raises :class:`ConfigError`.
    """
    k = num_noisy(num_samples, rate)
    if k > pool_size:
        raise ConfigError(
            f"noise.rate={rate!r}: open-set noise needs {k} outside images, the held-out classes hold {pool_size}"
        )
    idx = rng.choice(num_samples, size=k, replace=False) if k else np.empty(0, dtype=np.int64)
    src = rng.choice(pool_size, size=k, replace=False) if k else np.empty(0, dtype=np.int64)
    return idx, src


# ------------------------------------------------------------------------------------------ the registry
# Each type: the NoiseSpec fields it reads, what it needs from the run, and a pure function
# ``(labels, spec, num_classes, rng, inputs) -> noisy labels``. Adding a type is one register call here (or in a
# plugin) plus its tests; the config, the run directories, the cache keys and the report follow from it.


def _sym(y: np.ndarray, spec: NoiseSpec, c: int, rng: np.random.Generator, inputs: Mapping[str, Any]) -> np.ndarray:
    return symmetric_noise(y, spec.rate, c, rng)


def _asym(y: np.ndarray, spec: NoiseSpec, c: int, rng: np.random.Generator, inputs: Mapping[str, Any]) -> np.ndarray:
    return pair_noise(y, spec.rate, c, rng)


def _pairs(y: np.ndarray, spec: NoiseSpec, c: int, rng: np.random.Generator, inputs: Mapping[str, Any]) -> np.ndarray:
    return pairs_per_class_noise(y, spec.false_per_class, c, rng, spec.pair_flip)


def _semantic(
    y: np.ndarray, spec: NoiseSpec, c: int, rng: np.random.Generator, inputs: Mapping[str, Any]
) -> np.ndarray:
    if not num_noisy(len(y), spec.rate):
        return y
    if inputs.get("targets") is None:
        raise ConfigError("noise.type='asym-semantic' needs the class targets from the frozen CLIP's text features")
    return semantic_noise(y, spec.rate, c, inputs["targets"], rng)


def _instance(
    y: np.ndarray, spec: NoiseSpec, c: int, rng: np.random.Generator, inputs: Mapping[str, Any]
) -> np.ndarray:
    if spec.rate == 0 or not len(y):
        return y
    if inputs.get("features") is None:
        raise ConfigError("noise.type='instance' needs the frozen CLIP's image features of the training samples")
    return instance_noise(y, spec.rate, c, inputs["features"], rng)


_BUILTIN_TYPES = (
    NoiseTypeDef("none", (), "no label changes", apply=lambda y, *_: y),
    NoiseTypeDef("sym", ("rate",), "floor(rate*N) labels moved uniformly to another class", apply=_sym),
    NoiseTypeDef("asym", ("rate",), "floor(rate*N) labels y -> (y + 1) mod C (pair flip)", apply=_asym),
    NoiseTypeDef(
        "pairs-per-class",
        ("false_per_class", "pair_flip"),
        "f false labels received by every class (PTNL/JoAPR)",
        apply=_pairs,
        short="pairs",
    ),
    NoiseTypeDef(
        "asym-semantic",
        ("rate",),
        "floor(rate*N) labels moved to the nearest class by CLIP text embedding",
        apply=_semantic,
        needs=("targets",),
        depends_on_backbone=True,
    ),
    NoiseTypeDef(
        "instance",
        ("rate",),
        "instance-dependent flips from frozen image features (Xia et al. 2020)",
        apply=_instance,
        needs=("features",),
        depends_on_backbone=True,
    ),
    NoiseTypeDef(
        "open-set",
        ("rate", "open_set_classes"),
        "floor(rate*N) images from k held-out classes under in-set labels",
        needs=("pool",),
    ),
)
for _type in _BUILTIN_TYPES:
    NOISE_TYPES.register(_type.name)(_type)


def apply_noise(
    samples: Sequence[Sample],
    classnames: Sequence[str],
    spec: NoiseSpec,
    seed: int = 0,
    *,
    targets: np.ndarray | None = None,
    features: np.ndarray | None = None,
    pool: Sequence[Sample] = (),
) -> tuple[Sample, ...]:
    """The samples with noisy observed labels (``true_label`` kept); deterministic given ``seed``.

    ``spec`` says which type and setting (:class:`~visprompt.config.NoiseSpec`). ``asym-semantic`` needs
    ``targets`` (the (C,) nearest-class map or a (C, C) similarity), ``instance`` needs ``features`` (N, d) of
    ``samples``, ``open-set`` the ``pool`` of outside images (their ``true_label`` >= C). Bad settings raise
    :class:`ConfigError`.
    """
    num_classes = len(classnames)
    labels = np.fromiter((s.label for s in samples), dtype=np.int64, count=len(samples))  # (N,)
    rng = np.random.default_rng([_NOISE_STREAM, seed])
    if spec.type == "open-set":
        idx, src = open_set_noise(len(samples), spec.rate, len(pool), rng)
        out = list(samples)
        for i, j in zip(idx.tolist(), src.tolist(), strict=True):
            out[i] = replace(pool[j], label=samples[i].label, classname=samples[i].classname)
        return tuple(out)
    noisy = spec.definition.apply(labels, spec, num_classes, rng, {"targets": targets, "features": features})
    return tuple(
        s if new == s.label else s.relabel(int(new), classnames[new])
        for s, new in zip(samples, noisy.tolist(), strict=True)
    )


def noise_stats(samples: Sequence[Sample], num_classes: int | None = None) -> dict[str, float | int | None]:
    """Counts of a (noisy) training set: size, samples whose label differs from the known truth (or is known wrong,
    ``Sample.label_wrong``), unknown truths; the noise rate is over the samples whose truth is known.

    With ``num_classes`` C, also ``num_open_set``: the samples whose true class lies outside the label set
    (``true_label`` >= C, open-set noise; they are among the noisy ones).
    """
    known = [s for s in samples if s.is_noisy is not None]
    noisy = sum(bool(s.is_noisy) for s in known)
    stats: dict[str, float | int | None] = {
        "num_samples": len(samples),
        "num_noisy": noisy,
        "num_unknown": len(samples) - len(known),
        "noise_rate": noisy / len(known) if known else None,
    }
    if num_classes is not None:
        stats["num_open_set"] = sum(s.true_label is not None and s.true_label >= num_classes for s in known)
    return stats
