"""Check a dataset on disk: class count and split sizes against the published numbers, missing and unreadable
images, classes without training images. The library returns a :class:`VerifyReport`; the CLI prints it.

Verifying never writes: a dataset whose split file is absent is split in memory (the file is created by the
first real load).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from visprompt.data.datasets import DATASETS, DatasetSpec, ExpectedCounts, dataset_dir, get_spec, load_dataset
from visprompt.data.records import DatasetSplits
from visprompt.errors import DataError

__all__ = ["VerifyReport", "check_image", "present_datasets", "verify_dataset"]

logger = logging.getLogger(__name__)


@dataclass
class VerifyReport:
    """What :func:`verify_dataset` found; ``ok`` when ``problems`` is empty."""

    dataset: str
    root: str
    num_classes: int
    counts: dict[str, int]  # "train" / "val" / "test" -> number of images
    expected: ExpectedCounts | None
    num_images: int  # distinct image files listed
    missing: list[str] = field(default_factory=list)  # listed but absent
    unreadable: list[str] = field(default_factory=list)  # present but not a readable image
    problems: list[str] = field(default_factory=list)  # one line each

    @property
    def ok(self) -> bool:
        return not self.problems

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(item, found, expected, status) rows for a table."""
        exp = self.expected._asdict() if self.expected else {}
        out = []
        for item, found in (("classes", self.num_classes), *self.counts.items()):
            want = exp.get(item)
            status = "ok" if want is None or want == found else "MISMATCH"
            out.append((item, f"{found:,}", "-" if want is None else f"{want:,}", status))
        bad = len(self.missing) + len(self.unreadable)
        status = "ok" if not bad else f"{len(self.missing):,} missing, {len(self.unreadable):,} unreadable"
        out.append(("images", f"{self.num_images:,}", "-", status))
        return out


def check_image(path: str, decode: bool = False) -> str | None:
    """None if ``path`` is a readable image, else ``"missing"`` or ``"unreadable"``."""
    if not os.path.isfile(path):
        return "missing"
    try:
        with Image.open(path) as image:
            image.load() if decode else image.verify()
    except Exception:  # PIL raises many types for corrupt files
        return "unreadable"
    return None


def present_datasets(root: str | Path) -> list[str]:
    """Registered benchmark datasets whose folder exists under ``root``; a missing root raises :class:`DataError`."""
    if not Path(root).expanduser().is_dir():
        raise DataError(f"data root {root} does not exist (expected a folder holding one folder per dataset)")
    found = []
    for name in DATASETS:
        spec: DatasetSpec = DATASETS.get(name)
        if not spec.folder:
            continue
        try:
            dataset_dir(spec, root)
        except DataError:
            continue
        found.append(name)
    return found


def _compare(report: VerifyReport, splits: DatasetSplits) -> None:
    exp = report.expected
    if exp is not None:
        if splits.num_classes != exp.classes:
            report.problems.append(f"{splits.num_classes} classes, expected {exp.classes}")
        for key, found in report.counts.items():
            want = getattr(exp, key)
            if found != want:
                report.problems.append(f"{key} split: {found:,} images, expected {want:,}")
    present = {s.label for s in splits.train}
    for label, name in enumerate(splits.classnames):
        if label not in present:
            report.problems.append(f"class {name!r} (label {label}) has no training images")


def verify_dataset(
    name: str,
    root: str | Path = "DATA",
    path: str | None = None,
    check_images: bool = True,
    decode: bool = False,
    workers: int = 8,
) -> VerifyReport:
    """Load ``name`` without writing anything and check it; see the module docstring.

    ``check_images``: open every listed image (``decode``: decode it fully, slower) in ``workers`` threads;
    otherwise only check that each file exists. A dataset that cannot be loaded at all (missing root or folder,
    wrong layout, malformed split file) raises the loader's one-line error.
    """
    spec = get_spec(name)
    splits = load_dataset(spec.name, root, path, save_split=False)
    counts = {key: len(getattr(splits, key)) for key in ("train", "val", "test")}
    paths = list(dict.fromkeys(s.path for key in ("train", "val", "test") for s in getattr(splits, key)))
    report = VerifyReport(spec.name, str(root), splits.num_classes, counts, spec.expected, len(paths))
    _compare(report, splits)
    if check_images:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = pool.map(lambda p: check_image(p, decode), paths, chunksize=256)
            for i, (p, result) in enumerate(zip(paths, results, strict=True), 1):
                if result == "missing":
                    report.missing.append(p)
                elif result == "unreadable":
                    report.unreadable.append(p)
                if i % 20000 == 0:
                    logger.info("%s: checked %d / %d images", spec.name, i, len(paths))
    else:
        report.missing = [p for p in paths if not os.path.isfile(p)]
    if report.missing:
        report.problems.append(f"{len(report.missing):,} images missing, e.g. {report.missing[0]}")
    if report.unreadable:
        report.problems.append(f"{len(report.unreadable):,} images unreadable, e.g. {report.unreadable[0]}")
    return report
