"""The cheap part of ``visprompt data verify`` that ``train`` runs before it spends compute.

Every image a run will read (train, val and test) must be a regular file whose header PIL can parse: a missing,
empty, foreign or header-corrupt test image would otherwise surface only in the final evaluation, after all
training epochs. Headers only (no decoding); a file corrupt past its header still fails later, naming the file.

A process remembers the files whose header it has read successfully, by path, size, modification time and inode:
a sweep worker that trains run after run on the same images stats each file again but reads its header once. A
file replaced since (another size, time or inode) is read again; a failed check is never remembered.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from visprompt.data.records import DatasetSplits
from visprompt.errors import DataError

log = logging.getLogger(__name__)

__all__ = ["check_image_header", "check_run_data"]

_CHECKED: set[tuple[str, int, int, int, int]] = set()  # (path, size, mtime_ns, device, inode) of good headers
_CHECKED_MAX = 1_000_000  # forget everything past this many files (a bound on the memory, not a cache policy)


def check_image_header(path: str, *, remember: bool = False) -> str | None:
    """None when ``path`` is a regular file with an image header PIL reads, else what is wrong (a few words).

    ``remember``: skip the header of a file this process has already read successfully (same path, size,
    modification time and inode), and remember this one when it is good.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISDIR(st.st_mode):
        return "is a directory, not an image file"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file (a FIFO, socket or device)"
    if st.st_size == 0:
        return "is empty (0 bytes)"
    key = (path, st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino)
    if remember and key in _CHECKED:
        return None
    try:
        with Image.open(path) as image:
            if image.width < 1 or image.height < 1:
                return f"has size {image.width}x{image.height}"
    except Image.DecompressionBombError as exc:
        return f"is too large ({exc})"
    except (OSError, ValueError, SyntaxError) as exc:  # PIL: UnidentifiedImageError is an OSError
        return f"is not a readable image ({type(exc).__name__})"
    if remember:
        if len(_CHECKED) >= _CHECKED_MAX:
            _CHECKED.clear()
        _CHECKED.add(key)
    return None


def _check_remembered(path: str) -> str | None:
    return check_image_header(path, remember=True)


def _first_problems(paths: Iterable[str], workers: int) -> list[tuple[str, str]]:
    paths = list(paths)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, 16))) as pool:
        results = pool.map(_check_remembered, paths, chunksize=64)
        return [(p, r) for p, r in zip(paths, results, strict=True) if r is not None]


def check_run_data(splits: DatasetSplits, workers: int = 4) -> None:
    """Raise a one-line :class:`DataError` when any image of the run's splits is missing or not an image."""
    paths = list(dict.fromkeys(s.path for key in ("train", "val", "test") for s in getattr(splits, key)))
    problems = _first_problems(paths, workers)
    if problems:
        path, what = problems[0]
        raise DataError(
            f"{splits.name}: {len(problems)} of the {len(paths)} images this run reads are unusable, e.g. {path} "
            f"{what} (found before training; `visprompt data verify` lists them all)"
        )
    log.debug("%s: %d image headers checked", splits.name, len(paths))
