"""Users' own data: an image folder with one sub-folder per class, or a CSV of ``path,label``.

Image folder: either ``FOLDER/<class>/<image>`` (split per class into 50% train, 20% validation, 30% test with a
fixed seed, CoOp's rule) or ``FOLDER/{train,val,test}/<class>/<image>`` (the user's own split; ``val/`` optional).

CSV: one row per image, ``path,label`` with optional ``split`` (train/val/test) and ``true_label`` columns (and the
``given_label``, ``changed`` columns `visprompt audit --fix` writes, ignored here), named
by a header row (``path,label,split``) or, without a header, in that order. Paths may be relative to the CSV's
folder. Labels are taken as given: they are the dataset's annotation (``true_label`` = ``label``) unless a
``true_label`` column says otherwise (empty = unknown), which only a training row may do (validation and test rows
are scored against ``label``). Without a ``split`` column rows are split per class as for folders. Classes are the
sorted distinct labels (numerically if all labels are integers).

Neither loader writes into the user's folder: the split is recomputed deterministically on each load.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from visprompt.data.coop import SPLIT_NAMES, RawSplit, Row, clean_classname, split_by_class, split_indices_by_class
from visprompt.data.files import list_dirs, list_images
from visprompt.data.records import DatasetSplits, Sample
from visprompt.errors import DataError

__all__ = ["csv_labels", "load_csv", "load_image_folder"]

_CSV_COLUMNS = ("path", "label", "split", "true_label")
_INFO_COLUMNS = ("given_label", "changed")  # written by `visprompt audit --fix`; read and ignored


def _to_splits(
    name: str, classes: Sequence[str], split: RawSplit, base: Path, true: dict[str, list], source: str
) -> DatasetSplits:
    classnames = tuple(clean_classname(c) for c in classes)
    first: dict[str, str] = {}
    for raw, cleaned in zip(classes, classnames, strict=True):
        if cleaned.lower() in first:  # one prompt for two classes (CLIP's tokenizer ignores case): one never predicted
            raise DataError(
                f"{source}: labels {first[cleaned.lower()]!r} and {raw!r} both read {cleaned.lower()!r} in a prompt "
                "(underscores become spaces, case is ignored); rename one"
            )
        first[cleaned.lower()] = raw
    root = str(base.absolute())
    parts = {}
    for key in SPLIT_NAMES:
        truths = true.get(key)
        parts[key] = tuple(
            Sample(
                index=i,
                path=os.path.join(root, path),
                label=label,
                true_label=label if truths is None else truths[i],
                classname=classnames[label],
            )
            for i, (path, label, _) in enumerate(split[key])
        )
    return DatasetSplits(name=name, classnames=classnames, **parts)


def load_image_folder(path: str | Path, name: str = "folder") -> DatasetSplits:
    """Read ``FOLDER/<class>/*`` (split 50/20/30 per class) or ``FOLDER/{train,val,test}/<class>/*``."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    subdirs = list_dirs(root)
    if "train" in subdirs:
        if "test" not in subdirs:
            raise DataError(f"image folder {root}: has train/ but no test/ (expected train/, test/ and optional val/)")
        present = [k for k in SPLIT_NAMES if k in subdirs]
        classes = sorted({c for k in present for c in list_dirs(root / k)})
        if not classes:
            raise DataError(f"image folder {root}: no class folders under train/ and test/")
        label_of = {c: i for i, c in enumerate(classes)}
        split: RawSplit = {key: [] for key in SPLIT_NAMES}
        for key in present:
            for cls in list_dirs(root / key):
                split[key] += [(f"{key}/{cls}/{f}", label_of[cls], cls) for f in list_images(root / key / cls)]
        if not split["train"]:
            raise DataError(f"image folder {root}: train/ holds no images")
        return _to_splits(name, classes, split, root, {}, f"image folder {root}")
    classes = [c for c in subdirs if list_images(root / c)]
    empty = [c for c in subdirs if c not in classes]
    if classes and empty:  # dropping it would change the class list without a word
        raise DataError(
            f"image folder {root}: class folder {empty[0]!r} holds no images ({len(empty)} such folders); "
            "add images or remove the folder"
        )
    if not classes:
        raise DataError(f"image folder {root}: no class sub-folders with images (expected FOLDER/<class>/<image>)")
    rows: list[Row] = []
    for label, cls in enumerate(classes):
        rows += [(f"{cls}/{f}", label, cls) for f in list_images(root / cls)]
    return _to_splits(
        name, classes, split_by_class(rows, source=f"image folder {root}"), root, {}, f"image folder {root}"
    )


def _read_csv_rows(file: Path) -> list[tuple[int, dict[str, str]]]:
    try:
        with open(file, newline="", encoding="utf-8-sig") as f:
            rows = [(n, [c.strip() for c in r]) for n, r in enumerate(csv.reader(f), 1) if any(c.strip() for c in r)]
    except FileNotFoundError:
        raise DataError(f"CSV file {file} does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"CSV file {file}: cannot read ({exc})") from None
    if not rows:
        raise DataError(f"CSV file {file} is empty (expected rows of path,label)")
    header = [c.lower() for c in rows[0][1]]
    if ("path" in header) != ("label" in header):
        missing = "label" if "path" in header else "path"
        raise DataError(
            f"CSV file {file} line 1: the header has no {missing!r} column (expected path,label[,split][,true_label])"
        )
    if "path" in header and "label" in header:
        unknown = [c for c in header if c not in (*_CSV_COLUMNS, *_INFO_COLUMNS)]
        if unknown:
            known = ", ".join((*_CSV_COLUMNS, *_INFO_COLUMNS))
            raise DataError(f"CSV file {file}: unknown column {unknown[0]!r} (known: {known})")
        columns, rows = header, rows[1:]
    else:
        columns = list(_CSV_COLUMNS[: len(rows[0][1])])
    out = []
    for n, cells in rows:
        if len(cells) != len(columns) or len(columns) < 2:
            raise DataError(f"CSV file {file} line {n}: expected {len(columns)} columns ({','.join(columns)})")
        out.append((n, dict(zip(columns, cells, strict=True))))
    return out


def _check_rows(file: Path, base: Path, records: list[tuple[int, dict[str, str]]]) -> None:
    """Refuse what would silently bias a run: an image listed twice (sampled twice into the K shots, or in
    train and test: a leak), and a label with no training rows (a typo that would become a 0-shot class)."""
    first_line: dict[str, int] = {}
    for n, r in records:
        key = os.path.normpath(os.path.join(os.fsdecode(base.absolute()), r["path"]))
        if key in first_line:
            raise DataError(
                f"CSV file {file} line {n}: image {r['path']!r} is already listed on line {first_line[key]} "
                "(each image once: a repeat is sampled twice, or leaks between train and test)"
            )
        first_line[key] = n
    if records and "split" in records[0][1]:
        trained = {r["label"] for _, r in records if r["split"] == "train"}
        for n, r in records:
            if r["label"] not in trained and r["split"] in SPLIT_NAMES:
                raise DataError(
                    f"CSV file {file} line {n}: label {r['label']!r} has no 'train' rows (a typo? a class needs "
                    "training images)"
                )


def _labels(file: Path, records: list[tuple[int, dict[str, str]]]) -> list[str]:
    """The distinct labels as written, in class order: sorted, numerically if all are integers."""
    labels = sorted({r["label"] for _, r in records})
    if "" in labels:
        line = next(n for n, r in records if not r["label"])
        raise DataError(f"CSV file {file} line {line}: empty label")
    if all(lab.lstrip("-").isdigit() for lab in labels):
        labels.sort(key=int)
    return labels


def csv_labels(path: str | Path) -> tuple[str, ...]:
    """The labels of a CSV as written (before :func:`clean_classname`), in the class order :func:`load_csv` gives."""
    file = Path(path).expanduser()
    return tuple(_labels(file, _read_csv_rows(file)))


def load_csv(path: str | Path, name: str = "csv") -> DatasetSplits:
    """Read a CSV of ``path,label[,split][,true_label]`` rows; see the module docstring."""
    file = Path(path).expanduser()
    records = _read_csv_rows(file)
    base = file.parent
    labels = _labels(file, records)
    label_of = {c: i for i, c in enumerate(labels)}
    missing = [(n, r["path"]) for n, r in records if not (base / r["path"]).is_file()]
    if missing:
        examples = ", ".join(f"line {n}: {p}" for n, p in missing[:3])
        raise DataError(f"CSV file {file}: {len(missing)} image paths do not exist under {base}, e.g. {examples}")
    _check_rows(file, base, records)
    for n, r in records:
        if r.get("split", "train") not in SPLIT_NAMES:
            raise DataError(f"CSV file {file} line {n}: split {r['split']!r} is not one of train, val, test")
        if r.get("true_label") and r["true_label"] not in label_of:
            raise DataError(f"CSV file {file} line {n}: true_label {r['true_label']!r} is not one of the labels")
    rows = [(r["path"], label_of[r["label"]], r["label"]) for _, r in records]
    if "split" in records[0][1]:
        split: RawSplit = {key: [] for key in SPLIT_NAMES}
        order: dict[str, list[int]] = {key: [] for key in SPLIT_NAMES}
        for i, (_, r) in enumerate(records):
            split[r["split"]].append(rows[i])
            order[r["split"]].append(i)
        if not split["train"]:
            raise DataError(f"CSV file {file}: no rows with split 'train'")
    else:
        order = split_indices_by_class(
            [row[1] for row in rows], source=f"CSV file {file}", names=dict(enumerate(labels))
        )
        split = {key: [rows[i] for i in idx] for key, idx in order.items()}
    true: dict[str, list] = {}
    if "true_label" in records[0][1]:
        _check_scored_truths(file, records, order, given="split" in records[0][1])
        truth = [label_of[r["true_label"]] if r["true_label"] else None for _, r in records]
        true = {key: [truth[i] for i in order[key]] for key in SPLIT_NAMES}
    return _to_splits(name, labels, split, base, true, f"CSV file {file}")


def _check_scored_truths(
    file: Path, records: list[tuple[int, dict[str, str]]], order: dict[str, list[int]], given: bool
) -> None:
    """Refuse a validation or test row whose ``true_label`` says its ``label`` is wrong: those rows are scored
    against ``label``, so a model right about the image would be counted wrong (training rows may differ: that is
    the label noise). ``given``: the file has a ``split`` column (else the per-class split placed the row)."""
    scored = {i: key for key in ("val", "test") for i in order[key]}
    for i, (n, r) in enumerate(records):
        if i in scored and r["true_label"] and r["true_label"] != r["label"]:
            key, differs = scored[i], f"label {r['label']!r} differs from its true_label {r['true_label']!r}"
            if given:
                problem, remedy = f"a {key} row whose {differs}", "give it the true label"
            else:
                problem, remedy = f"{differs} and the per-class split puts it in {key}", "add a split column"
            raise DataError(
                f"CSV file {file} line {n}: {problem}; val and test rows are scored against label ({remedy}: only "
                "train rows may have noisy labels)"
            )
