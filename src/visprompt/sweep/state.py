"""What a sweep keeps on disk: run status, an append-only event log, a summary, and config drift checks.

* ``<run dir>/status`` (written by the run function): ``running``, ``done`` or ``failed``; the source of truth.
* ``<out_dir>/sweep-events.jsonl``: one JSON line per started, finished, failed, skipped or interrupted attempt.
* ``<out_dir>/sweep.json``: the last sweep's view of every run (status, attempts, last error, axis values).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visprompt.config import load_run_config
from visprompt.engine.sameconfig import config_differences, flat_config
from visprompt.errors import ConfigError, VispromptError
from visprompt.fileio import atomic_write_json
from visprompt.sweep.grid import SweepRun

__all__ = [
    "STALE_REMEDY",
    "EventLog",
    "RunOutcome",
    "check_finished",
    "config_change",
    "flat_config",
    "read_status",
    "refuse_stale",
    "write_summary",
]


STALE_REMEDY = "delete those run directories, or choose another out_dir (--out)"  # the sweep's, for stale runs


@dataclass(frozen=True)
class RunOutcome:
    name: str  # run directory relative to the sweep's out_dir
    status: str  # done | failed | skipped (done before this sweep started)
    attempts: int  # tasks submitted for it by this sweep
    error: str | None = None  # the last attempt's error, one line


def read_status(run_dir: str | Path) -> str | None:
    """The first word of ``<run_dir>/status`` (running, done, failed), or None when there is none."""
    path = Path(run_dir) / "status"
    try:
        text = path.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return text.split()[0] if text else None


def config_change(run: SweepRun) -> str | None:
    """``"<run>: <key> <saved> -> <now>"`` when the run's saved config differs from its grid config (outside
    where it runs), or says why it cannot be read; None when they agree."""
    try:
        saved = load_run_config(run.path / "config.yaml")
    except (ConfigError, OSError) as exc:
        return f"{run.name}: config.yaml unreadable ({exc})"
    diffs = config_differences(saved, run.config)
    return f"{run.name}: {diffs[0]}" if diffs else None


class _Inputs:
    """:func:`~visprompt.engine.inputs.inputs_change` over many runs: each dataset loaded once, each backbone
    loaded (only where one of its files changed) once."""

    def __init__(self) -> None:
        from visprompt.engine.inputs import DataFingerprints

        self.data = DataFingerprints()
        self.clips: dict[tuple[Any, ...], Any] = {}

    def change(self, run: SweepRun, load_backbone: bool = True) -> str | None:
        """``"<run>: <what changed>"``, or None; without ``load_backbone``, the backbone is not compared."""
        from visprompt.engine.inputs import INPUTS_FILE, inputs_change

        file = run.path / INPUTS_FILE
        if not file.is_file():  # made before runs recorded their inputs
            return None
        try:
            record = json.loads(file.read_text())
        except (OSError, ValueError) as exc:
            return f"{run.name}: {INPUTS_FILE} unreadable ({exc})"
        load = (lambda: self._clip(run.config)) if load_backbone else None
        change = inputs_change(run.config, record, data=self.data, load_clip=load)
        return f"{run.name}: {change}" if change else None

    @staticmethod
    def touched(run: SweepRun) -> list[str]:
        """The backbone files that changed size or modification time since the run recorded its inputs."""
        from visprompt.engine.inputs import INPUTS_FILE, touched_files

        try:
            return touched_files(json.loads((run.path / INPUTS_FILE).read_text()))
        except (OSError, ValueError):
            return []

    def _clip(self, cfg: Any) -> Any:
        from visprompt.engine.build import load_clip
        from visprompt.engine.runtime import resolve_device

        b = cfg.backbone
        key = (b.arch, b.weights, b.cache_dir, b.sha256, None if b.weights else cfg.run.seed)  # seed: random init
        if key not in self.clips:
            self.clips[key] = load_clip(cfg, resolve_device("cpu"))
        return self.clips[key]


def refuse_stale(runs: Iterable[SweepRun], where: str, remedy: str) -> None:
    """Raise :class:`ConfigError` when a finished run (status ``done``) has a saved config that differs from the
    config its grid gives it now, or was made from other inputs (the dataset's images or labels, the backbone's
    weights: :mod:`visprompt.engine.inputs`): its results would be reported under settings or data it was not run
    with.

    ``where`` starts the one-line message (``"sweep runs/x"``), ``remedy`` ends it (what the user can do)."""
    finished = [run for run in runs if read_status(run.path) == "done"]
    stale = [change for run in finished if (change := config_change(run))]
    if not stale:
        inputs = _Inputs()
        stale = [change for run in finished if (change := inputs.change(run))]
    if stale:
        raise ConfigError(
            f"{where}: {len(stale)} finished runs do not match the settings or inputs the grid gives now, "
            f"e.g. {stale[0]}; "
            f"{remedy}"
        )


def check_finished(runs: Iterable[SweepRun]) -> tuple[dict[str, str], dict[str, str]]:
    """:func:`refuse_stale`'s check run by run, without loading a backbone (``sweep --dry-run``).

    Returns the finished runs it refuses (name -> ``"<run>: <what differs>"``: the saved config, the dataset's
    images or labels; a dataset not mounted here is no difference, :func:`~visprompt.engine.inputs.inputs_change`),
    and the other finished runs whose backbone files changed size or modification time since (name -> the first such
    file): refused when the backbone's checksum changed too.
    """
    inputs = _Inputs()
    stale: dict[str, str] = {}
    touched: dict[str, str] = {}
    for run in runs:
        if read_status(run.path) != "done":
            continue
        try:
            change = config_change(run) or inputs.change(run, load_backbone=False)
        except VispromptError as exc:  # an unreadable inputs.json or config: the sweep stops on it
            change = f"{run.name}: {exc}"
        if change:
            stale[run.name] = change
        elif files := inputs.touched(run):
            touched[run.name] = files[0]
    return stale, touched


class EventLog:
    """Append-only JSON lines: one per started, finished, failed, skipped or interrupted run attempt."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, run: str, event: str, **fields: Any) -> None:
        record = {"time": round(time.time(), 3), "run": run, "event": event, **fields}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def write_summary(path: Path, runs: Sequence[SweepRun], outcomes: list[RunOutcome], interrupted: bool) -> None:
    """``sweep.json``: every run with its status, attempts, last error and axis values (atomic write)."""
    by_name = {o.name: o for o in outcomes}
    records = []
    for run in runs:
        outcome = by_name.get(run.name) or RunOutcome(run.name, read_status(run.path) or "pending", 0)
        records.append({**dataclasses.asdict(outcome), "assignment": run.assignment})
    summary = {"interrupted": interrupted, "total": len(runs), "runs": records}
    atomic_write_json(path, summary, default=str)
