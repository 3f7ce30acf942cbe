"""Check a dataset on disk for what a run would trip on: class count and split sizes against the published
numbers, missing and unreadable images, unusual images (16-bit, CMYK, palette, alpha, animated: ``notes``),
classes without images in a split, the same image listed twice or in train and val/test (by path, and by
content hash when images are checked), labels outside the class list. The library returns a
:class:`VerifyReport`; the CLI prints it. ``visprompt train`` runs the cheap part (every image's header) itself.

Verifying never writes: a dataset whose split file is absent is split in memory (the file is created by the
first real load).
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from visprompt.data.datasets import DATASETS, DatasetSpec, ExpectedCounts, dataset_dir, get_spec, load_dataset
from visprompt.data.records import DatasetSplits
from visprompt.errors import DataError

__all__ = ["VerifyReport", "check_image", "inspect_image", "present_datasets", "verify_dataset"]

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
    notes: list[str] = field(default_factory=list)  # unusual but handled: "<path>: mode I;16" (not a problem)

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
    return inspect_image(path, decode)[0]


def inspect_image(path: str, decode: bool = False, digest: bool = False) -> tuple[str | None, str | None, str | None]:
    """(``None``/``"missing"``/``"unreadable"``, a note on an unusual image or None, the content SHA-256 or None).

    ``decode`` decodes the image as a run would (:func:`visprompt.data.loader.read_image`); ``digest`` hashes
    the file's bytes (to find the same image under two names).
    """
    from visprompt.data.imagemodes import describe_unusual
    from visprompt.data.precheck import check_image_header

    problem = check_image_header(path)
    if problem is not None:
        return ("missing" if problem == "does not exist" else "unreadable"), None, None
    note = sha = None
    try:
        with Image.open(path) as image:
            note = describe_unusual(image)
            if decode:
                from visprompt.data.loader import to_rgb

                image.load()
                to_rgb(image, path)
            else:
                image.verify()
        if digest:
            sha = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except Exception:  # PIL raises many types for corrupt files; DataError for modes without a known range
        return "unreadable", note, None
    return None, note, sha


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
    for key in ("val", "test"):
        split = getattr(splits, key)
        if split:
            here = {s.label for s in split}
            absent = [n for i, n in enumerate(splits.classnames) if i not in here]
            if absent:
                report.notes.append(f"{key} split: {len(absent)} classes have no images, e.g. {absent[0]!r}")
    k = splits.num_classes
    for key in ("train", "val", "test"):
        bad = [s for s in getattr(splits, key) if not 0 <= s.label < k]
        if bad:
            report.problems.append(f"{key} split: {len(bad)} labels outside the {k} classes, e.g. {bad[0].path}")
        paths = [s.path for s in getattr(splits, key)]
        repeats = len(paths) - len(set(paths))
        if repeats:
            first = next(p for i, p in enumerate(paths) if p in paths[:i])
            report.problems.append(f"{key} split: {repeats} images listed more than once, e.g. {first}")
    train = {s.path for s in splits.train}
    for key in ("val", "test"):
        both = [s.path for s in getattr(splits, key) if s.path in train]
        if both:
            report.problems.append(f"{len(both)} images are in both train and {key} (a leak), e.g. {both[0]}")


def _content_overlap(report: VerifyReport, splits: DatasetSplits, digests: dict[str, str]) -> None:
    """The same image content under two paths: in train and val/test (a leak), or twice within train."""
    train: dict[str, str] = {}
    for s in splits.train:
        sha = digests.get(s.path)
        if sha is None:
            continue
        if sha in train and train[sha] != s.path:
            report.problems.append(f"train split: {s.path} has the same content as {train[sha]} (a duplicate)")
            break
        train.setdefault(sha, s.path)
    for key in ("val", "test"):
        for s in getattr(splits, key):
            sha = digests.get(s.path)
            if sha in train and train[sha] != s.path:
                report.problems.append(f"{key} image {s.path} has the same content as train image {train[sha]}")
                break


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
        digests: dict[str, str] = {}
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = pool.map(lambda p: inspect_image(p, decode, digest=True), paths, chunksize=256)
            for i, (p, (result, note, sha)) in enumerate(zip(paths, results, strict=True), 1):
                if result == "missing":
                    report.missing.append(p)
                elif result == "unreadable":
                    report.unreadable.append(p)
                if note:
                    report.notes.append(f"{p}: {note}")
                if sha:
                    digests[p] = sha
                if i % 20000 == 0:
                    logger.info("%s: checked %d / %d images", spec.name, i, len(paths))
        _content_overlap(report, splits, digests)
    else:
        report.missing = [p for p in paths if not os.path.isfile(p)]
    if report.missing:
        report.problems.append(f"{len(report.missing):,} images missing, e.g. {report.missing[0]}")
    if report.unreadable:
        report.problems.append(f"{len(report.unreadable):,} images unreadable, e.g. {report.unreadable[0]}")
    return report
