"""File helpers shared by the data modules: atomic JSON writes, JSON reads with one-line errors, image listing.

Every file the data layer writes (a created split file, a cached few-shot realisation) goes through
:func:`atomic_write_json` (:mod:`visprompt.fileio`), so a crash or an error never leaves a half-written file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from visprompt import fileio
from visprompt.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "atomic_write_json", "list_dirs", "list_images", "read_json", "read_lines"]

# File name endings read as images when a folder is listed (case-insensitive).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = None) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically; a filesystem error is a :class:`DataError` naming the file."""
    try:
        return fileio.atomic_write_json(path, obj, indent=indent)
    except OSError as exc:
        raise DataError(f"cannot write {path}: {exc.strerror or exc}") from None


def read_json(path: str | Path, what: str = "file") -> Any:
    """Parse a JSON file; a missing or malformed file raises :class:`DataError` naming it."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{what} {path}: invalid JSON at line {exc.lineno} column {exc.colno} ({exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{what} {path}: cannot read ({exc})") from None


def read_lines(path: str | Path, what: str = "file") -> list[str]:
    """The non-empty, stripped lines of a text file; a missing file raises :class:`DataError` naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{what} {path}: cannot read ({exc})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _visible(names: Iterable[str]) -> list[str]:
    return sorted(n for n in names if not n.startswith("."))


def list_dirs(folder: str | Path) -> list[str]:
    """Names of the visible sub-folders of ``folder``, sorted."""
    with os.scandir(folder) as it:
        return _visible(e.name for e in it if e.is_dir())


def list_images(folder: str | Path) -> list[str]:
    """Names of the visible image files directly inside ``folder``, sorted."""
    with os.scandir(folder) as it:
        return _visible(e.name for e in it if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))
