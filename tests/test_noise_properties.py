"""Property tests (hypothesis) of the noise invariants on arbitrary label arrays."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from visprompt.data.noise import num_noisy, pair_noise, pairs_per_class_noise, symmetric_noise

SETTINGS = settings(max_examples=150, deadline=None)


@st.composite
def labelled(draw) -> tuple[np.ndarray, int]:
    c = draw(st.integers(2, 12))
    labels = draw(st.lists(st.integers(0, c - 1), min_size=0, max_size=200))
    return np.array(labels, dtype=np.int64), c


rates = st.floats(0.0, 0.999, allow_nan=False, exclude_max=True)
seeds = st.integers(0, 2**32 - 1)


@SETTINGS
@given(labelled(), rates, seeds)
def test_symmetric_noise_invariants(data, rate, seed) -> None:
    y, c = data
    out = symmetric_noise(y, rate, c, np.random.default_rng(seed))
    changed = out != y
    assert out.shape == y.shape and out.dtype == np.int64
    k = num_noisy(len(y), rate)  # floor(rate * N) of the decimal rate: 1/3 as a float times 3 floors to 0
    assert changed.sum() == k and rate * len(y) - 1 - 1e-9 < k <= rate * len(y) + 1e-9
    assert ((out >= 0) & (out < c)).all()
    assert np.array_equal(out, symmetric_noise(y, rate, c, np.random.default_rng(seed)))


@SETTINGS
@given(labelled(), rates, seeds)
def test_pair_noise_invariants(data, rate, seed) -> None:
    y, c = data
    out = pair_noise(y, rate, c, np.random.default_rng(seed))
    changed = out != y
    assert changed.sum() == num_noisy(len(y), rate)
    assert np.array_equal(out[changed], (y[changed] + 1) % c)


@st.composite
def balanced_labels(draw) -> tuple[np.ndarray, int, int, int]:
    c = draw(st.integers(2, 12))
    k = draw(st.integers(1, 16))
    f = draw(st.integers(0, k))
    y = np.repeat(np.arange(c), k)
    perm = draw(st.permutations(range(c * k)))
    return y[np.array(perm)], c, k, f


@SETTINGS
@given(balanced_labels(), st.booleans(), seeds)
def test_pairs_per_class_invariants(data, pair_flip, seed) -> None:
    y, c, k, f = data
    out = pairs_per_class_noise(y, f, c, np.random.default_rng(seed), pair_flip=pair_flip)
    assert np.array_equal(np.bincount(out, minlength=c), np.full(c, k))
    wrong_per_observed = np.bincount(out[out != y], minlength=c)
    assert np.array_equal(wrong_per_observed, np.full(c, f))
    assert (out != y).sum() == c * f
    assert np.array_equal(out, pairs_per_class_noise(y, f, c, np.random.default_rng(seed), pair_flip=pair_flip))
