"""Few-shot sampling, the cached noisy realisation every method shares, the run-directory record, the loader
and the transforms."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from visprompt.config import NoiseSpec
from visprompt.data import pipeline
from visprompt.data.datasets import load_dataset
from visprompt.data.fake import make_fake_dataset, write_image
from visprompt.data.fewshot import sample_few_shot
from visprompt.data.loader import SampleDataset, make_loader
from visprompt.data.pipeline import prepare_fewshot, read_splits, splits_from_json, splits_to_json, write_splits
from visprompt.data.records import Sample
from visprompt.data.transforms import CLIP_MEAN, CLIP_STD, build_transform
from visprompt.errors import ConfigError, DataError
from visprompt.selection.metrics import selection_counts, selection_metrics


@pytest.fixture
def dtd_root(tmp_path: Path) -> Path:
    make_fake_dataset("dtd", tmp_path, classes=4, per_class=20)  # 10 / 4 / 6 images per class
    return tmp_path


def per_class(samples) -> list[int]:
    labels = [s.label for s in samples]
    return [labels.count(c) for c in range(max(labels) + 1)]


# ------------------------------------------------------------------------------------------------ few-shot


def test_few_shot_takes_k_per_class_from_the_split_deterministically(dtd_root: Path) -> None:
    train = load_dataset("dtd", dtd_root).train
    shot = sample_few_shot(train, 4, seed=1)
    assert per_class(shot) == [4, 4, 4, 4]
    assert set(shot) <= set(train) and len(set(shot)) == 16
    assert [(s.label, s.index) for s in shot] == sorted((s.label, s.index) for s in shot)
    assert sample_few_shot(train, 4, seed=1) == shot
    assert sample_few_shot(train, 4, seed=2) != shot


def test_few_shot_errors_and_the_lenient_mode(dtd_root: Path) -> None:
    train = load_dataset("dtd", dtd_root).train
    with pytest.raises(
        DataError, match=r"train split: class 'banded' \(label 0\) holds 10 images, fewer than shots=16"
    ):
        sample_few_shot(train, 16, seed=1)
    with pytest.raises(ConfigError, match=r"data.shots: expected an integer >= 1, got 0"):
        sample_few_shot(train, 0, seed=1)
    assert per_class(sample_few_shot(train, 16, seed=1, strict=False)) == [10] * 4


# ------------------------------------------------------------------------------------------------ pipeline


def test_prepare_fewshot_protocol(dtd_root: Path) -> None:
    full = load_dataset("dtd", dtd_root)
    splits = prepare_fewshot("dtd", dtd_root, 8, NoiseSpec("sym", 0.5), seed=3)
    truths = [s.true_label for s in splits.train]
    assert [truths.count(c) for c in range(4)] == [8] * 4  # K images of every class, before noise
    assert sum(s.is_noisy for s in splits.train) == 16  # exactly floor(0.5 * 32)
    assert all(s.true_label is not None for s in splits.train)
    assert per_class(splits.val) == [4] * 4 and not any(s.is_noisy for s in splits.val)  # min(K, 4), clean
    assert splits.test == full.test
    # the images depend on (dataset, K, seed) only: every noise setting shares them
    clean = prepare_fewshot("dtd", dtd_root, 8, NoiseSpec("none"), seed=3)
    asym = prepare_fewshot("dtd", dtd_root, 8, NoiseSpec("asym", 0.25), seed=3)
    ppc = prepare_fewshot("dtd", dtd_root, 8, NoiseSpec("pairs-per-class", false_per_class=2), seed=3)
    for other in (clean, asym, ppc):
        assert [s.path for s in other.train] == [s.path for s in splits.train]
        assert other.val == splits.val
    assert per_class(ppc.train) == [8] * 4 and sum(s.is_noisy for s in ppc.train) == 8
    assert per_class(prepare_fewshot("dtd", dtd_root, 2, seed=3).val) == [2] * 4


def test_cache_is_written_reused_and_identical_for_every_method(dtd_root: Path, tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    first = prepare_fewshot("dtd", dtd_root, 4, NoiseSpec("sym", 0.5), seed=1, cache_dir=cache)
    files = list(cache.iterdir())
    assert [f.name for f in files] == ["dtd-4shot-seed1-sym-0.5.json"]
    record = json.loads(files[0].read_text())
    assert record["key"]["noise"] == {"type": "sym", "rate": 0.5, "false_per_class": 0, "pair_flip": False,
                                      "open_set_classes": 0}  # fmt: skip
    assert record["train"]["label"] == [s.label for s in first.train]
    assert record["stats"]["num_noisy"] == 8

    def boom(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(pipeline, "sample_few_shot", boom)
    monkeypatch.setattr(pipeline, "apply_noise", boom)
    for _method in ("coop", "nlprompt", "visprompt"):  # every method asks for the same split
        assert prepare_fewshot("dtd", dtd_root, 4, NoiseSpec("sym", 0.5), seed=1, cache_dir=cache) == first
    monkeypatch.undo()
    assert prepare_fewshot("dtd", dtd_root, 4, NoiseSpec("sym", 0.5), seed=1) == first  # without a cache, too


def test_a_changed_dataset_or_corrupt_cache_is_rebuilt(dtd_root: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    prepare_fewshot("dtd", dtd_root, 4, NoiseSpec("sym", 0.25), seed=1, cache_dir=cache)
    file = next(cache.iterdir())
    file.write_text("{broken")
    again = prepare_fewshot("dtd", dtd_root, 4, NoiseSpec("sym", 0.25), seed=1, cache_dir=cache)
    assert json.loads(file.read_text())["format"] == pipeline.CACHE_FORMAT
    split_file = dtd_root / "dtd" / "split_zhou_DescribableTextures.json"
    raw = json.loads(split_file.read_text())
    raw["train"] = raw["train"][:-1]
    split_file.write_text(json.dumps(raw))
    before = json.loads(file.read_text())["fingerprint"]
    changed = prepare_fewshot("dtd", dtd_root, 4, NoiseSpec("sym", 0.25), seed=1, cache_dir=cache)
    assert json.loads(file.read_text())["fingerprint"] != before
    assert len(changed.train) == len(again.train) == 16


def test_a_noise_rate_that_flips_no_label_is_refused_and_an_inexact_one_said(dtd_root: Path, caplog) -> None:
    # 1 shot x 4 classes at 20%: floor(0.8) = 0 flips, a clean run named sym-0.2 (its report column "sym 20%")
    with pytest.raises(DataError, match=r"noise.type=sym noise.rate=0.2 flips none of the 4 training labels \(1 shots"):
        prepare_fewshot("dtd", dtd_root, 1, NoiseSpec("sym", 0.2), seed=1)
    with caplog.at_level("WARNING", logger="visprompt.data.pipeline"):
        prepare_fewshot("dtd", dtd_root, 2, NoiseSpec("sym", 0.2), seed=1)  # floor(1.6) = 1 of 8
        assert "flips 1 of 8 training labels: a realised rate of 12.5%" in caplog.text
        caplog.clear()
        prepare_fewshot("dtd", dtd_root, 5, NoiseSpec("sym", 0.2), seed=1)  # 4 of 20: as said
        assert "realised rate" not in caplog.text
    # instance noise draws each flip: a seed that flips none of 4 labels at a mean rate of 0.3 is a draw, not refused
    features = lambda samples: np.random.default_rng(0).normal(size=(len(samples), 4))  # noqa: E731
    flipped = [prepare_fewshot("dtd", dtd_root, 1, NoiseSpec("instance", 0.3), seed=seed, image_features=features)
               for seed in range(1, 13)]  # fmt: skip
    assert min(sum(s.is_noisy for s in splits.train) for splits in flipped) == 0


def test_noise_from_the_images_is_not_read_from_the_cache_after_they_were_rewritten(dtd_root, tmp_path) -> None:
    calls = []

    def features(samples):
        calls.append(len(samples))
        return np.random.default_rng(len(calls)).normal(size=(len(samples), 4))

    noise, cache = NoiseSpec("instance", 0.4), tmp_path / "cache"
    args = ("dtd", dtd_root, 4, noise)
    prepare_fewshot(*args, seed=1, cache_dir=cache, image_features=features, backbone="b")
    prepare_fewshot(*args, seed=1, cache_dir=cache, image_features=features, backbone="b")
    assert len(calls) == 1  # cached
    for image in (p for p in (dtd_root / "dtd" / "images").rglob("*") if p.is_file()):
        write_image(image, 3)  # the same names and labels, other pixels
        os.utime(image, ns=(1, 1))
    prepare_fewshot(*args, seed=1, cache_dir=cache, image_features=features, backbone="b")
    assert len(calls) == 2  # the noise is made again from the images as they are


def test_bad_settings_fail_before_anything_is_read(tmp_path: Path) -> None:
    missing = tmp_path / "no-root"
    with pytest.raises(ConfigError, match=r"noise.rate: expected a value in \[0, 1\), got 1.0"):
        prepare_fewshot("dtd", missing, 4, NoiseSpec("sym", 1.0))
    with pytest.raises(ConfigError, match=r"noise.false_per_class=5 exceeds data.shots=4"):
        prepare_fewshot("dtd", missing, 4, NoiseSpec("pairs-per-class", false_per_class=5))
    with pytest.raises(ConfigError, match=r"data.shots"):
        prepare_fewshot("dtd", missing, 0)
    with pytest.raises(DataError, match="data root"):
        prepare_fewshot("dtd", missing, 4)


def test_k_larger_than_a_class_and_missing_images(dtd_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"holds 10 images, fewer than shots=11"):
        prepare_fewshot("dtd", dtd_root, 11, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # nothing written on failure
    victim = load_dataset("dtd", dtd_root).test[0].path
    Path(victim).unlink()
    with pytest.raises(DataError, match=r"dtd: 1 listed images are missing, e.g. .*" + Path(victim).name):
        prepare_fewshot("dtd", dtd_root, 2, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_splits_json_round_trip(dtd_root: Path, tmp_path: Path) -> None:
    splits = prepare_fewshot("dtd", dtd_root, 4, NoiseSpec("asym", 0.5), seed=2)
    unknown = splits.train[0].__class__(**{**splits.train[0].__dict__, "true_label": None})
    splits = splits.__class__(splits.name, splits.classnames, (unknown, *splits.train[1:]), splits.val, splits.test)
    record = splits_to_json(splits)
    json.dumps(record, allow_nan=False)
    assert record["root"] == str(dtd_root / "dtd" / "images")
    assert splits_from_json(json.loads(json.dumps(record))) == splits
    write_splits(splits, tmp_path / "run" / "split.json")
    assert read_splits(tmp_path / "run" / "split.json") == splits
    with pytest.raises(DataError, match=r"split record .*: expected format"):
        (tmp_path / "bad.json").write_text("{}")
        read_splits(tmp_path / "bad.json")


@pytest.mark.parametrize(
    ("key", "column", "value"),
    [("test", "label", -1), ("val", "label", 4), ("train", "label", True), ("test", "label", 1.5),
     ("test", "true_label", -1), ("val", "true_label", 4), ("train", "true_label", -2), ("test", "true_label", 3)],
)  # fmt: skip
def test_a_split_record_label_that_is_no_class_index_is_refused(dtd_root, tmp_path, key, column, value) -> None:
    """A negative label was read as a class counted from the end: test labels [-1, 2] and predictions [2, 2] scored
    top-1 100.0. Labels and known true labels must lie in [0, C); a training image's true label may be >= C (an
    image from outside the label set, open-set noise)."""
    record = splits_to_json(prepare_fewshot("dtd", dtd_root, 2, seed=1))  # C = 4
    file = tmp_path / "split.json"
    record["train"]["true_label"][1] = 7  # outside the label set: accepted
    file.write_text(json.dumps(record))
    assert read_splits(file).train[1].true_label == 7
    record[key][column][0] = value
    file.write_text(json.dumps(record))
    with pytest.raises(DataError) as exc:
        read_splits(file)
    message = str(exc.value)
    if (key, column, value) == ("test", "true_label", 3):  # a class, not the label's: the label would be scored
        assert message.startswith(f"split record {file}: test.label[0] is {record['test']['label'][0]}, which its true")
    else:
        assert message.startswith(f"split record {file}: {key}.{column}[0] is {value!r}")
    assert "\n" not in message


def test_food101n_labels_verified_wrong_count_as_noisy(tmp_path: Path) -> None:
    """Food-101N's annotators' "wrong" is known noise of an unknown true class: the split's noise rate and the
    selection's precision count it (they were 0.0 and 1.0 whatever the data: only verified-right labels were known)."""
    make_fake_dataset("food101n", tmp_path, classes=3, per_class=10)  # even rows verified, wrong where i % 3 == 0
    splits = prepare_fewshot("food101n", tmp_path, "all", seed=1)
    wrong = [s for s in splits.train if s.label_wrong]
    assert len(wrong) == 5 and all(s.is_noisy and s.true_label is None for s in wrong)  # no index to misuse
    assert splits_to_json(splits)["stats"] == {"num_samples": 30, "num_noisy": 5, "num_unknown": 15,
                                                "noise_rate": 5 / 15}  # fmt: skip
    assert read_splits(write_splits(splits, tmp_path / "split.json")) == splits  # the mark survives split.json
    labels = torch.tensor([s.label for s in splits.train])
    true = SampleDataset(splits.train).true_labels
    counts = selection_counts(torch.ones(30, dtype=torch.bool), labels, true)  # every label kept
    assert (counts["known"], counts["selected_known"], counts["hits"]) == (15, 15, 10)  # precision 2/3, not 1
    metrics = selection_metrics(torch.ones(30, dtype=torch.bool), labels, true, pseudo_labels=labels)
    assert metrics["precision"] == pytest.approx(2 / 3) and metrics["noise_rate"] == pytest.approx(1 / 3)
    assert metrics["pseudo_label_accuracy"] == 1.0  # judged on the 10 known classes only
    assert splits.train[0].label_wrong and not splits.train[0].relabel(1, "x").label_wrong  # a new label: unknown


# ------------------------------------------------------------------------------------------- loader, transforms


def test_loader_items_carry_labels_truth_and_position(dtd_root: Path) -> None:
    samples = list(load_dataset("dtd", dtd_root).train[:6])
    samples[1] = samples[1].relabel(3, "x")
    samples[2] = Sample(samples[2].index, samples[2].path, 2, None, "y")
    ds = SampleDataset(samples, build_transform(16))
    item = ds[1]
    assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
    assert (int(item["label"]), int(item["true_label"]), item["index"]) == (3, 0, 1)
    assert int(ds[2]["true_label"]) == -1
    batch = next(iter(make_loader(samples, build_transform(16), 4, shuffle=False, seed=0)))
    assert batch["image"].shape == (4, 3, 16, 16) and batch["index"].tolist() == [0, 1, 2, 3]


def test_loader_order_is_fixed_by_its_seed(dtd_root: Path) -> None:
    samples = load_dataset("dtd", dtd_root).train

    def order(seed: int) -> list[int]:
        loader = make_loader(samples, build_transform(8), 8, shuffle=True, seed=seed)
        return torch.cat([b["index"] for b in loader]).tolist()

    assert order(5) == order(5) != order(6)
    assert sorted(order(5)) == list(range(len(samples)))


def test_unreadable_image_raises_a_data_error_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    ds = SampleDataset([Sample(0, str(bad), 0, 0, "a"), Sample(1, str(tmp_path / "gone.png"), 0, 0, "a")])
    with pytest.raises(DataError, match=r"image .*broken.png cannot be read"):
        ds[0]
    with pytest.raises(DataError, match=r"image .*gone.png does not exist"):
        ds[1]


def test_eval_transform_normalises_with_clip_statistics(tmp_path: Path) -> None:
    from PIL import Image

    image = Image.new("RGB", (40, 30), (255, 128, 0))
    out = build_transform(24, train=False)(image)
    assert out.shape == (3, 24, 24)
    want = (np.array([255, 128, 0]) / 255 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    assert torch.allclose(out.mean(dim=(1, 2)), torch.tensor(want, dtype=torch.float32), atol=1e-5)
    assert float(out.std(dim=(1, 2)).max()) < 1e-5
    grey = build_transform(24, train=True)(Image.new("L", (50, 50), 100))  # greyscale -> RGB
    assert grey.shape == (3, 24, 24)
    steps = build_transform(24, train=True).transforms
    assert steps[1].scale == (0.08, 1.0) and steps[1].interpolation.value == "bicubic"
    with pytest.raises(ValueError):
        build_transform(0)


def test_written_pngs_are_readable(tmp_path: Path) -> None:
    path = write_image(tmp_path / "x.png", 3)
    assert SampleDataset([Sample(0, str(path), 0, 0, "a")])[0]["image"].size == (8, 8)
