"""Sweep progress on stderr: a tqdm bar on a terminal, one count line per change elsewhere (CI logs, files)."""

from __future__ import annotations

import sys
from typing import Any

from visprompt.sweep.runner import SweepProgress

__all__ = ["ProgressDisplay"]


class ProgressDisplay:
    """A tqdm bar (done + failed of total) with the counts as postfix on a terminal; count lines otherwise."""

    def __init__(self, interactive: bool | None = None) -> None:
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self.bar: Any = None
        self.last = ""

    def __call__(self, p: SweepProgress) -> None:
        line = str(p)
        if line == self.last:
            return
        self.last = line
        if not self.interactive:
            print(f"sweep: {line}", file=sys.stderr, flush=True)
            return
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=p.total, desc="sweep", unit="run", dynamic_ncols=True)
        self.bar.n = p.done + p.failed
        self.bar.set_postfix_str(f"running {p.running}, failed {p.failed}, remaining {p.remaining}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
