"""Write the testbed's downstream tasks to disk in CoOp's layout, deterministically and atomically.

For each task of :data:`~visprompt.testbed.tasks.TASKS`, ``build_testbed(root)`` writes

    root/<folder>/images/<class>/<split>_<index>.png        (class folders use "_" for spaces)
    root/<folder>/split_zhou_<Name>.json                   {"train"|"val"|"test": [[rel_path, label, class], ...]}
    root/<folder>/testbed.json                             what was built (task, seed, counts, style)

with balanced classes: each split holds ``<split>_per_class`` images of every class, the classified attribute
fixed to the class and every other attribute drawn at random. The draw for (task, split) is seeded by
``(seed, crc32(task name), split)``, so a build is a pure function of the seed. A task is rendered into a
temporary folder and renamed into place; a task whose folder already holds a complete build with the same
settings (every one ``testbed.json`` records: task, seed, format, image size, class names, counts, style) is
skipped, so ``build_testbed`` is idempotent; a build with other settings is refused, naming each that differs.
"""

from __future__ import annotations

import json
import logging
import shutil
import zlib
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from visprompt.errors import DataError
from visprompt.testbed.render import Style, render
from visprompt.testbed.tasks import TASKS, TASKS_BY_NAME, TaskSpec
from visprompt.testbed.world import sample_scenes

logger = logging.getLogger(__name__)

MARKER = "testbed.json"
SPLITS = ("train", "val", "test")
FORMAT_VERSION = 1  # moves when the renderer draws other images from the same recorded settings


def class_folder(classname: str) -> str:
    """Folder name of a class ("top left" -> "top_left"); the data layer maps "_" back to spaces."""
    return classname.replace(" ", "_")


def split_rows(task: TaskSpec, split: str) -> list[tuple[str, int, str]]:
    """The split's rows [relative path, label, raw class name] in the order they are rendered."""
    per_class = {"train": task.train_per_class, "val": task.val_per_class, "test": task.test_per_class}[split]
    labels = np.tile(np.arange(task.num_classes), per_class)  # (C * per_class,) classes interleaved
    rows = []
    for i, label in enumerate(labels.tolist()):
        folder = class_folder(task.classnames[label])
        rows.append((f"{folder}/{split}_{i:05d}.png", label, folder))
    return rows


def render_split(task: TaskSpec, split: str, seed: int = 0, image_size: int = 32, chunk: int = 512) -> np.ndarray:
    """Images (N, H, W, 3) uint8 of a task's split, in the order of :func:`split_rows`."""
    rows = split_rows(task, split)
    labels = np.array([label for _, label, _ in rows])
    rng = np.random.default_rng([seed, zlib.crc32(task.name.encode()), SPLITS.index(split)])
    values = task.attribute_values()[labels]  # (N, A) the attribute values of each image's class
    fixed = {**dict(task.fixed), **{name: values[:, i] for i, name in enumerate(task.attributes)}}
    scenes = sample_scenes(rng, len(labels), image_size=image_size, plain_prob=0.0, fixed=fixed)
    parts = [
        render(scenes.take(slice(i, i + chunk)), task.style, image_size=image_size)
        for i in range(0, len(labels), chunk)
    ]
    return np.concatenate(parts)


def _marker(task: TaskSpec, seed: int, image_size: int) -> dict[str, Any]:
    """What ``testbed.json`` records of a build: the settings that decide its files."""
    return {
        "task": task.name,
        "seed": seed,
        "format": FORMAT_VERSION,
        "image_size": image_size,
        "classnames": list(task.classnames),
        "counts": task.expected_counts,
        "style": asdict(task.style),
    }


def _as_json(obj: Any) -> Any:
    """``obj`` as read back from JSON (tuples as lists)."""
    return json.loads(json.dumps(obj))


def _differences(built: Any, asked: Any, name: str = "") -> list[str]:
    """Each setting where a recorded marker and the asked-for one differ, as "name built, asked for asked"."""
    if isinstance(built, dict) and isinstance(asked, dict):
        return [d for k in [*asked, *(k for k in built if k not in asked)]
                for d in _differences(built.get(k), asked.get(k), f"{name}.{k}" if name else k)]  # fmt: skip
    if isinstance(built, list) and isinstance(asked, list) and len(built) == len(asked) > 4 and built != asked:
        i = next(i for i, (a, b) in enumerate(zip(built, asked, strict=True)) if a != b)  # a long list: its first
        return _differences(built[i], asked[i], f"{name}[{i}]")
    return [] if built == asked else [f"{name} {json.dumps(built)}, asked for {json.dumps(asked)}"]


def _is_complete(folder: Path, task: TaskSpec, seed: int, image_size: int) -> bool:
    marker = folder / MARKER
    if not folder.exists():
        return False
    if not marker.is_file():
        raise DataError(f"{folder}: exists but was not written by the testbed builder (move it away to build here)")
    try:
        built = json.loads(marker.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DataError(f"{marker}: not valid JSON (remove the folder to rebuild)") from None
    if not isinstance(built, dict):
        raise DataError(f"{marker}: expected a JSON object (remove the folder to rebuild)")
    # a style field added since the build was off then (the default renders as before the field existed)
    if isinstance(built.get("style"), dict):
        built["style"] = {**_as_json(asdict(Style())), **built["style"]}
    asked = _as_json(_marker(task, seed, image_size))
    differences = _differences(built, asked)
    if differences:
        raise DataError(f"{marker}: built with {'; '.join(differences)} (remove the folder to rebuild)")
    return (folder / task.split_file).is_file()


def build_task(root: Path, task: TaskSpec, seed: int = 0, image_size: int = 32) -> Path:
    """Write one task under ``root`` (skipped when already complete); returns its folder."""
    folder = root / task.folder
    if _is_complete(folder, task, seed, image_size):
        logger.info("%s: already built at %s", task.name, folder)
        return folder
    tmp = root / f".{task.folder}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for name in task.classnames:
        (tmp / "images" / class_folder(name)).mkdir(parents=True)
    split = {}
    for name in SPLITS:
        rows = split_rows(task, name)
        for (path, _, _), image in zip(rows, render_split(task, name, seed, image_size), strict=True):
            Image.fromarray(image).save(tmp / "images" / path, compress_level=1)
        split[name] = [list(r) for r in rows]
    (tmp / task.split_file).write_text(json.dumps(split) + "\n")
    (tmp / MARKER).write_text(json.dumps(_marker(task, seed, image_size), indent=2) + "\n")
    tmp.rename(folder)
    logger.info("%s: wrote %s (%s)", task.name, folder, task.expected_counts)
    return folder


def build_testbed(
    root: str | Path, tasks: Sequence[str] | None = None, seed: int = 0, image_size: int = 32
) -> list[Path]:
    """Write the testbed tasks (default: all of :data:`TASKS`) under ``root``; returns their folders.

    Deterministic in ``seed``; idempotent (complete tasks are skipped); atomic per task. An unknown task name
    or a foreign folder in the way raises :class:`~visprompt.errors.DataError`.
    """
    names = list(tasks) if tasks else [t.name for t in TASKS]
    unknown = [n for n in names if n not in TASKS_BY_NAME]
    if unknown:
        raise DataError(f"unknown testbed task {unknown[0]!r} (known: {', '.join(TASKS_BY_NAME)})")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return [build_task(root, TASKS_BY_NAME[n], seed, image_size) for n in names]
