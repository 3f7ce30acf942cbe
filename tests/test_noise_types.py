"""The noise types beyond the paper: asym-semantic (nearest class by CLIP text embedding), instance-dependent
(Xia et al. 2020) and open-set (images of held-out classes); their pipeline, cache keys and config."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from visprompt.config import NoiseSpec, load_config
from visprompt.data import pipeline
from visprompt.data.fake import make_fake_dataset
from visprompt.data.noise import (
    apply_noise,
    instance_noise,
    nearest_other_class,
    noise_stats,
    num_noisy,
    open_set_noise,
    pair_noise,
    semantic_noise,
)
from visprompt.data.pipeline import prepare_fewshot, splits_from_json, splits_to_json
from visprompt.data.records import Sample
from visprompt.errors import ConfigError, DataError
from visprompt.selection.metrics import selection_counts

# A hand-made class similarity: 0 and 2 are mutual nearest, 1 -> 3, 3 -> 0 (0.5 beats 0.4 to 1).
SIM = np.array(
    [
        [1.0, 0.1, 0.9, 0.2],
        [0.1, 1.0, 0.3, 0.8],
        [0.9, 0.3, 1.0, 0.1],
        [0.5, 0.4, 0.2, 1.0],
    ]
)
TARGETS = np.array([2, 3, 0, 0])


def balanced(num_classes: int, per_class: int) -> np.ndarray:
    return np.repeat(np.arange(num_classes), per_class)


def _samples(c: int, k: int, offset: int = 0) -> tuple[Sample, ...]:
    return tuple(Sample(offset + i, f"/x/{offset + i}.png", i // k, i // k, f"class {i // k}") for i in range(c * k))


OPEN_SET = NoiseSpec("open-set", 0.25, open_set_classes=1)
SEMANTIC = NoiseSpec("asym-semantic", 0.5)

# ------------------------------------------------------------------------------------------------ old types


def test_sym_asym_pairs_per_class_labels_are_unchanged_by_the_new_types() -> None:
    """The labels of the paper's types for fixed seeds, pinned from the code before the new types were added."""
    names = [f"c{i}" for i in range(7)]
    samples = tuple(Sample(i, f"/x/{i}.png", i % 7, i % 7, names[i % 7]) for i in range(7 * 16))
    h = hashlib.sha256()
    settings = [("sym", {"rate": 0.5}), ("asym", {"rate": 0.25}), ("pairs-per-class", {"false_per_class": 4}),
                ("pairs-per-class", {"false_per_class": 3, "pair_flip": True}), ("none", {})]  # fmt: skip
    for kind, kwargs in settings:
        for seed in range(5):
            h.update(
                repr([s.label for s in apply_noise(samples, names, NoiseSpec(kind, **kwargs), seed=seed)]).encode()
            )
    assert h.hexdigest() == "efc8330ef0a66058257ca38df874dab7fb9b43678efc212dc0df1ed6ac367921"


# ------------------------------------------------------------------------------------------------ asym-semantic


def test_nearest_other_class_of_a_hand_made_similarity() -> None:
    assert np.array_equal(nearest_other_class(SIM), TARGETS)
    assert np.array_equal(nearest_other_class(np.eye(3)), [1, 0, 0])  # ties: the lowest other index
    with pytest.raises(DataError, match=r"expected a \(C, C\) matrix"):
        nearest_other_class(np.ones((2, 3)))


@pytest.mark.parametrize(("n", "rate"), [(160, 0.125), (100, 0.29), (37, 0.5), (400, 0.75), (12, 0.0)])
def test_semantic_noise_flips_exactly_floor_rate_n_to_the_nearest_class(n: int, rate: float) -> None:
    y = np.random.default_rng(0).integers(0, 4, size=n)
    out = semantic_noise(y, rate, 4, TARGETS, np.random.default_rng(1))
    flipped = out != y
    assert int(flipped.sum()) == num_noisy(n, rate)
    assert np.array_equal(out[flipped], TARGETS[y[flipped]])
    # the same samples as sym/asym choose with the same generator, and a similarity matrix gives the same labels
    assert np.array_equal(flipped, pair_noise(y, rate, 4, np.random.default_rng(1)) != y)
    assert np.array_equal(out, semantic_noise(y, rate, 4, SIM, np.random.default_rng(1)))


def test_semantic_noise_is_deterministic_by_seed_and_rejects_bad_targets() -> None:
    y = balanced(4, 16)
    a, b = (semantic_noise(y, 0.5, 4, TARGETS, np.random.default_rng(s)) for s in (3, 3))
    assert np.array_equal(a, b) and not np.array_equal(a, semantic_noise(y, 0.5, 4, TARGETS, np.random.default_rng(4)))
    with pytest.raises(DataError, match="none its own target"):
        semantic_noise(y, 0.5, 4, np.array([2, 1, 0, 0]), np.random.default_rng(0))  # class 1 -> 1
    with pytest.raises(DataError, match="expected 4 classes"):
        semantic_noise(y, 0.5, 4, np.array([1, 0]), np.random.default_rng(0))


# ------------------------------------------------------------------------------------------------ instance


def _truncated_normal_mean(mu: float, sigma: float = 0.1) -> float:
    """Mean of N(mu, sigma^2) conditioned on [0, 1]: mu + sigma (phi(a) - phi(b)) / (Phi(b) - Phi(a))."""
    a, b = (0 - mu) / sigma, (1 - mu) / sigma
    pdf = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    return mu + sigma * (pdf(a) - pdf(b)) / (cdf(b) - cdf(a))


@pytest.mark.parametrize("rate", [0.125, 0.4, 0.6])
def test_instance_noise_mean_flip_rate_is_the_truncated_normals_mean(rate: float) -> None:
    """Over N = 20000 samples the flip fraction has a standard error below 0.0036 (Bernoulli, p <= 0.6); the
    tolerance 0.015 is over 4 standard errors. At 0.4 and 0.6 the truncation moves the mean by < 1e-4, so the
    fraction is ``rate`` itself; at 0.125 the truncation at 0 lifts it to about 0.145."""
    c, k = 10, 2000
    y = balanced(c, k)
    x = np.random.default_rng(5).normal(size=(c * k, 32))
    out = instance_noise(y, rate, c, x, np.random.default_rng(9))
    expected = _truncated_normal_mean(rate)
    assert abs(float((out != y).mean()) - expected) < 0.015
    if rate >= 0.4:
        assert abs(expected - rate) < 1e-4
    assert out.min() >= 0 and out.max() < c


def test_instance_noise_depends_on_the_features_and_is_deterministic_by_seed() -> None:
    c, k = 5, 40
    y = balanced(c, k)
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(c * k, 16)), rng.normal(size=(c * k, 16))
    a = instance_noise(y, 0.5, c, x1, np.random.default_rng(1))
    assert np.array_equal(a, instance_noise(y, 0.5, c, x1, np.random.default_rng(1)))
    assert np.array_equal(a, instance_noise(y, 0.5, c, 3.0 * x1, np.random.default_rng(1)))  # L2-normalised
    assert not np.array_equal(a, instance_noise(y, 0.5, c, x2, np.random.default_rng(1)))
    assert not np.array_equal(a, instance_noise(y, 0.5, c, x1, np.random.default_rng(2)))


def test_instance_noise_follows_the_projection_of_the_feature() -> None:
    """All samples share one feature: each class's flips go mostly where x @ W is largest (softmax over the others),
    unlike symmetric noise, which spreads them evenly."""
    c, k = 4, 2000
    y = balanced(c, k)
    x = np.tile(np.random.default_rng(0).normal(size=(1, 8)), (c * k, 1))  # (N, 8), one row repeated
    out = instance_noise(y, 0.5, c, x, np.random.default_rng(3))
    for cls in range(c):
        moved = out[(y == cls) & (out != y)]
        counts = np.bincount(moved, minlength=c)
        assert counts[cls] == 0 and counts.max() > 0.45 * len(moved)  # uniform would be 1/3


def test_instance_noise_rate_zero_and_bad_features() -> None:
    y = balanced(3, 4)
    assert np.array_equal(instance_noise(y, 0.0, 3, np.ones((12, 2)), np.random.default_rng(0)), y)
    with pytest.raises(DataError, match=r"expected \(12, d\) features"):
        instance_noise(y, 0.5, 3, np.ones((11, 2)), np.random.default_rng(0))


# ------------------------------------------------------------------------------------------------ open-set


def test_open_set_noise_replaces_exactly_floor_rate_n_images_with_distinct_outside_ones() -> None:
    names = [f"class {i}" for i in range(4)]
    clean = _samples(4, 8)
    pool = tuple(Sample(100 + i, f"/out/{i}.png", 4 + i % 2, 4 + i % 2, f"class {4 + i % 2}") for i in range(20))
    noisy = apply_noise(clean, names, NoiseSpec("open-set", 0.375, open_set_classes=1), seed=2, pool=pool)
    replaced = [(a, b) for a, b in zip(clean, noisy, strict=True) if a != b]
    assert len(replaced) == num_noisy(32, 0.375) == 12
    assert [b.label for _, b in replaced] == [a.label for a, _ in replaced]  # in-set label kept
    assert all(b.path.startswith("/out/") and b.true_label >= 4 and b.is_noisy for _, b in replaced)
    assert all(b.classname == names[b.label] for _, b in replaced)
    assert len({b.index for _, b in replaced}) == 12  # no outside image used twice
    stats = noise_stats(noisy, num_classes=4)
    assert stats == {"num_samples": 32, "num_noisy": 12, "num_unknown": 0, "noise_rate": 0.375, "num_open_set": 12}
    labels = torch.tensor([s.label for s in noisy])
    true = torch.tensor([s.true_label for s in noisy])
    counts = selection_counts(torch.ones(32, dtype=torch.bool), labels, true)
    assert counts["known"] == 32 and counts["truly_clean"] == 20  # out-of-set samples are known and noisy
    assert apply_noise(clean, names, NoiseSpec("open-set", 0.375, open_set_classes=1), seed=2, pool=pool) == noisy
    assert apply_noise(clean, names, NoiseSpec("open-set", 0.375, open_set_classes=1), seed=3, pool=pool) != noisy
    idx, _ = open_set_noise(32, 0.375, 20, np.random.default_rng(7))
    assert np.array_equal(np.sort(idx), np.flatnonzero(pair_noise(balanced(4, 8), 0.375, 4, np.random.default_rng(7))
                                                       != balanced(4, 8)))  # fmt: skip
    with pytest.raises(ConfigError, match=r"needs 12 outside images, the held-out classes hold 5"):
        apply_noise(clean, names, NoiseSpec("open-set", 0.375, open_set_classes=1), seed=2, pool=pool[:5])


def test_clip_dependent_types_need_their_inputs_and_names_suggest_them() -> None:
    names = ["a", "b", "c"]
    with pytest.raises(ConfigError, match=r"noise.type='asym-semantic' needs the class targets"):
        apply_noise(_samples(3, 4), names, NoiseSpec("asym-semantic", 0.5))
    with pytest.raises(ConfigError, match=r"noise.type='instance' needs the frozen CLIP's image features"):
        apply_noise(_samples(3, 4), names, NoiseSpec("instance", 0.5))
    assert apply_noise(_samples(3, 4), names, NoiseSpec("instance", 0.0)) == _samples(3, 4)  # nothing to draw
    for typo, meant in (("instanse", "instance"), ("openset", "open-set"), ("asym-semantik", "asym-semantic")):
        with pytest.raises(ConfigError, match=rf"did you mean '{meant}'.*asym-semantic, instance, none, open-set"):
            NoiseSpec(typo, 0.5)


def test_noise_tags_are_distinct() -> None:
    specs = [NoiseSpec(kind, 0.5) for kind in ("sym", "asym", "asym-semantic", "instance")]
    specs += [NoiseSpec("open-set", r, open_set_classes=k) for r, k in ((0.5, 1), (0.5, 2), (0.0, 1))]
    specs += [NoiseSpec("pairs-per-class", false_per_class=2), NoiseSpec("pairs-per-class", false_per_class=2,
              pair_flip=True), NoiseSpec("none")]  # fmt: skip
    tags = [spec.tag for spec in specs]
    assert len(set(tags)) == len(tags)
    assert NoiseSpec("open-set", 0.25, open_set_classes=2).tag == "open-set-0.25-k2"
    assert NoiseSpec("asym-semantic", 0.0).is_clean and NoiseSpec("instance", 0.0).setting == ("clean", 0.0)


# ------------------------------------------------------------------------------------------------ pipeline


@pytest.fixture
def dtd_root(tmp_path: Path) -> Path:
    make_fake_dataset("dtd", tmp_path, classes=4, per_class=20)  # 10 / 4 / 6 images per class
    return tmp_path


def _features(samples) -> np.ndarray:
    return np.stack([np.random.default_rng(s.index).normal(size=8) for s in samples])  # (N, 8), by image


def test_pipeline_asym_semantic_caches_by_backbone(dtd_root: Path, tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    calls = []

    def targets(names):
        calls.append(tuple(names))
        return SIM

    clean = prepare_fewshot("dtd", dtd_root, 8, NoiseSpec("none"), seed=3)
    a = prepare_fewshot("dtd", dtd_root, 8, SEMANTIC, seed=3, cache_dir=cache, semantic_targets=targets,
                        backbone="RN50|openai")  # fmt: skip
    assert calls == [clean.classnames]
    flipped = [s for s in a.train if s.is_noisy]
    assert len(flipped) == 16 and all(s.label == TARGETS[s.true_label] for s in flipped)
    assert [s.true_label for s in a.train] == [s.label for s in clean.train]  # same images as without noise
    assert a.val == clean.val and a.test == clean.test  # validation and test untouched
    [file] = cache.iterdir()
    assert file.name == f"dtd-8shot-seed3-asym-semantic-0.5-{hashlib.sha256(b'RN50|openai').hexdigest()[:8]}.json"
    record = json.loads(file.read_text())
    assert record["key"]["backbone"] == "RN50|openai" and record["stats"]["num_noisy"] == 16
    # the cache answers without the CLIP; another backbone is another file
    assert prepare_fewshot("dtd", dtd_root, 8, SEMANTIC, seed=3, cache_dir=cache, semantic_targets=targets,
                           backbone="RN50|openai") == a  # fmt: skip
    assert len(calls) == 1
    prepare_fewshot("dtd", dtd_root, 8, SEMANTIC, seed=3, cache_dir=cache, semantic_targets=TARGETS,
                    backbone="ViT-B-16|openai")  # fmt: skip
    assert len(list(cache.iterdir())) == 2
    with pytest.raises(ConfigError, match=r"a cached split needs backbone="):
        prepare_fewshot(
            "dtd", dtd_root, 8, NoiseSpec("instance", 0.5), seed=3, cache_dir=cache, image_features=_features
        )


def test_pipeline_instance_noise_uses_the_features_of_the_training_images(dtd_root: Path, tmp_path: Path) -> None:
    clean = prepare_fewshot("dtd", dtd_root, 8, NoiseSpec("none"), seed=1)
    seen = []

    def features(samples):
        seen.append([s.index for s in samples])
        return _features(samples)

    noisy = prepare_fewshot("dtd", dtd_root, 8, NoiseSpec("instance", 0.4), seed=1, image_features=features)
    assert seen == [[s.index for s in clean.train]]  # the K-shot images, before noise
    assert noisy.val == clean.val and noisy.test == clean.test
    assert [s.true_label for s in noisy.train] == [s.label for s in clean.train]
    assert 0 < sum(s.is_noisy for s in noisy.train) < len(noisy.train)
    assert splits_to_json(noisy)["stats"]["num_noisy"] == sum(s.is_noisy for s in noisy.train)
    assert prepare_fewshot("dtd", dtd_root, 8, NoiseSpec("instance", 0.4), seed=1, image_features=_features) == noisy
    other = prepare_fewshot(
        "dtd", dtd_root, 8, NoiseSpec("instance", 0.4), seed=1, image_features=lambda s: -_features(s)
    )
    assert other != noisy  # the flips depend on the features


def test_pipeline_open_set_holds_the_last_classes_out(dtd_root: Path, tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    full = prepare_fewshot("dtd", dtd_root, 8, NoiseSpec("none"), seed=2)
    splits = prepare_fewshot(
        "dtd", dtd_root, 8, NoiseSpec("open-set", 0.25, open_set_classes=1), seed=2, cache_dir=cache
    )
    assert splits.classnames == full.classnames[:3]
    assert len(splits.train) == 24 and {s.label for s in splits.train} == {0, 1, 2}
    outside = [s for s in splits.train if s.true_label == 3]
    assert len(outside) == num_noisy(24, 0.25) == 6 and all(s.is_noisy for s in outside)
    assert all(s.true_label == s.label for s in splits.train if s.true_label != 3)  # no other noise
    assert all(s.label < 3 for key in ("val", "test") for s in getattr(splits, key))  # held out of val and test
    assert splits.test == tuple(s for s in full.test if s.label < 3)
    assert not any(s.is_noisy for s in splits.val)
    record = splits_to_json(splits)
    assert record["stats"]["num_noisy"] == record["stats"]["num_open_set"] == 6
    assert splits_from_json(json.loads(json.dumps(record))) == splits  # split.json keeps the truth >= C
    [file] = cache.iterdir()
    assert file.name == "dtd-8shot-seed2-open-set-0.25-k1.json"
    assert json.loads(file.read_text())["key"]["noise"]["open_set_classes"] == 1

    def boom(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(pipeline, "sample_few_shot", boom)
    assert prepare_fewshot("dtd", dtd_root, 8, OPEN_SET, seed=2, cache_dir=cache) == splits
    monkeypatch.undo()
    with pytest.raises(ConfigError, match=r"noise.open_set_classes=3 leaves 1 of the 4 classes of dtd; expected"):
        prepare_fewshot("dtd", dtd_root, 8, NoiseSpec("open-set", 0.25, open_set_classes=3))
    with pytest.raises(ConfigError, match=r"noise.open_set_classes: expected an integer >= 1 with noise.type=open-set"):
        prepare_fewshot("dtd", dtd_root, 8, NoiseSpec("open-set", 0.25))
    with pytest.raises(ConfigError, match=r"open-set noise needs 18 outside images, the held-out classes hold 10"):
        prepare_fewshot("dtd", dtd_root, 8, NoiseSpec("open-set", 0.75, open_set_classes=1))


# ------------------------------------------------------------------------------------------------ config


def test_noise_config_new_fields_defaults_and_errors() -> None:
    assert NoiseSpec().open_set_classes == 0
    old = load_config(base={"noise": {"type": "sym", "rate": 0.5, "false_per_class": 0, "pair_flip": False}})
    assert old.noise == NoiseSpec(type="sym", rate=0.5)  # an old run's config.yaml loads
    cfg = load_config([], ["noise.type=open-set", "noise.rate=0.25", "noise.open_set_classes=2"])
    assert (cfg.noise.type, cfg.noise.open_set_classes) == ("open-set", 2)
    for kind in ("asym-semantic", "instance"):
        assert load_config([], [f"noise.type={kind}", "noise.rate=0.5"]).noise.type == kind
    with pytest.raises(ConfigError, match=r"^noise.open_set_classes: expected an integer, got 'two'$"):
        load_config([], ["noise.open_set_classes=two"])
    with pytest.raises(ConfigError, match=r"^noise.open_set_classes: expected an integer >= 1 with noise.type=open-"):
        load_config([], ["noise.type=open-set", "noise.rate=0.25"])
    with pytest.raises(ConfigError, match=r"^noise.open_set_classes: expected an integer >= 0, got -1$"):
        load_config([], ["noise.open_set_classes=-1"])
    with pytest.raises(ConfigError, match=r"^noise.open_set_classes: not used by noise.type=sym"):
        load_config([], ["noise.open_set_classes=2"])
    with pytest.raises(ConfigError, match=r"noise.type: unknown noise type 'instanse'; did you mean 'instance'"):
        load_config([], ["noise.type=instanse"])


def test_run_names_tell_the_new_settings_apart() -> None:
    from visprompt.engine.build import run_name

    def name(*overrides: str) -> str:
        return run_name(load_config([], ["data.dataset=dtd", "method.name=coop", *overrides]))

    assert name("noise.type=instance", "noise.rate=0.5").endswith("_instance-0.5_seed1")
    assert name("noise.type=asym-semantic", "noise.rate=0.5").endswith("_asym-semantic-0.5_seed1")
    open_set = [name("noise.type=open-set", f"noise.rate={r}", f"noise.open_set_classes={k}") for r, k in
                ((0.25, 1), (0.25, 2), (0.0, 1))]  # fmt: skip
    assert open_set[0].endswith("_open-set-0.25-k1_seed1") and len(set(open_set)) == 3
    assert name("noise.type=sym", "noise.rate=0.0").endswith("_sym-0_seed1")
