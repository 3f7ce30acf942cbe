"""``visprompt data verify``: counts against the expected numbers, missing and unreadable images listed,
nothing written, exit status 0 / 1, and one-line errors (exit 2) for a bad root or name."""

from __future__ import annotations

from pathlib import Path

import pytest

from visprompt import cli
from visprompt.data.datasets import DATASETS, coop_spec
from visprompt.data.fake import make_fake_dataset
from visprompt.data.verify import present_datasets, verify_dataset

FAKE = "fake-dtd-for-verify"


@pytest.fixture(autouse=True)
def _fake_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake DTD tree, with its true sizes as the expected ones, registered for one test."""
    spec = coop_spec(FAKE, "dtd", "split_zhou_DescribableTextures.json", expected=(3, 15, 6, 9))
    monkeypatch.setitem(DATASETS._items, FAKE, spec)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    make_fake_dataset("dtd", tmp_path, classes=3, per_class=10)
    return tmp_path


@pytest.fixture
def main():
    assert "visprompt.commands.data" in cli.COMMAND_MODULES
    return cli.main


def test_a_complete_dataset_verifies_and_nothing_is_written(root: Path) -> None:
    report = verify_dataset(FAKE, root)
    assert report.ok and report.problems == []
    assert (report.num_classes, report.counts) == (3, {"train": 15, "val": 6, "test": 9})
    assert report.num_images == 30 and report.missing == [] and report.unreadable == []
    assert not (root / "dtd" / "split_zhou_DescribableTextures.json").exists()  # verify never writes
    assert [row[3] for row in report.rows()] == ["ok"] * 5


def test_counts_are_checked_against_the_published_numbers(root: Path) -> None:
    report = verify_dataset("dtd", root)  # the fake has 3 classes of 10 images, DTD 47 of 120
    assert not report.ok
    assert "3 classes, expected 47" in report.problems
    assert "train split: 15 images, expected 2,820" in report.problems
    assert "test split: 9 images, expected 1,692" in report.problems
    assert ("classes", "3", "47", "MISMATCH") in report.rows()


def test_missing_and_unreadable_images_are_listed(root: Path) -> None:
    images = sorted((root / "dtd" / "images" / "banded").iterdir())
    images[0].unlink()
    images[1].write_bytes(b"not an image")
    load_split = verify_dataset(FAKE, root)  # the split is built in memory from what is there: 29 images
    assert load_split.counts["train"] + load_split.counts["val"] + load_split.counts["test"] == 29
    assert load_split.unreadable == [str(images[1].absolute())]
    assert any("1 images unreadable" in p for p in load_split.problems)
    # with a split file listing the deleted image, it is reported missing
    make_fake_dataset("dtd", root / "fresh", classes=3, per_class=10)
    from visprompt.data.datasets import load_dataset

    load_dataset(FAKE, root / "fresh")  # creates the split file
    gone = sorted((root / "fresh" / "dtd" / "images" / "braided").iterdir())[3]
    gone.unlink()
    report = verify_dataset(FAKE, root / "fresh")
    assert report.missing == [str(gone.absolute())] and not report.ok
    assert report.rows()[-1] == ("images", "30", "-", "1 missing, 0 unreadable")


def test_cli_prints_a_table_and_exits_0_or_1(root: Path, main, capsys) -> None:
    assert main(["data", "verify", "--root", str(root), "--dataset", FAKE]) == 0
    out = capsys.readouterr().out
    assert "dataset" in out and "expected" in out and f"{FAKE}  classes" in out and out.rstrip().endswith("ok")
    (root / "dtd" / "images" / "blotchy" / "blotchy_0002.jpg").write_bytes(b"junk")
    assert main(["data", "verify", "--root", str(root), "--dataset", FAKE, "--dataset", "dtd"]) == 1
    out = capsys.readouterr().out
    assert f"{FAKE}: unreadable: " in out and "blotchy_0002.jpg" in out
    assert "dtd: problem: 3 classes, expected 47" in out and out.rstrip().endswith("problems found")
    assert main(["data", "verify", "--root", str(root), "--dataset", FAKE, "--no-images"]) == 0  # exists only


def test_cli_errors_are_one_line_with_exit_2(tmp_path: Path, main, capsys) -> None:
    assert main(["data", "verify", "--root", str(tmp_path / "none"), "--dataset", "dtd"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data root") and err.count("\n") == 1
    assert main(["data", "verify", "--root", str(tmp_path), "--dataset", "caltech"]) == 2
    assert "did you mean 'caltech101'" in capsys.readouterr().err
    assert main(["data", "verify", "--root", str(tmp_path)]) == 2  # no dataset folder under the root
    assert "no known dataset folder" in capsys.readouterr().err


def test_present_datasets_finds_the_folders_under_the_root(root: Path) -> None:
    make_fake_dataset("eurosat", root)
    found = present_datasets(root)
    assert {"dtd", "eurosat", FAKE} <= set(found) and "caltech101" not in found
