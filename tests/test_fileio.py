"""visprompt.fileio: atomic writes keep the old file on failure and give files the usual permissions."""

from __future__ import annotations

import json
import os
import stat

import pytest

from visprompt.data.files import atomic_write_json as data_write_json
from visprompt.errors import DataError
from visprompt.fileio import atomic_path, atomic_write_json, atomic_write_text


def test_written_files_follow_the_umask_not_mkstemps_private_mode(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a.txt", "hello")
        os.umask(0o077)
        private = atomic_write_text(tmp_path / "b.txt", "hello")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(private.stat().st_mode) == 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path) -> None:
    path = atomic_write_json(tmp_path / "m.json", {"top1": 1.0})
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as tmp:
        tmp.write_text("{half")
        raise KeyboardInterrupt
    assert json.loads(path.read_text()) == {"top1": 1.0}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_json_options_and_parent_folders(tmp_path) -> None:
    path = atomic_write_json(tmp_path / "deep" / "er" / "s.json", {"p": tmp_path}, default=str)
    assert path.read_text().endswith("}\n") and json.loads(path.read_text()) == {"p": str(tmp_path)}


def test_data_layer_reports_an_unwritable_target_as_a_data_error(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DataError, match=r"cannot write .*file/split\.json"):
        data_write_json(blocker / "split.json", {})
