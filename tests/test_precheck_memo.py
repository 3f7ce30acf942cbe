"""The run's image pre-check reads each good file's header once per process (and again when the file changes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from visprompt.data import precheck
from visprompt.data.records import DatasetSplits, Sample
from visprompt.errors import DataError


def _splits(paths: list[Path]) -> DatasetSplits:
    samples = tuple(Sample(i, str(p), 0, 0, "a") for i, p in enumerate(paths))
    return DatasetSplits("memo", ("a",), samples, (), samples[:1])


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = Image.open

    def counting(path, *args, **kwargs):
        calls.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(precheck.Image, "open", counting)
    monkeypatch.setattr(precheck, "_CHECKED", set())
    return calls


def test_good_headers_are_read_once_and_again_after_a_change(tmp_path: Path, opened: list[str]) -> None:
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (4, 4), (i, 0, 0)).save(paths[-1])
    precheck.check_run_data(_splits(paths))
    assert sorted(opened) == sorted(map(str, paths))
    opened.clear()
    precheck.check_run_data(_splits(paths))
    assert opened == []  # remembered
    # the same file replaced by garbage of another size and time: read again, and refused
    paths[1].write_bytes(b"not an image at all")
    os.utime(paths[1], ns=(1, 1))
    with pytest.raises(DataError, match="1 of the 3 images"):
        precheck.check_run_data(_splits(paths))
    assert opened == [str(paths[1])]


def test_a_bad_header_is_never_remembered(tmp_path: Path, opened: list[str]) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG garbage")
    for _ in range(2):
        with pytest.raises(DataError, match="not a readable image"):
            precheck.check_run_data(_splits([bad]))
    assert opened == [str(bad), str(bad)]
    assert precheck.check_image_header(str(bad)) is not None  # the plain check does not remember either
