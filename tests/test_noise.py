"""Label noise: exact counts, sym never keeps the class and is uniform over the others, the asym map, the
pairs-per-class composition, determinism by seed, and bad settings as one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from visprompt.config import NoiseSpec
from visprompt.data.noise import (
    apply_noise,
    noise_stats,
    num_noisy,
    pair_noise,
    pairs_per_class_noise,
    symmetric_noise,
)
from visprompt.data.records import Sample
from visprompt.errors import ConfigError, DataError

# Upper 0.1% point of the chi-square distribution with 8 degrees of freedom (C = 10: 9 other classes).
CHI2_999_DF8 = 26.12


def balanced(num_classes: int, per_class: int) -> np.ndarray:
    return np.repeat(np.arange(num_classes), per_class)


@pytest.mark.parametrize("fn", [symmetric_noise, pair_noise])
@pytest.mark.parametrize(("n", "rate"), [(160, 0.125), (160, 0.25), (100, 0.29), (37, 0.5), (1600, 0.75), (10, 0.0)])
def test_exactly_floor_rate_n_labels_change(fn, n: int, rate: float) -> None:
    y = np.random.default_rng(0).integers(0, 10, size=n)
    out = fn(y, rate, 10, np.random.default_rng(1))
    assert int((out != y).sum()) == num_noisy(n, rate)
    assert out.min() >= 0 and out.max() < 10


def test_num_noisy_is_exact_for_decimal_rates() -> None:
    assert num_noisy(100, 0.29) == 29  # 0.29 * 100 == 28.999999999999996 in floating point
    assert num_noisy(16 * 47, 0.125) == 94
    assert num_noisy(7, 0.99) == 6


def test_symmetric_never_keeps_the_class_and_is_uniform_over_the_others() -> None:
    c, k = 10, 2000
    y = balanced(c, k)
    out = symmetric_noise(y, 0.5, c, np.random.default_rng(123))
    flipped = out != y
    assert flipped.sum() == c * k // 2
    # offsets (new - old) mod C of the flipped samples are uniform on 1..C-1, never 0
    offsets = (out[flipped] - y[flipped]) % c
    counts = np.bincount(offsets, minlength=c)
    assert counts[0] == 0
    expected = flipped.sum() / (c - 1)
    chi2 = float((((counts[1:] - expected) ** 2) / expected).sum())
    assert chi2 < CHI2_999_DF8, chi2
    # and per source class: the new labels of class 0 spread over classes 1..9
    from_zero = np.bincount(out[flipped & (y == 0)], minlength=c)
    assert from_zero[0] == 0 and (from_zero[1:] > 0).all()


def test_asym_maps_each_flipped_label_to_the_next_class() -> None:
    y = balanced(5, 20)
    out = pair_noise(y, 0.4, 5, np.random.default_rng(0))
    flipped = out != y
    assert flipped.sum() == 40
    assert np.array_equal(out[flipped], (y[flipped] + 1) % 5)
    assert ((y == 4) & flipped).any() and (out[(y == 4) & flipped] == 0).all()  # wraps around


@pytest.mark.parametrize("fn", [symmetric_noise, pair_noise])
def test_same_seed_same_noise_other_seed_other_noise(fn) -> None:
    y = balanced(10, 16)
    a = fn(y, 0.5, 10, np.random.default_rng(7))
    b = fn(y, 0.5, 10, np.random.default_rng(7))
    c = fn(y, 0.5, 10, np.random.default_rng(8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_inputs_are_not_modified() -> None:
    y = balanced(4, 8)
    before = y.copy()
    symmetric_noise(y, 0.5, 4, np.random.default_rng(0))
    pairs_per_class_noise(y, 2, 4, np.random.default_rng(0))
    assert np.array_equal(y, before)


@pytest.mark.parametrize("pair_flip", [False, True])
@pytest.mark.parametrize(("c", "k", "f"), [(2, 16, 4), (3, 16, 8), (10, 16, 2), (37, 16, 16), (5, 1, 1)])
def test_pairs_per_class_every_observed_class_holds_exactly_f_false_labels(c, k, f, pair_flip) -> None:
    y = balanced(c, k)
    out = pairs_per_class_noise(y, f, c, np.random.default_rng(3), pair_flip=pair_flip)
    assert np.array_equal(np.bincount(out, minlength=c), np.full(c, k))  # K per observed class kept
    for cls in range(c):
        assert int(((out == cls) & (y != cls)).sum()) == f  # f wrong labels in every observed class
        assert int(((y == cls) & (out != cls)).sum()) == f  # f samples taken from every true class
    if pair_flip:
        moved = out != y
        assert np.array_equal(out[moved], (y[moved] + 1) % c)


def test_pairs_per_class_symmetric_spreads_over_the_other_classes() -> None:
    c, k, f = 10, 400, 200
    y = balanced(c, k)
    out = pairs_per_class_noise(y, f, c, np.random.default_rng(11))
    moved = out != y
    offsets = np.bincount((out[moved] - y[moved]) % c, minlength=c)
    assert offsets[0] == 0
    expected = moved.sum() / (c - 1)
    chi2 = float((((offsets[1:] - expected) ** 2) / expected).sum())
    assert chi2 < CHI2_999_DF8, chi2


def test_pairs_per_class_rejects_more_false_labels_than_a_class_holds() -> None:
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    with pytest.raises(ConfigError, match=r"false_per_class=3 exceeds the 2 training samples of class 1"):
        pairs_per_class_noise(y, 3, 3, np.random.default_rng(0))


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan")])
def test_rate_outside_unit_interval_is_a_config_error(rate: float) -> None:
    with pytest.raises(ConfigError, match=r"noise\.rate: expected a value in \[0, 1\)"):
        symmetric_noise(np.zeros(4, dtype=int), rate, 2, np.random.default_rng(0))


def test_labels_out_of_range_are_a_data_error() -> None:
    with pytest.raises(DataError, match=r"labels must lie in \[0, 3\)"):
        symmetric_noise([0, 1, 3], 0.5, 3, np.random.default_rng(0))


def _samples(c: int, k: int, truth_known: bool = True) -> tuple[Sample, ...]:
    return tuple(
        Sample(i, f"/x/{i}.png", i // k, (i // k) if truth_known else None, f"class {i // k}") for i in range(c * k)
    )


def test_apply_noise_changes_observed_labels_only_and_keeps_everything_else() -> None:
    names = [f"class {i}" for i in range(4)]
    clean = _samples(4, 8)
    noisy = apply_noise(clean, names, NoiseSpec("sym", 0.5), seed=5)
    assert len(noisy) == len(clean)
    assert sum(s.is_noisy for s in noisy) == 16
    for before, after in zip(clean, noisy, strict=True):
        assert (after.index, after.path, after.true_label) == (before.index, before.path, before.true_label)
        assert after.classname == names[after.label]
    assert noise_stats(noisy) == {"num_samples": 32, "num_noisy": 16, "num_unknown": 0, "noise_rate": 0.5}
    assert apply_noise(clean, names, NoiseSpec("sym", 0.5), seed=5) == noisy
    assert apply_noise(clean, names, NoiseSpec("sym", 0.5), seed=6) != noisy
    assert apply_noise(clean, names, NoiseSpec("none"), seed=5) == clean


def test_apply_noise_with_unknown_truth_keeps_it_unknown() -> None:
    noisy = apply_noise(_samples(3, 4, truth_known=False), ["a", "b", "c"], NoiseSpec("asym", 0.5), seed=0)
    assert all(s.true_label is None for s in noisy)
    assert noise_stats(noisy)["num_unknown"] == 12 and noise_stats(noisy)["noise_rate"] is None


def test_unknown_noise_type_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match=r"unknown noise type 'symm'; did you mean 'sym'"):
        NoiseSpec("symm", 0.5)


def test_noise_tags_and_labels_name_the_setting() -> None:
    assert (NoiseSpec("sym", 0.5).tag, NoiseSpec("sym", 0.5).label) == ("sym-0.5", "sym 50%")
    assert (NoiseSpec("asym", 0.125).tag, NoiseSpec("asym", 0.125).label) == ("asym-0.125", "asym 12.5%")
    assert NoiseSpec("sym", 0.0).label == NoiseSpec("none").label == NoiseSpec("pairs-per-class").label == "clean"
    flip = NoiseSpec("pairs-per-class", false_per_class=4, pair_flip=True)
    assert (flip.tag, flip.label) == ("pairs4-flip", "pairs-flip 4/class")
    with pytest.raises(ConfigError, match=r"^noise.pair_flip: not used by noise.type=sym"):
        NoiseSpec("sym", 0.5, pair_flip=True)
