"""What a run's numbers were computed from beyond its settings: the dataset's content and the backbone's.

config.yaml names the data and the weights by path. Relabelling rows of a CSV in place, adding images to a class
folder or replacing a weights file at the same path keeps every setting, and changes what a run would compute:
a finished run skipped as done, or an unfinished one resumed, would then report numbers under the name of data or
weights it never saw. A run records, when it starts, ``inputs.json``:

* ``data``: :func:`~visprompt.data.pipeline.splits_fingerprint` of the whole dataset as loaded (every split's
  indices, labels and file names, independent of where the data root lives, so a moved dataset still matches);
* ``backbone``: :func:`~visprompt.engine.store.backbone_checksum` of the frozen CLIP (its tensors, model config,
  activation and normalisation);
* ``files``: size and modification time of the backbone files named by path (a model-config JSON, a weights file,
  a folder of them), so that a skipped run loads the backbone again only when one of them changed.

:func:`inputs_change` compares a run's record with the inputs as they are now. A run made before runs recorded
their inputs has no record and is not checked.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from visprompt.config import RunConfig
from visprompt.data.datasets import load_dataset
from visprompt.data.pipeline import splits_fingerprint
from visprompt.engine.store import backbone_checksum
from visprompt.errors import VispromptError

log = logging.getLogger(__name__)

__all__ = ["INPUTS_FILE", "DataFingerprints", "inputs_change", "inputs_record", "touched_files"]

INPUTS_FILE = "inputs.json"
FORMAT = "visprompt-inputs/1"


class DataFingerprints:
    """:func:`splits_fingerprint` of each dataset a config names, loaded once per (dataset, root, path)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str, str | None], str] = {}

    def __call__(self, cfg: RunConfig) -> str:
        d = cfg.data
        key = (d.dataset, str(d.root), d.path)
        if key not in self._seen:
            self._seen[key] = splits_fingerprint(load_dataset(d.dataset, d.root, d.path))
        return self._seen[key]


def _backbone_files(cfg: RunConfig) -> list[dict[str, Any]]:
    """Size and mtime of the backbone files that ``cfg`` names by path (none for a registered name or tag)."""
    files: list[Path] = []
    for value in (cfg.backbone.arch, cfg.backbone.weights):
        path = Path(str(value)).expanduser() if value else None
        if path is not None and path.is_file():
            files.append(path)
        elif path is not None and path.is_dir():  # the testbed's folder: config, weights and vocabulary
            files.extend(sorted(p for p in path.iterdir() if p.is_file()))
    return [_stat(p) for p in files]


def _stat(path: Path) -> dict[str, Any]:
    path = path.absolute()
    try:
        st = os.stat(path)
    except OSError:
        return {"path": str(path), "size": None, "mtime_ns": None}
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def inputs_record(cfg: RunConfig, clip: Any, data: DataFingerprints | None = None) -> dict[str, Any]:
    """The ``inputs.json`` of a run of ``cfg`` with the frozen CLIP ``clip``."""
    return {
        "format": FORMAT,
        "data": (data or DataFingerprints())(cfg),
        "backbone": backbone_checksum(clip),
        "files": _backbone_files(cfg),
    }


def touched_files(record: Any) -> list[str]:
    """The backbone files of a run's ``record`` whose size or modification time differ now (their content may not)."""
    files = record.get("files", []) if isinstance(record, dict) else []
    return [f["path"] for f in files if _stat(Path(f["path"])) != f]


def inputs_change(
    cfg: RunConfig,
    record: Any,
    clip: Any = None,
    data: DataFingerprints | None = None,
    load_clip: Any = None,
) -> str | None:
    """What differs between a run's ``record`` and the inputs ``cfg`` names now, in a few words; None if nothing.

    ``clip``: the backbone as loaded now (compared whatever its files say); without it, the backbone is loaded with
    ``load_clip()`` only when one of its recorded files changed size or modification time.
    """
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return f"{INPUTS_FILE} is not a {FORMAT} record"
    d = cfg.data
    where = f"data.path {d.path}" if d.path else f"data.root {d.root}"
    try:
        now = (data or DataFingerprints())(cfg)
    except VispromptError as exc:  # not mounted here: nothing to compare with (a resumed run reads its split.json)
        log.warning("cannot check the data of this run against data.dataset %s (%s): %s", d.dataset, where, exc)
        now = record.get("data")
    if now != record.get("data"):
        return f"the images or labels of data.dataset {d.dataset} ({where}) changed since"
    touched = touched_files(record)
    if clip is None and touched and load_clip is not None:
        log.info("%s changed size or time: comparing the backbone's checksum", touched[0])
        clip = load_clip()
    if clip is not None and backbone_checksum(clip) != record.get("backbone"):
        named = touched[0] if touched else f"backbone.arch {cfg.backbone.arch}, backbone.weights {cfg.backbone.weights}"
        return f"the backbone ({named}) changed since"
    return None
