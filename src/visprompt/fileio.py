"""Atomic file writes: what visprompt writes is either the whole new file or the old one, never half a file.

Each write goes to a temporary file in the target's folder and is moved over the target with
:func:`os.replace`; on any error (or Ctrl-C) the temporary file is removed and the target is untouched. Files
get the usual permissions (``0o666`` less the umask), not the private ``0o600`` of :func:`tempfile.mkstemp`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_json", "atomic_write_text"]


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it over ``path``, on failure remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2, **dumps: Any) -> Path:
    """``obj`` as JSON (``dumps`` goes to :func:`json.dumps`, e.g. ``default=str``) with a final newline."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, **dumps) + "\n")


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it; set straight back
    os.umask(mask)
    return mask
