"""Readers of the raw layouts of the field's datasets, used where a dataset's split file is absent.

Each reader takes ``(dataset_dir, image_dir)`` and returns a :data:`~visprompt.data.coop.RawSplit` whose paths
are relative to the folder the dataset's split file is relative to (its image folder; the dataset folder for
StanfordCars). The layouts and splitting rules follow CoOp's ``datasets/*.py``:

- OxfordPets: ``annotations/{trainval,test}.txt`` (``name class species breed``); 20% of trainval held out.
- OxfordFlowers: ``imagelabels.mat`` + ``cat_to_name.json``; per class 50/20/30.
- UCF101: ``ucfTrainTestlist/{classInd,trainlist01,testlist01}.txt``; images in ``UCF-101-midframes/<Class_Name>/``.
- SUN397: ``ClassName.txt``, ``Training_01.txt``, ``Testing_01.txt``; class ``/a/abbey/indoor -> indoor abbey``.
- StanfordCars: ``devkit/cars_{train_annos,meta}.mat`` + ``cars_test_annos_withlabels.mat``; the year first.
- FGVCAircraft: ``variants.txt`` + ``images_variant_{train,val,test}.txt`` (the official split; no JSON).
- ImageNet: ``classnames.txt`` (``wnid name``) + ``images/{train,val}/<wnid>/``; test = val, as in CoOp.

The ``.mat`` files need scipy, which is optional: without it these readers raise a one-line error that says to
install it or to put the published split file in place.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from visprompt.data.coop import RawSplit, Row, split_by_class, split_trainval
from visprompt.data.files import list_dirs, list_images, read_json, read_lines
from visprompt.errors import DataError

__all__ = [
    "read_fgvc_aircraft",
    "read_imagenet",
    "read_oxford_flowers",
    "read_oxford_pets",
    "read_stanford_cars",
    "read_sun397",
    "read_ucf101",
]


def _loadmat(path: Path, hint: str) -> dict[str, Any]:
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DataError(f"reading {path} needs scipy (pip install scipy), or put {hint} in {path.parent}") from None
    if not path.is_file():
        raise DataError(f"{path} does not exist (needed to build {hint})")
    try:
        return loadmat(str(path))
    except Exception as exc:  # scipy raises several types for corrupt files
        raise DataError(f"{path}: cannot read MATLAB file ({exc})") from None


def read_oxford_pets(dataset_dir: Path, image_dir: Path) -> RawSplit:
    """``annotations/trainval.txt`` and ``test.txt``: ``Breed_Name_123 class species breed`` lines."""

    def read(name: str) -> list[Row]:
        rows = []
        file = dataset_dir / "annotations" / name
        for line in read_lines(file, "annotation file"):
            if line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) < 2 or not parts[1].isdigit():
                raise DataError(f"{file}: malformed line {line!r} (expected 'name class species breed')")
            breed = "_".join(parts[0].split("_")[:-1]).lower()
            rows.append((f"{parts[0]}.jpg", int(parts[1]) - 1, breed))
        return rows

    train, val = split_trainval(read("trainval.txt"))
    return {"train": train, "val": val, "test": read("test.txt")}


def read_oxford_flowers(dataset_dir: Path, image_dir: Path) -> RawSplit:
    """``imagelabels.mat`` (1-based label of ``image_%05d.jpg``) and ``cat_to_name.json``; per class 50/20/30."""
    labels = _loadmat(dataset_dir / "imagelabels.mat", "split_zhou_OxfordFlowers.json")["labels"].reshape(-1)
    names = read_json(dataset_dir / "cat_to_name.json", "class-name file")
    rows: list[Row] = []
    for i, label in enumerate(labels):
        if str(int(label)) not in names:
            raise DataError(f"{dataset_dir / 'cat_to_name.json'}: no name for class {int(label)}")
        rows.append((f"image_{i + 1:05d}.jpg", int(label) - 1, names[str(int(label))]))
    return split_by_class(rows, source=str(dataset_dir))


def read_ucf101(dataset_dir: Path, image_dir: Path) -> RawSplit:
    """The official first train/test list; ``ApplyEyeMakeup/v_x.avi`` -> ``Apply_Eye_Makeup/v_x.jpg``."""
    lists = dataset_dir / "ucfTrainTestlist"
    label_of: dict[str, int] = {}
    for line in read_lines(lists / "classInd.txt", "class list"):
        index, name = line.split()[:2]
        label_of[name] = int(index) - 1

    def read(name: str) -> list[Row]:
        rows = []
        for line in read_lines(lists / name, "train/test list"):
            action, file = line.split()[0].split("/")
            if action not in label_of:
                raise DataError(f"{lists / name}: class {action!r} is not in classInd.txt")
            folder = "_".join(re.findall("[A-Z][^A-Z]*", action))
            rows.append((f"{folder}/{file.replace('.avi', '.jpg')}", label_of[action], folder))
        return rows

    train, val = split_trainval(read("trainlist01.txt"))
    return {"train": train, "val": val, "test": read("testlist01.txt")}


def read_sun397(dataset_dir: Path, image_dir: Path) -> RawSplit:
    """The first of the ten official partitions; ``/a/abbey/sun_x.jpg`` with class ``/a/abbey``."""
    label_of = {line.lstrip("/"): i for i, line in enumerate(read_lines(dataset_dir / "ClassName.txt", "class list"))}

    def read(name: str) -> list[Row]:
        rows = []
        for line in read_lines(dataset_dir / name, "partition file"):
            path = line.lstrip("/")
            cls = path.rsplit("/", 1)[0]
            if cls not in label_of:
                raise DataError(f"{dataset_dir / name}: class {cls!r} is not in ClassName.txt")
            words = cls.split("/")[1:][::-1]  # drop the letter folder; 'indoor'/'outdoor' first
            rows.append((path, label_of[cls], " ".join(words)))
        return rows

    train, val = split_trainval(read("Training_01.txt"))
    return {"train": train, "val": val, "test": read("Testing_01.txt")}


def read_stanford_cars(dataset_dir: Path, image_dir: Path) -> RawSplit:
    """The devkit's annotation files; paths relative to the dataset folder; ``Audi TT 2012 -> 2012 Audi TT``."""
    hint = "split_zhou_StanfordCars.json"
    meta = _loadmat(dataset_dir / "devkit" / "cars_meta.mat", hint)["class_names"][0]

    def read(folder: str, anno_file: Path) -> list[Row]:
        rows = []
        for anno in _loadmat(anno_file, hint)["annotations"][0]:
            label = int(anno["class"][0, 0]) - 1
            words = str(meta[label][0]).split(" ")
            rows.append((f"{folder}/{anno['fname'][0]}", label, " ".join([words[-1], *words[:-1]])))
        return rows

    train, val = split_trainval(read("cars_train", dataset_dir / "devkit" / "cars_train_annos.mat"))
    return {"train": train, "val": val, "test": read("cars_test", dataset_dir / "cars_test_annos_withlabels.mat")}


def read_fgvc_aircraft(dataset_dir: Path, image_dir: Path) -> RawSplit:
    """``images_variant_<split>.txt`` lines ``1025794 Boeing 707-320``; labels from ``variants.txt`` order."""
    label_of = {name: i for i, name in enumerate(read_lines(dataset_dir / "variants.txt", "class list"))}

    def read(name: str) -> list[Row]:
        rows = []
        for line in read_lines(dataset_dir / name, "split list"):
            image, _, variant = line.partition(" ")
            if variant not in label_of:
                raise DataError(f"{dataset_dir / name}: variant {variant!r} is not in variants.txt")
            rows.append((f"{image}.jpg", label_of[variant], variant))
        return rows

    return {key: read(f"images_variant_{key}.txt") for key in ("train", "val", "test")}


def read_imagenet(dataset_dir: Path, image_dir: Path) -> RawSplit:
    """``images/train/<wnid>/`` for training and ``images/val/<wnid>/`` as both validation and test (CoOp)."""
    label_of: dict[str, tuple[int, str]] = {}
    for i, line in enumerate(read_lines(dataset_dir / "classnames.txt", "class list")):
        wnid, _, name = line.partition(" ")
        label_of[wnid] = (i, name.strip())

    def read(folder: str) -> list[Row]:
        rows = []
        base = image_dir / folder
        if not base.is_dir():
            raise DataError(f"{base} does not exist (expected images/{folder}/<wnid>/ folders)")
        for wnid in list_dirs(base):
            if wnid not in label_of:
                raise DataError(f"{base / wnid}: class folder not listed in {dataset_dir / 'classnames.txt'}")
            label, name = label_of[wnid]
            rows += [(f"{folder}/{wnid}/{f}", label, name) for f in list_images(base / wnid)]
        return rows

    val = read("val")
    return {"train": read("train"), "val": val, "test": list(val)}
