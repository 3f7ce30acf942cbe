"""The run directory: every file a run leaves behind, each written atomically.

Layout (docs/architecture.md)::

    runs/<name>/
      config.yaml              the resolved RunConfig
      split.json               the realised few-shot split and noisy labels
      log.jsonl                one JSON line per completed epoch
      metrics.json             final test metrics, timings, parameter counts, versions, git SHA
      checkpoint.safetensors   trainable parameters only
      state.pt                 parameters, optimizer, scheduler, RNG and method state of the last completed epoch
                               (resume)
      status                   running | done | failed
      error.txt                the error of a failed run (message and traceback)

Every write goes to a temporary file in the same folder and is moved into place with ``os.replace``, so a
reader (or a resumed run) never sees half a file. The checkpoint and ``state.pt`` carry the epoch they
belong to, and ``state.pt`` holds its own copy of the parameters: a run killed between the two writes (the
checkpoint of epoch e written, the state still that of e - 1) resumes from the state's epoch with the state's
parameters. ``log.jsonl`` is cut back to the resumed epoch, so an interruption loses at most one epoch.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from visprompt.errors import DataError
from visprompt.fileio import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

__all__ = ["RunDir", "RunFileError"]

RUNNING, DONE, FAILED = "running", "done", "failed"


class RunFileError(DataError):
    """A file of a run directory is corrupt, truncated or not what visprompt wrote."""


def _bad(path: Path, what: str, exc: BaseException | None = None) -> RunFileError:
    detail = ""
    if exc is not None:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        first = lines[0] if lines else type(exc).__name__
        if "weights_only" in first or "Weights only load failed" in first:  # torch's advice is never ours
            first = "not a file visprompt wrote: it is read as tensors and plain values only"
        detail = f" ({first[:200]})"
    return RunFileError(
        f"{path}: {what}{detail}; run `visprompt train` with --restart to start the run afresh, or delete {path.parent}"
    )


class RunDir:
    """Read and write the files of one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ---------------------------------------------------------------------------------------- paths
    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def split_file(self) -> Path:
        return self.path / "split.json"

    @property
    def log_file(self) -> Path:
        return self.path / "log.jsonl"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.json"

    @property
    def checkpoint_file(self) -> Path:
        return self.path / "checkpoint.safetensors"

    @property
    def state_file(self) -> Path:
        return self.path / "state.pt"

    @property
    def status_file(self) -> Path:
        return self.path / "status"

    @property
    def error_file(self) -> Path:
        return self.path / "error.txt"

    # --------------------------------------------------------------------------------------- status
    def status(self) -> str | None:
        """``running``, ``done``, ``failed``, or None for a fresh directory."""
        if not self.status_file.is_file():
            return None
        text = self.status_file.read_bytes().decode("utf-8", errors="replace").strip()
        word = text.split()[0] if text else None
        if word not in (RUNNING, DONE, FAILED, None):
            log.warning("%s: unknown status %r; treating the run as unfinished", self.status_file, text[:40])
            return FAILED
        return word

    def is_done(self) -> bool:
        return self.status() == DONE

    def set_status(self, status: str, error: str | None = None) -> None:
        if status not in (RUNNING, DONE, FAILED):
            raise ValueError(f"unknown run status {status!r}")
        if error is not None:
            atomic_write_text(self.error_file, error if error.endswith("\n") else error + "\n")
        elif status != FAILED:
            self.error_file.unlink(missing_ok=True)
        atomic_write_text(self.status_file, status + "\n")

    # ------------------------------------------------------------------------------------ plain files
    def write_text(self, name: str, text: str) -> None:
        atomic_write_text(self.path / name, text)

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_json(self.path / name, obj)

    def read_json(self, name: str) -> Any:
        """A JSON file of the run (a corrupt one is a one-line :class:`RunFileError`)."""
        path = self.path / name
        try:
            return json.loads(path.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _bad(path, "not valid JSON", exc) from None

    # ------------------------------------------------------------------------------------------- log
    def read_log(self) -> list[dict[str, Any]]:
        """The epoch records of ``log.jsonl`` (a torn last line, from a crash mid-write, is dropped)."""
        if not self.log_file.is_file():
            return []
        records = []
        for line in self.log_file.read_bytes().splitlines():
            try:
                record = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                record = None
            if isinstance(record, dict):
                records.append(record)
            elif line.strip():
                log.warning("%s: dropping an unreadable log line", self.log_file)
        return records

    def append_log(self, record: Mapping[str, Any]) -> None:
        """Add one epoch record (the whole file is rewritten atomically: logs are short)."""
        records = [*self.read_log(), dict(record)]
        atomic_write_text(self.log_file, "".join(json.dumps(r) + "\n" for r in records))

    def truncate_log(self, epochs: int) -> None:
        """Keep only the records of the first ``epochs`` epochs (those with ``epoch <= epochs``)."""
        kept = [r for r in self.read_log() if isinstance(r.get("epoch"), int) and r["epoch"] <= epochs]
        atomic_write_text(self.log_file, "".join(json.dumps(r) + "\n" for r in kept))

    # ------------------------------------------------------------------------------------ checkpoint
    def save_checkpoint(self, params: Mapping[str, torch.Tensor], epoch: int, state: Mapping[str, Any]) -> None:
        """Write the trainable parameters (safetensors) and the resume state of completed epoch ``epoch``.

        The state carries a copy of the parameters (``params``), so that it can be resumed on its own.
        """
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in params.items()}
        with atomic_path(self.checkpoint_file) as tmp:
            save_file(tensors, str(tmp), metadata={"epoch": str(epoch), "format": "visprompt-trainable-v1"})
        buffer = io.BytesIO()
        torch.save({"epoch": epoch, **state, "params": tensors}, buffer)
        atomic_write_bytes(self.state_file, buffer.getvalue())

    def load_checkpoint(self, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """The trainable parameters saved by :meth:`save_checkpoint`."""
        try:
            return load_file(str(self.checkpoint_file), device=str(device))
        except Exception as exc:  # safetensors raises its own types for truncated or foreign files
            raise _bad(self.checkpoint_file, "cannot read the checkpoint", exc) from None

    def checkpoint_epoch(self) -> int | None:
        """The epoch recorded in the checkpoint's metadata (None without a checkpoint)."""
        if not self.checkpoint_file.is_file():
            return None
        try:
            with safe_open(str(self.checkpoint_file), "pt") as f:
                return int((f.metadata() or {}).get("epoch", -1))
        except Exception as exc:
            raise _bad(self.checkpoint_file, "cannot read the checkpoint", exc) from None

    def load_state(self) -> dict[str, Any] | None:
        """The resume state (``epoch``, ``params`` and what was saved), or None when there is nothing to resume.

        The checkpoint is written before the state; a crash between the two leaves a checkpoint one epoch
        ahead of the state. The state's own parameters resume it exactly from its epoch; a state without them
        (written before they were saved there) cannot be, and that case warns and returns None (fresh start).
        """
        if not (self.state_file.is_file() and self.checkpoint_file.is_file()):
            return None
        try:  # never weights_only=False: a run directory may come from anywhere
            state = torch.load(self.state_file, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise _bad(self.state_file, "cannot read the resume state", exc) from None
        if not isinstance(state, dict) or not isinstance(state.get("epoch"), int):
            raise _bad(self.state_file, "not a resume state written by visprompt")
        if state.get("epoch") != self.checkpoint_epoch():
            if isinstance(state.get("params"), dict):
                log.warning("%s: the checkpoint is ahead of the resume state (interrupted between the two "
                            "writes); resuming after epoch %d from the state", self.path, state["epoch"])  # fmt: skip
                return state
            log.warning("%s: checkpoint and resume state disagree on the epoch; starting afresh", self.path)
            return None
        return state
