"""Progress reporting: tqdm bars on a terminal, plain log lines otherwise (CI logs, files, pipes)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
log = logging.getLogger(__name__)

__all__ = ["interactive", "progress"]


def interactive() -> bool:
    """Whether progress bars make sense: stderr is a terminal."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def progress(
    items: Iterable[T],
    *,
    desc: str,
    total: int | None = None,
    leave: bool = True,
    enabled: bool | None = None,
    every: float = 30.0,
) -> Iterator[T]:
    """Iterate ``items`` with a tqdm bar on a terminal; elsewhere log a line at most every ``every`` seconds.

    ``enabled=None`` decides from :func:`interactive`. The fallback logs ``desc i/total`` at INFO.
    """
    if enabled is None:
        enabled = interactive()
    if enabled:
        yield from tqdm(items, desc=desc, total=total, leave=leave, dynamic_ncols=True)
        return
    last = time.monotonic()
    count = 0
    for count, item in enumerate(items, start=1):
        yield item
        now = time.monotonic()
        if now - last >= every:
            log.info("%s %d/%s", desc, count, total if total is not None else "?")
            last = now
