"""The testbed task builder: CoOp layout, determinism, idempotence, atomicity, and the data layer reading it."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from visprompt.errors import DataError
from visprompt.testbed import build, world
from visprompt.testbed.tasks import TASKS, TASKS_BY_NAME


def _small(name: str = "testbed-positions") -> build.TaskSpec:
    return dataclasses.replace(TASKS_BY_NAME[name], train_per_class=3, val_per_class=1, test_per_class=2)


def test_task_specs_are_registry_ready() -> None:
    assert len(TASKS) >= 3
    for t in TASKS_BY_NAME.values():
        assert (6 <= t.num_classes <= 12 or t.name == "testbed-many") and len(set(t.classnames)) == t.num_classes
        assert t.split_file.startswith("split_zhou_") and t.split_file.endswith(".json")
        assert t.expected_counts["train"] >= 16 * t.num_classes  # room for 16-shot sampling
        assert "{}" in t.template


def test_many_class_task_is_every_colour_on_five_backgrounds() -> None:
    from visprompt.testbed.world import BACKGROUNDS, COLOURS

    task = TASKS_BY_NAME["testbed-many"]
    assert task.num_classes == 50 and task in TASKS  # built by default and in the benchmark grid
    values = task.attribute_values()  # (50, 2): (colour, background) of each label
    assert {tuple(v) for v in values.tolist()} == {(c, b) for c in range(len(COLOURS)) for b in range(5)}
    assert all(task.classnames[i] == f"{list(COLOURS)[c]} object on {BACKGROUNDS[b]}" for i, (c, b) in
               enumerate(values.tolist()))  # fmt: skip


def test_build_writes_coop_layout(tmp_path) -> None:
    task = _small()
    folder = build.build_task(tmp_path, task, seed=0)
    split = json.loads((folder / task.split_file).read_text())
    assert {k: len(v) for k, v in split.items()} == task.expected_counts
    for path, label, classname in split["train"] + split["test"]:
        assert classname == task.classnames[label].replace(" ", "_")
        assert path.startswith(classname + "/")
        with Image.open(folder / "images" / path) as im:
            assert im.size == (32, 32) and im.mode == "RGB"
    labels = [label for _, label, _ in split["test"]]
    assert np.bincount(labels).tolist() == [task.test_per_class] * task.num_classes  # balanced
    assert not list(tmp_path.glob(".*tmp"))  # the temporary folder was renamed away


def test_build_is_deterministic_and_idempotent(tmp_path) -> None:
    task = _small()
    a = build.build_task(tmp_path / "a", task, seed=5)
    b = build.build_task(tmp_path / "b", task, seed=5)
    c = build.build_task(tmp_path / "c", task, seed=6)
    rel = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert all((a / p).read_bytes() == (b / p).read_bytes() for p in rel)
    assert any((a / p).read_bytes() != (c / p).read_bytes() for p in rel)
    stamp = (a / task.split_file).stat().st_mtime_ns
    build.build_task(tmp_path / "a", task, seed=5)  # complete: skipped
    assert (a / task.split_file).stat().st_mtime_ns == stamp
    with pytest.raises(DataError, match="seed 5"):
        build.build_task(tmp_path / "a", task, seed=7)


def test_a_build_with_other_settings_is_refused_naming_each(tmp_path) -> None:
    """Every setting the marker records decides the files: a build that differs in one is refused, never skipped."""
    task = _small()
    folder = build.build_task(tmp_path, task, image_size=16)
    with pytest.raises(DataError) as err:
        build.build_task(tmp_path, task, image_size=32)
    assert str(err.value) == (f"{folder / build.MARKER}: built with image_size 16, asked for 32 "
                              "(remove the folder to rebuild)")  # fmt: skip
    with Image.open(next((folder / "images").rglob("*.png"))) as im:
        assert im.size == (16, 16)  # untouched
    warm = dataclasses.replace(task, style=dataclasses.replace(task.style, gain=(1.0, 0.8, 0.5)))
    with pytest.raises(DataError, match=r"built with style.gain \[1.0, 1.0, 1.0\], asked for \[1.0, 0.8, 0.5\] "):
        build.build_task(tmp_path, warm, image_size=16)
    renamed = dataclasses.replace(task, classnames=(*task.classnames[:-1], "centre"))
    last = f'classnames\\[{task.num_classes - 1}\\] "{task.classnames[-1]}", asked for "centre"'
    with pytest.raises(DataError, match=last):
        build.build_task(tmp_path, renamed, image_size=16)
    more = dataclasses.replace(task, test_per_class=3)
    with pytest.raises(
        DataError, match=rf"built with counts.test {2 * task.num_classes}, asked for {3 * task.num_classes} "
    ):
        build.build_task(tmp_path, more, image_size=16)
    with pytest.raises(DataError, match=r"built with seed 0, asked for 1; image_size 16, asked for 32 "):
        build.build_task(tmp_path, task, seed=1)
    assert build.build_task(tmp_path, task, image_size=16) == folder  # the same settings: skipped


def test_a_build_from_before_a_style_field_existed_is_found_built(tmp_path) -> None:
    task = _small("testbed-shapes")  # no camera change: the fields added since are at their defaults
    folder = build.build_task(tmp_path, task)
    marker = json.loads((folder / build.MARKER).read_text())
    for field in ("hue", "grey_prob", "gain"):
        del marker["style"][field]
    (folder / build.MARKER).write_text(json.dumps(marker))
    stamp = (folder / task.split_file).stat().st_mtime_ns
    assert build.build_task(tmp_path, task) == folder and (folder / task.split_file).stat().st_mtime_ns == stamp
    (folder / build.MARKER).write_text("{")
    with pytest.raises(DataError, match=r"testbed\.json: not valid JSON"):
        build.build_task(tmp_path, task)


def test_build_refuses_foreign_folder_and_unknown_task(tmp_path) -> None:
    task = _small()
    (tmp_path / task.folder).mkdir()
    with pytest.raises(DataError, match="not written by the testbed"):
        build.build_task(tmp_path, task)
    with pytest.raises(DataError, match="unknown testbed task 'nope'"):
        build.build_testbed(tmp_path, ["nope"])


def test_split_images_match_in_memory_render(tmp_path) -> None:
    task = _small("testbed-shapes")
    folder = build.build_task(tmp_path, task, seed=0)
    rows = build.split_rows(task, "val")
    images = build.render_split(task, "val", seed=0)
    for (path, _, _), image in zip(rows, images, strict=True):
        assert np.array_equal(np.asarray(Image.open(folder / "images" / path)), image)  # PNG is lossless


def test_data_layer_reads_a_built_task(tmp_path) -> None:
    datasets = pytest.importorskip("visprompt.data.datasets")
    task = _small()
    build.build_task(tmp_path, task, seed=0)
    name = "testbed-positions-test-small"
    if name not in datasets.DATASETS:
        datasets.register_coop_dataset(name, folder=task.folder, split_file=task.split_file)
    splits = datasets.load_dataset(name, tmp_path)
    assert splits.classnames == task.classnames
    assert len(splits.train) == task.expected_counts["train"]
    assert splits.test[0].true_label == splits.test[0].label


def test_registry_entries_register_with_the_data_layer(tmp_path) -> None:
    datasets = pytest.importorskip("visprompt.data.datasets")
    from visprompt.testbed.tasks import registry_entries

    entries = registry_entries()
    assert [e["name"] for e in entries] == list(TASKS_BY_NAME)
    for e in entries:
        assert e["expected"][0] == TASKS_BY_NAME[e["name"]].num_classes
        spec = datasets.DatasetSpec(
            name=e["name"],
            folder=e["folder"],
            split_file=e["split_file"],
            expected=datasets.ExpectedCounts(*e["expected"]),
        )
        assert spec.layout == f"{e['folder']}/images/ and {e['folder']}/{e['split_file']}"


def test_conjunction_task_fixes_both_attributes(tmp_path) -> None:
    """testbed-scenes classes are (colour, background) pairs: each rendered scene carries both of its class."""
    task = dataclasses.replace(TASKS_BY_NAME["testbed-scenes"], train_per_class=2, val_per_class=1, test_per_class=1)
    values = task.attribute_values()  # (C, 2)
    assert values.shape == (task.num_classes, 2) and len({tuple(v) for v in values}) == task.num_classes
    for (colour, background), name in zip(values, task.classnames, strict=True):
        assert name == f"{list(world.COLOURS)[colour]} object on {world.BACKGROUNDS[background]}"
    folder = build.build_task(tmp_path, task)
    split = json.loads((folder / task.split_file).read_text())
    assert {c for _, _, c in split["train"]} == {n.replace(" ", "_") for n in task.classnames}
