"""An OS-level lock on a folder that one process writes (a run directory, a sweep's out_dir).

:func:`folder_lock` takes ``fcntl.flock`` on ``<folder>/.lock`` without waiting; the kernel drops the lock
when the process ends, however it ends (kill -9 included), so a crashed writer never leaves a stale lock
behind. A second writer gets :class:`FolderLockedError`, a one-line error naming the folder and the process
that holds it. ``visprompt train`` and sweeps take the same lock on each run directory; a sweep also locks
its out_dir, so two sweeps never share one.

Where ``fcntl`` does not exist (Windows) the lock is a no-op with a logged warning.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from visprompt.errors import VispromptError

log = logging.getLogger(__name__)

__all__ = ["LOCK_NAME", "FolderLockedError", "folder_lock", "is_locked"]

LOCK_NAME = ".lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class FolderLockedError(VispromptError):
    """Another process holds the folder's lock."""


def _holder(lock_file: Path) -> str:
    try:
        pid = lock_file.read_text(errors="replace").strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


@contextmanager
def folder_lock(folder: str | Path, what: str = "run directory") -> Iterator[Path]:
    """Hold the lock of ``folder`` (created if needed) for the ``with`` block; raise when another process has it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock_file = folder / LOCK_NAME
    if fcntl is None:  # pragma: no cover
        log.warning("no fcntl on this system: %s is not locked against a second writer", folder)
        yield folder
        return
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise FolderLockedError(
                f"{what} {folder} is in use by another process{_holder(lock_file)}; wait for it to finish, "
                "or write elsewhere (--name / --out)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield folder
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def is_locked(folder: str | Path) -> bool:
    """Whether another process holds ``folder``'s lock now (False where locking is unavailable)."""
    lock_file = Path(folder) / LOCK_NAME
    if fcntl is None or not lock_file.is_file():
        return False
    fd = os.open(lock_file, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False
