"""Data under hostile conditions: image modes, CSV content, empty classes, odd file names, verify's new checks,
read-only folders (docs/reliability.md)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visprompt.cli import main
from visprompt.data.custom import load_csv, load_image_folder
from visprompt.data.loader import read_image
from visprompt.data.pipeline import prepare_fewshot, splits_fingerprint
from visprompt.data.verify import inspect_image, verify_dataset
from visprompt.errors import DataError

GREY = np.linspace(0, 1, 32 * 32).reshape(32, 32)  # a ramp: mean 0.5


@pytest.mark.parametrize(
    "make",
    [
        lambda: Image.fromarray((GREY * 65535).astype(np.uint16)),  # 16-bit PNG: I;16
        lambda: Image.fromarray((GREY * 65535).astype(np.int32), "I"),  # 16-bit data in mode I
        lambda: Image.fromarray((GREY * 255).astype(np.uint8)).convert("CMYK"),
        lambda: Image.fromarray((GREY * 255).astype(np.uint8)).convert("P"),
        lambda: Image.fromarray((GREY * 255).astype(np.uint8)).convert("LA"),
        lambda: Image.fromarray(GREY.astype(np.float32), "F"),
    ],
    ids=["I;16", "I", "CMYK", "P", "LA", "F"],
)
def test_every_mode_decodes_to_its_true_values(tmp_path, make) -> None:
    image = make()
    path = tmp_path / ("x.tiff" if image.mode in ("CMYK", "F", "I") else "x.png")
    image.save(path)
    rgb = np.asarray(read_image(str(path))).astype(float) / 255
    assert rgb.shape == (32, 32, 3)
    assert abs(rgb.mean() - 0.5) < 0.02 and rgb.min() < 0.05 and rgb.max() > 0.95  # not white, not clipped


def test_16_bit_png_is_not_white_and_verify_notes_it(tmp_path) -> None:
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((8, 8), 1000, np.uint16)).save(path)  # dark: 1000 / 65535
    assert np.asarray(read_image(str(path))).max() <= 5
    status, note, sha = inspect_image(str(path), decode=True, digest=True)
    assert status is None and "I;16" in note and len(sha) == 64


def test_a_32_bit_image_whose_values_could_be_8_or_16_bit_is_refused(tmp_path) -> None:
    """Mode I with values all in 1..255: 8-bit data (was: read as 16-bit, 200 became 1) or a dark 16-bit image."""
    path = tmp_path / "i32.tiff"
    Image.fromarray(np.full((8, 8), 200, np.int32), "I").save(path)  # 32 bits per sample
    with pytest.raises(DataError) as exc:
        read_image(str(path))
    assert str(exc.value).startswith(f"image {path} (mode I): 32-bit integer image with values 200..200, all below 256")
    assert "\n" not in str(exc.value) and inspect_image(str(path), decode=True)[0] == "unreadable"
    Image.fromarray(np.zeros((8, 8), np.int32), "I").save(path)
    assert np.asarray(read_image(str(path))).max() == 0  # black either way
    Image.fromarray(np.full((8, 8), 256, np.int32), "I").save(path)
    assert np.asarray(read_image(str(path))).max() == 1  # above 255: 16-bit data, as before
    from PIL import TiffImagePlugin

    signed = TiffImagePlugin.ImageFileDirectory_v2()
    signed[339] = 2  # SampleFormat: signed; a 16-bit signed TIFF opens as mode I
    Image.fromarray(np.full((8, 8), 200, np.uint16)).save(path, tiffinfo=signed)
    with Image.open(path) as image:
        assert image.mode == "I"
    assert np.asarray(read_image(str(path))).max() == 1  # the file says 16 bits: 200 / 65535, dark as before
    pgm = tmp_path / "dark.pgm"  # a 16-bit PGM (maxval 65535 in its header) opens as mode I: 16 bits, said
    pgm.write_bytes(b"P5\n8 8\n65535\n" + np.full((8, 8), 189, ">u2").tobytes())
    assert np.asarray(read_image(str(pgm))).max() == 1


def test_animated_and_unknown_range_images(tmp_path) -> None:
    frames = [Image.new("RGB", (8, 8), (i * 100, 0, 0)) for i in (0, 1, 2)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert "3 frames" in inspect_image(str(tmp_path / "anim.gif"))[1]
    read_image(str(tmp_path / "anim.gif"))  # the first frame
    Image.fromarray(np.full((4, 4), 7.5, np.float32), "F").save(tmp_path / "f.tiff")
    with pytest.raises(DataError, match=r"mode F.*no known range"):
        read_image(str(tmp_path / "f.tiff"))
    assert inspect_image(str(tmp_path / "f.tiff"), decode=True)[0] == "unreadable"


# ------------------------------------------------------------------------------------------------ CSV
def csv_world(tmp_path: Path, rows: str) -> Path:
    for name in ("a.png", "b.png", "c.png", "d.png"):
        Image.new("RGB", (4, 4)).save(tmp_path / name)
    (tmp_path / "data.csv").write_text(rows)
    return tmp_path / "data.csv"


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("path,label\na.png,x\na.png,x\nb.png,y\n", "line 3: image 'a.png' is already listed on line 2"),
        ("path,label\na.png,x\n./a.png,y\nb.png,y\n", "line 3: image './a.png' is already listed"),
        ("path,label,split\na.png,x,train\nb.png,y,train\na.png,x,test\n", "leaks between train and test"),
        ("path,label,split\na.png,x,train\nb.png,x,train\nc.png,y,test\n", "label 'y' has no 'train' rows"),
        ("path,lable\na.png,x\n", "line 1: the header has no 'label' column"),
        ("file,label\na.png,x\n", "line 1: the header has no 'path' column"),
    ],
    ids=["duplicate", "same-file", "train-test-overlap", "label-only-in-test", "no-label-column", "no-path-column"],
)
def test_csv_content_problems_are_refused(tmp_path, rows, message) -> None:
    with pytest.raises(DataError, match=message):
        load_csv(csv_world(tmp_path, rows))


def test_csv_non_utf8_is_one_line(tmp_path) -> None:
    file = csv_world(tmp_path, "")
    file.write_bytes(b"path,label\na.png,caf\xe9\n")
    with pytest.raises(DataError, match="cannot read"):
        load_csv(file)


def test_a_val_or_test_row_whose_true_label_differs_from_its_label_is_refused(tmp_path) -> None:
    """Val and test rows are scored against ``label``: a row the file itself marks wrong would count a right
    prediction as a mistake (a model right on every image scored 50.0). Train rows may differ: that is the noise."""
    rows = "path,label,split,true_label\na.png,x,train,y\nb.png,y,train,y\nc.png,x,test,x\nd.png,x,test,y\n"
    with pytest.raises(DataError) as exc:
        load_csv(csv_world(tmp_path, rows))
    message = str(exc.value)
    assert "\n" not in message and message.startswith(f"CSV file {tmp_path / 'data.csv'} line 5: a test row")
    assert "label 'x' differs from its true_label 'y'" in message
    splits = load_csv(csv_world(tmp_path, rows.replace("d.png,x,test,y", "d.png,y,test,y")))
    assert splits.train[0].is_noisy and all(s.label == s.true_label for s in splits.test)
    for i in range(10):  # without a split column, the per-class split decides where a row is scored
        Image.new("RGB", (4, 4)).save(tmp_path / f"{i}.png")
    lines = [f"{i}.png,{'xy'[i % 2]},{'y' if i < 4 else 'xy'[i % 2]}" for i in range(10)]
    (tmp_path / "nosplit.csv").write_text("path,label,true_label\n" + "\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"line \d+: label 'x' differs from its true_label 'y' and the per-class split"):
        load_csv(tmp_path / "nosplit.csv")


# ------------------------------------------------------------------------------------------- folders
def test_an_empty_class_folder_in_the_flat_layout_is_refused(tmp_path) -> None:
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("RGB", (4, 4)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "emu").mkdir()
    with pytest.raises(DataError, match="class folder 'emu' holds no images"):
        load_image_folder(tmp_path)


def test_a_non_utf8_file_name_is_handled(tmp_path) -> None:
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (4, 4), (i * 50, 0, 0)).save(folder / f"{i}.png")
    bad = os.fsdecode(b"caf\xe9.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "train" / "cat" / bad)
    splits = load_image_folder(tmp_path)
    assert len(splits_fingerprint(splits)) == 16  # was a UnicodeEncodeError
    few = prepare_fewshot("folder", tmp_path, 2, path=str(tmp_path), cache_dir=tmp_path / "cache")
    assert len(few.train) == 4


# --------------------------------------------------------------------------------------------- verify
def test_verify_finds_duplicates_overlap_by_content_and_unusual_images(tmp_path) -> None:
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (4, 4), (i * 50 + (split == "test") * 7, len(cls), 0)).save(folder / f"{i}.png")
    # the same picture in test under another name: a leak only content hashing finds
    (tmp_path / "test" / "cat" / "copy.png").write_bytes((tmp_path / "train" / "cat" / "0.png").read_bytes())
    Image.fromarray(np.zeros((4, 4), np.uint16)).save(tmp_path / "train" / "dog" / "deep.png")
    report = verify_dataset("folder", tmp_path, path=str(tmp_path))
    assert not report.ok
    assert any("same content as train image" in p for p in report.problems)
    assert any("deep.png: mode I;16" in n for n in report.notes)


# ------------------------------------------------------------------------------------- read-only folders
def test_a_read_only_output_folder_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    import visprompt.testbed.build as build

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "DATA"))

    monkeypatch.setattr(build, "build_testbed", read_only)
    assert main(["testbed", "build", "--root", str(tmp_path / "DATA")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'DATA'}: Read-only file system\n"
