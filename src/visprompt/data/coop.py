"""The CoOp dataset layout: split files ``split_zhou_<Name>.json``, their creation, and class-name cleaning.

A split file is a JSON object ``{"train": rows, "val": rows, "test": rows}`` whose rows are
``[relative image path, label, class name]`` with 0-based labels and paths relative to the dataset's image
folder (CoOp's ``OxfordPets.save_split``/``read_split``). The files published with CoOp fix the splits of the
field's benchmarks; where one is absent the field's loaders create it from the raw layout and save it, and so
do we, with a fixed seed so the same files give the same split on every machine (CoOp seeds with the run's
seed, so its created splits depend on the first run; ours do not, and therefore differ from the published
files: download those to reproduce published numbers).

Class names are cleaned as the field does at prompt time: a dataset's renames first (Caltech101's
``airplanes -> airplane``, EuroSAT's ``AnnualCrop -> Annual Crop Land``, ...), then underscores to spaces.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from visprompt.data.files import atomic_write_json, list_dirs, list_images, read_json
from visprompt.data.records import Sample
from visprompt.errors import DataError

__all__ = [
    "SPLIT_NAMES",
    "SPLIT_SEED",
    "RawSplit",
    "Row",
    "classnames_from_rows",
    "clean_classname",
    "read_split_file",
    "rows_to_samples",
    "save_split_file",
    "split_by_class",
    "split_image_folder",
    "split_indices_by_class",
    "split_trainval",
]

logger = logging.getLogger(__name__)

Row = tuple[str, int, str]  # (image path relative to the split root, 0-based label, raw class name)
RawSplit = dict[str, list[Row]]  # "train" / "val" / "test" -> rows
SPLIT_NAMES = ("train", "val", "test")
SPLIT_SEED = 1  # seed of every split this package creates (fixed: independent of the run's seed)


def clean_classname(name: str, renames: Mapping[str, str] | None = None) -> str:
    """A dataset's rename of ``name`` if it has one, then underscores to spaces (``apple_pie -> apple pie``)."""
    name = (renames or {}).get(name, name)
    return " ".join(name.replace("_", " ").split())


def read_split_file(path: str | Path) -> RawSplit:
    """Read and validate a CoOp split file; a malformed file raises :class:`DataError` naming the entry."""
    data = read_json(path, "split file")
    if not isinstance(data, dict) or not all(k in data for k in SPLIT_NAMES):
        raise DataError(f"split file {path}: expected an object with keys 'train', 'val' and 'test'")
    split: RawSplit = {}
    for key in SPLIT_NAMES:
        rows = data[key]
        if not isinstance(rows, list):
            raise DataError(f"split file {path}: '{key}' must be a list of [path, label, classname] rows")
        out: list[Row] = []
        for i, row in enumerate(rows):
            ok = isinstance(row, (list, tuple)) and len(row) == 3 and isinstance(row[0], str)
            ok = ok and isinstance(row[1], int) and not isinstance(row[1], bool) and row[1] >= 0
            if not ok:
                raise DataError(f"split file {path}: {key}[{i}] = {row!r} is not a [path, label >= 0, classname] row")
            out.append((row[0], row[1], str(row[2])))
        split[key] = out
    return split


def save_split_file(split: RawSplit, path: str | Path) -> Path:
    """Write ``split`` in CoOp's format, atomically."""
    out = {key: [[p, int(y), c] for p, y, c in split[key]] for key in SPLIT_NAMES}
    atomic_write_json(path, out)
    logger.info("saved split to %s (%s)", path, ", ".join(f"{k} {len(split[k])}" for k in SPLIT_NAMES))
    return Path(path)


def _sizes(n: int, p_train: float, p_val: float) -> tuple[int, int, int]:
    n_train = round(n * p_train)  # Python's round, as CoOp does, so the created split sizes match its files
    n_val = round(n * p_val)
    return n_train, n_val, n - n_train - n_val


def split_indices_by_class(
    labels: Sequence[int],
    p_train: float = 0.5,
    p_val: float = 0.2,
    seed: int = SPLIT_SEED,
    source: str = "dataset",
    names: Mapping[int, str] | None = None,
) -> dict[str, list[int]]:
    """Positions of each split when every class, shuffled with a seeded generator, is cut into
    ``round(n * p_train)`` train, ``round(n * p_val)`` validation and the rest test items (CoOp's per-class rule).
    Every part must be non-empty."""
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_class[label].append(i)
    rng = np.random.default_rng(seed)
    split: dict[str, list[int]] = {key: [] for key in SPLIT_NAMES}
    for label in sorted(by_class):
        items = by_class[label]
        n_train, n_val, n_test = _sizes(len(items), p_train, p_val)
        if min(n_train, n_val, n_test) <= 0:
            raise DataError(
                f"{source}: class {(names or {}).get(label, label)!r} has {len(items)} images, too few to split "
                f"{p_train:.0%}/{p_val:.0%}/rest into non-empty train/val/test sets"
            )
        shuffled = [items[i] for i in rng.permutation(len(items))]
        split["train"] += shuffled[:n_train]
        split["val"] += shuffled[n_train : n_train + n_val]
        split["test"] += shuffled[n_train + n_val :]
    return split


def split_by_class(
    rows: Sequence[Row], p_train: float = 0.5, p_val: float = 0.2, seed: int = SPLIT_SEED, source: str = "dataset"
) -> RawSplit:
    """:func:`split_indices_by_class` applied to rows."""
    names = {label: name for _, label, name in rows}
    parts = split_indices_by_class([row[1] for row in rows], p_train, p_val, seed, source, names)
    return {key: [rows[i] for i in idx] for key, idx in parts.items()}


def split_image_folder(
    image_dir: str | Path,
    p_train: float = 0.5,
    p_val: float = 0.2,
    ignored: Iterable[str] = (),
    renames: Mapping[str, str] | None = None,
    seed: int = SPLIT_SEED,
) -> RawSplit:
    """Split a folder of class sub-folders into train/val/test with :func:`split_by_class` (CoOp's DTD rule).

    Classes are the sorted sub-folder names (minus ``ignored``), labels their positions. Stored class names are
    the renamed folder names (underscores kept, as in CoOp's files).
    """
    image_dir = Path(image_dir)
    skip = set(ignored)
    classes = [c for c in list_dirs(image_dir) if c not in skip]
    if not classes:
        raise DataError(f"{image_dir}: no class folders found (expected one sub-folder of images per class)")
    rows: list[Row] = []
    for label, folder in enumerate(classes):
        name = (renames or {}).get(folder, folder)
        rows += [(f"{folder}/{f}", label, name) for f in list_images(image_dir / folder)]
    return split_by_class(rows, p_train, p_val, seed, source=str(image_dir))


def split_trainval(rows: Sequence[Row], p_val: float = 0.2, seed: int = SPLIT_SEED) -> tuple[list[Row], list[Row]]:
    """Split a train+val list per class into train and ``round(n * p_val)`` validation rows (CoOp's rule)."""
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, (_, label, _) in enumerate(rows):
        by_class[label].append(i)
    rng = np.random.default_rng(seed)
    train: list[Row] = []
    val: list[Row] = []
    for label in sorted(by_class):
        idx = by_class[label]
        n_val = round(len(idx) * p_val)
        if n_val <= 0 or n_val >= len(idx):
            name = rows[idx[0]][2]
            raise DataError(f"class {name!r} has {len(idx)} train+val images: too few to hold out {p_val:.0%}")
        order = rng.permutation(len(idx))
        val += [rows[idx[j]] for j in order[:n_val]]
        train += [rows[idx[j]] for j in order[n_val:]]
    return train, val


def classnames_from_rows(split: Mapping[str, Sequence[Row]], source: str) -> tuple[str, ...]:
    """The raw class name of each label 0..C-1; a label without rows or with two names raises naming ``source``."""
    names: dict[int, str] = {}
    for key in SPLIT_NAMES:
        for path, label, name in split.get(key, ()):
            if names.setdefault(label, name) != name:
                raise DataError(f"{source}: label {label} is named both {names[label]!r} and {name!r} (at {path})")
    if not names:
        raise DataError(f"{source}: no samples")
    num_classes = max(names) + 1
    missing = [y for y in range(num_classes) if y not in names]
    if missing:
        raise DataError(f"{source}: labels {missing[:5]} have no samples (labels must run 0..{num_classes - 1})")
    return tuple(names[y] for y in range(num_classes))


def rows_to_samples(rows: Sequence[Row], base_dir: str | Path, classnames: Sequence[str]) -> tuple[Sample, ...]:
    """Samples with absolute paths under ``base_dir``, true label = label, cleaned class names."""
    prefix = str(Path(base_dir).absolute()) + os.sep  # string joins: pathlib would dominate large loads
    return tuple(
        Sample(index=i, path=prefix + path, label=label, true_label=label, classname=classnames[label])
        for i, (path, label, _) in enumerate(rows)
    )
