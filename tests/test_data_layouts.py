"""Dataset layouts: every supported layout parsed from a tiny fabricated tree, split files created
deterministically and then read, class names cleaned as the field does, Food101N's truths, and bad input as
one-line errors with nothing half-written."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from visprompt import fileio
from visprompt.data import files
from visprompt.data.datasets import DATASETS, get_spec, load_dataset
from visprompt.data.fake import FAKE_LAYOUTS, make_fake_dataset, write_image
from visprompt.data.records import DatasetSplits
from visprompt.errors import ConfigError, DataError, UnknownNameError

NEEDS_SCIPY = {"oxford_flowers", "stanford_cars"}

CLASSNAMES = {
    "caltech101": ("face", "leopard", "airplane"),  # sorted folders Faces, Leopards, airplanes, renamed
    "oxford_pets": ("abyssinian", "american bulldog", "bengal"),
    "oxford_flowers": ("pink primrose 0", "hard-leaved pocket orchid 1", "canterbury bells 2"),
    "dtd": ("banded", "blotchy", "braided"),
    "eurosat": ("Annual Crop Land", "Forest", "Herbaceous Vegetation Land"),
    "ucf101": ("Apply Eye Makeup", "Apply Lipstick", "Archery"),
    "food101": ("apple pie", "baby back ribs", "baklava"),
    "food101n": ("apple pie", "baby back ribs", "baklava"),
    "stanford_cars": ("2000 AM General Hummer SUV", "2012 Acura RL Sedan", "2011 Audi TT Hatchback"),
    "fgvc_aircraft": ("707-320", "727-200", "737-200"),
    "sun397": ("abbey", "airport terminal", "bedroom"),
    "imagenet": ("tench", "goldfish", "great white shark"),
    "folder": ("cat", "dog", "golden retriever"),
    "csv": ("cat", "dog", "golden retriever"),
}


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message
    return message


@pytest.mark.parametrize("name", sorted(FAKE_LAYOUTS))
def test_every_layout_parses_with_clean_names_and_consistent_samples(tmp_path: Path, name: str) -> None:
    if name in NEEDS_SCIPY:
        pytest.importorskip("scipy")
    path = make_fake_dataset(name, tmp_path, classes=3, per_class=10)
    splits = load_dataset(name, tmp_path, path)
    assert splits.name == name
    assert splits.classnames == CLASSNAMES[name]
    for key in ("train", "val", "test"):
        samples = getattr(splits, key)
        assert samples, key
        assert [s.index for s in samples] == list(range(len(samples)))
        for s in samples:
            assert Path(s.path).is_absolute() and Path(s.path).is_file(), s.path
            assert s.classname == splits.classnames[s.label]
            if not (name == "food101n" and key == "train"):
                assert s.true_label == s.label
    assert {s.label for s in splits.train} == {0, 1, 2}
    assert not any("_" in c for c in splits.classnames)


@pytest.mark.parametrize("name", ["dtd", "caltech101", "oxford_pets", "ucf101", "sun397", "imagenet"])
def test_absent_split_file_is_created_deterministically_saved_and_then_read(tmp_path: Path, name: str) -> None:
    spec = get_spec(name)
    for copy in ("a", "b"):
        make_fake_dataset(name, tmp_path / copy)
        load_dataset(name, tmp_path / copy)
    file_a = tmp_path / "a" / spec.folder / spec.split_file
    file_b = tmp_path / "b" / spec.folder / spec.split_file
    assert file_a.read_bytes() == file_b.read_bytes()  # same files, same split, on any machine
    raw = json.loads(file_a.read_text())
    assert set(raw) == {"train", "val", "test"} and all(len(row) == 3 for row in raw["train"])
    raw["test"] = raw["test"][1:]  # a changed file is what the next load reads
    file_a.write_text(json.dumps(raw))
    assert len(load_dataset(name, tmp_path / "a").test) == len(raw["test"])
    assert not list(file_a.parent.glob(".*.tmp"))


def test_created_split_uses_coop_ratios_per_class(tmp_path: Path) -> None:
    make_fake_dataset("dtd", tmp_path, classes=3, per_class=10)
    splits = load_dataset("dtd", tmp_path)
    for key, n in (("train", 5), ("val", 2), ("test", 3)):  # round(10 * 0.5), round(10 * 0.2), rest
        labels = [s.label for s in getattr(splits, key)]
        assert [labels.count(c) for c in range(3)] == [n] * 3
    paths = [s.path for key in ("train", "val", "test") for s in getattr(splits, key)]
    assert len(set(paths)) == 30  # a partition of the images


def test_a_published_split_file_is_used_as_is_and_its_names_cleaned(tmp_path: Path) -> None:
    make_fake_dataset("caltech101", tmp_path)
    rows = [["Faces/faces_0000.jpg", 0, "Faces"], ["airplanes/airplanes_0000.jpg", 1, "airplanes"]]
    split = {"train": rows, "val": rows[:1] + rows[1:], "test": rows}
    (tmp_path / "caltech-101" / "split_zhou_Caltech101.json").write_text(json.dumps(split))
    splits = load_dataset("caltech101", tmp_path)
    assert splits.classnames == ("face", "airplane")
    assert len(splits.train) == 2 and splits.train[1].path.endswith("101_ObjectCategories/airplanes/airplanes_0000.jpg")


def test_food101n_trains_on_web_labels_and_tests_on_food101(tmp_path: Path) -> None:
    make_fake_dataset("food101n", tmp_path, classes=3, per_class=10)
    food = load_dataset("food101", tmp_path)
    noisy = load_dataset("food101n", tmp_path)
    assert noisy.val == food.val and noisy.test == food.test
    assert len(noisy.train) == 30
    for i, s in enumerate(noisy.train):  # the fake marks even rows verified, correct unless i % 3 == 0
        verified_correct = i % 2 == 0 and i % 3 != 0
        assert s.true_label == (s.label if verified_correct else None)
        assert "/food-101n/images/" in s.path
    (tmp_path / "food-101n").rename(tmp_path / "Food-101N_release")  # the release's own folder name
    assert load_dataset("Food101N", tmp_path).train[0].path.endswith(noisy.train[0].path.split("food-101n/")[1])


def test_user_folder_with_its_own_train_val_test_split(tmp_path: Path) -> None:
    for key, n in (("train", 4), ("val", 1), ("test", 2)):
        for label, cls in enumerate(["red_fox", "wolf"]):
            for i in range(n):
                write_image(tmp_path / "pics" / key / cls / f"{i}.png", label)
    splits = load_dataset("folder", "unused", str(tmp_path / "pics"))
    assert splits.classnames == ("red fox", "wolf")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (8, 2, 4)


def test_csv_with_header_split_and_true_label_columns(tmp_path: Path) -> None:
    for i in range(6):
        write_image(tmp_path / f"{i}.png", i % 2)
    lines = ["path,label,split,true_label", "0.png,cat,train,cat", "1.png,dog,train,cat", "2.png,cat,train,",
             "3.png,dog,val,dog", f"{tmp_path / '4.png'},cat,test,cat", "5.png,dog,test,dog"]  # fmt: skip
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    splits = load_dataset("csv", "unused", str(tmp_path / "labels.csv"))
    assert splits.classnames == ("cat", "dog")
    assert [(s.label, s.true_label) for s in splits.train] == [(0, 0), (1, 0), (0, None)]
    assert splits.train[1].is_noisy and len(splits.val) == 1 and len(splits.test) == 2


def test_csv_without_header_and_integer_labels_sorted_numerically(tmp_path: Path) -> None:
    rows = []
    for label in (2, 10, 1):
        for i in range(10):
            write_image(tmp_path / "img" / f"{label}_{i}.png", label)
            rows.append(f"img/{label}_{i}.png,{label}")
    (tmp_path / "data.csv").write_text("\n".join(rows))
    splits = load_dataset("csv", "unused", str(tmp_path / "data.csv"))
    assert splits.classnames == ("1", "2", "10")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (15, 6, 9)


def test_two_labels_that_read_the_same_in_a_prompt_are_refused(tmp_path: Path) -> None:
    # "sea_lion" and "sea lion" were two classes with one prompt: the second never predicted, its per-class accuracy
    # overwriting the first's in metrics.json, predict's probabilities summing to 0.6
    for key, n in (("train", 2), ("val", 1), ("test", 1)):
        for label, cls in enumerate(["sea_lion", "sea lion", "seal"]):
            for i in range(n):
                write_image(tmp_path / "pics" / key / cls / f"{i}.png", label)
    with pytest.raises(DataError, match=r"image folder .*pics: labels 'sea lion' and 'sea_lion' both read 'sea lion'"):
        load_dataset("folder", "unused", str(tmp_path / "pics"))
    rows = [f"pics/{k}/{c}/0.png,{c},{k}" for k in ("train", "test") for c in ("sea_lion", "sea lion", "seal")]
    (tmp_path / "l.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"CSV file .*l.csv: labels .* both read 'sea lion' in a prompt") as exc:
        load_dataset("csv", "unused", str(tmp_path / "l.csv"))
    one_line(exc)
    with pytest.raises(DataError, match=r"dataset x: classes 0 and 2 are both named 'a'"):
        DatasetSplits("x", ("a", "b", "a"), (), (), ())
    with pytest.raises(DataError, match=r"dataset x: classes 0 and 1 are both named 'dog' \(case is ignored\)"):
        DatasetSplits("x", ("Dog", "dog"), (), (), ())  # CLIP's tokenizer lowercases: one prompt


@pytest.mark.parametrize(
    ("alias", "name"),
    [("pets", "oxford_pets"), ("OxfordPets", "oxford_pets"), ("flowers102", "oxford_flowers"),
     ("flowers", "oxford_flowers"), ("aircraft", "fgvc_aircraft"), ("DescribableTextures", "dtd"),
     ("cars", "stanford_cars"), ("Food-101N", "food101n")],
)  # fmt: skip
def test_a_dataset_alias_gives_the_run_the_registered_name_gives(alias: str, name: str) -> None:
    """`--dataset pets` loaded oxford_pets but zero-shot read "a photo of a {}." (the template table knows registered
    names only), as did visprompt-plus's prior and asym-semantic noise, in a run named pets_..."""
    from visprompt.config import DataConfig, load_config
    from visprompt.engine.build import run_name
    from visprompt.engine.runner import _backbone_key
    from visprompt.methods import method_spec
    from visprompt.models.templates import templates_for

    for method, noise in (("zeroshot", []), ("visprompt-plus", ["noise.type=asym-semantic", "noise.rate=0.5"])):
        given, registered = (load_config(overrides=noise, dataset=d, method=method) for d in (alias, name))
        assert given == registered and given.data.dataset == name and run_name(given) == run_name(registered)
        assert method_spec(given).dataset == name
    from visprompt.models.tiny import tiny_clip

    key = _backbone_key(given, tiny_clip("vit", seed=0))
    assert key.endswith(templates_for(name)[0])  # the split cache of asym-semantic: its template
    assert DataConfig(dataset=alias).dataset == name and DataConfig(dataset="my-own").dataset == "my-own"


def test_a_run_saved_under_an_alias_whose_template_changed_is_refused_when_loaded(tmp_path) -> None:
    """A run written before aliases were resolved, as `pets`, trained with the generic template: rebuilt now as
    oxford_pets its zero-shot prompts would differ, so eval, predict and resume refuse it; an alias with the same
    template (`DescribableTextures`) loads as its registered name."""
    from visprompt.config import load_config, load_run_config, to_yaml

    saved = tmp_path / "config.yaml"
    saved.write_text(to_yaml(load_config(dataset="oxford_pets")).replace("dataset: oxford_pets", "dataset: pets"))
    with pytest.raises(ConfigError, match=r"data\.dataset 'pets' is an alias of 'oxford_pets', whose zero-shot "):
        load_run_config(saved)
    saved.write_text(to_yaml(load_config(dataset="dtd")).replace("dataset: dtd", "dataset: DescribableTextures"))
    assert load_run_config(saved).data.dataset == "dtd"


def test_every_benchmark_is_in_the_template_table_under_its_registered_name() -> None:
    from visprompt.models.templates import DATASET_TEMPLATES, _key

    benchmarks = [n for n in DATASETS if not n.startswith("testbed") and n not in ("folder", "csv")]
    assert len(benchmarks) == 12 and not {_key(n) for n in benchmarks} - {_key(k) for k in DATASET_TEMPLATES}


def test_dataset_names_are_matched_loosely_and_unknown_ones_suggest_the_closest() -> None:
    assert get_spec("DescribableTextures").name == "dtd"
    assert get_spec("Oxford-Pets").name == "oxford_pets"
    assert "food101n" in DATASETS and "csv" in DATASETS
    with pytest.raises(UnknownNameError) as exc:
        get_spec("oxford_pet")
    assert "did you mean 'oxford_pets'" in one_line(exc)


def test_missing_root_missing_folder_and_wrong_layout(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data root .*nowhere does not exist") as exc:
        load_dataset("dtd", tmp_path / "nowhere")
    one_line(exc)
    with pytest.raises(DataError, match=r"dataset folder .*dtd does not exist \(dtd expects .*dtd/images/") as exc:
        load_dataset("dtd", tmp_path)
    one_line(exc)
    (tmp_path / "dtd" / "textures").mkdir(parents=True)
    with pytest.raises(DataError, match=r"wrong layout: .*dtd/images does not exist") as exc:
        load_dataset("dtd", tmp_path)
    one_line(exc)


def test_malformed_split_files_name_the_file_and_entry(tmp_path: Path) -> None:
    make_fake_dataset("dtd", tmp_path)
    file = tmp_path / "dtd" / "split_zhou_DescribableTextures.json"
    file.write_text('{"train": [')
    with pytest.raises(DataError, match=r"split_zhou_DescribableTextures.json: invalid JSON at line 1") as exc:
        load_dataset("dtd", tmp_path)
    one_line(exc)
    file.write_text(json.dumps({"train": [["a.jpg", "zero", "banded"]], "val": [], "test": []}))
    with pytest.raises(DataError, match=r"train\[0\] = \['a.jpg', 'zero', 'banded'\] is not a") as exc:
        load_dataset("dtd", tmp_path)
    one_line(exc)


def test_too_small_class_to_split_names_it(tmp_path: Path) -> None:
    make_fake_dataset("dtd", tmp_path, per_class=10)
    for f in sorted((tmp_path / "dtd" / "images" / "blotchy").iterdir())[1:]:
        f.unlink()
    with pytest.raises(DataError, match=r"dtd/images: class 'blotchy' has 1 images, too few to split") as exc:
        load_dataset("dtd", tmp_path)
    one_line(exc)
    assert not (tmp_path / "dtd" / "split_zhou_DescribableTextures.json").exists()


def test_csv_errors_name_the_file_and_line(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", 0)
    csv = tmp_path / "l.csv"
    csv.write_text("path,label\na.png,cat\nb.png,dog\nc.png,dog\n")
    with pytest.raises(DataError, match=r"l.csv: 2 image paths do not exist under .*, e.g. line 3: b.png") as exc:
        load_dataset("csv", "unused", str(csv))
    one_line(exc)
    csv.write_text("a.png,cat,holdout\n")
    with pytest.raises(DataError, match=r"l.csv line 1: split 'holdout' is not one of train, val, test"):
        load_dataset("csv", "unused", str(csv))
    csv.write_text("path,label,weight\na.png,cat,1\n")
    with pytest.raises(DataError, match=r"unknown column 'weight'"):
        load_dataset("csv", "unused", str(csv))
    with pytest.raises(DataError, match=r"CSV file .*missing.csv does not exist"):
        load_dataset("csv", "unused", str(tmp_path / "missing.csv"))
    with pytest.raises(DataError, match=r"needs a path"):
        load_dataset("folder", "unused")
    with pytest.raises(DataError, match=r"image folder .*nope does not exist"):
        load_dataset("folder", "unused", str(tmp_path / "nope"))


def test_flowers_without_scipy_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "oxford_flowers" / "jpg").mkdir(parents=True)
    monkeypatch.setitem(sys.modules, "scipy.io", None)  # import fails
    with pytest.raises(DataError, match=r"needs scipy \(pip install scipy\), or put split_zhou_OxfordFlowers.json"):
        load_dataset("oxford_flowers", tmp_path)


def test_atomic_write_leaves_nothing_half_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.json"
    files.atomic_write_json(target, {"old": True})

    def explode(self: Path, data: bytes) -> int:
        with open(self, "wb") as f:
            f.write(data[: len(data) // 2])
        raise RuntimeError("disk full")

    monkeypatch.setattr(Path, "write_bytes", explode)
    with pytest.raises(RuntimeError):
        files.atomic_write_json(target, {"new": True})
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_an_unwritable_split_file_is_a_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_fake_dataset("dtd", tmp_path)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(fileio.tempfile, "mkstemp", refuse)
    with pytest.raises(DataError, match=r"cannot write .*split_zhou_DescribableTextures.json: Permission denied"):
        load_dataset("dtd", tmp_path)
    shutil.rmtree(tmp_path / "dtd")
