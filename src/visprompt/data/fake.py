"""Tiny fake datasets in every supported layout, for tests and for checking an installation without downloads.

:func:`make_fake_dataset` writes, under a data root, a miniature copy of a benchmark's raw layout (the files its
split-file reader needs, tiny images with the real file-name patterns), optionally with a split file, or a user
image folder / CSV. Images are 8x8 solid colours, one colour per class, with one corner pixel that differs per
file name (so no two files hold the same image: ``data verify`` reports such duplicates); ``.jpg`` names get
JPEG files and the user layouts PNG files. Flowers and StanfordCars need scipy (their labels are ``.mat`` files).
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["FAKE_LAYOUTS", "make_fake_dataset", "write_image"]


def write_image(path: Path, label: int, size: int = 8) -> Path:
    """A ``size`` x ``size`` image of class colour ``label`` (format from the file name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = ((53 * label) % 256, (97 * label + 40) % 256, (151 * label + 80) % 256)
    image = Image.new("RGB", (size, size), colour)
    tag = zlib.crc32(path.name.encode("utf-8", "surrogateescape"))
    image.putpixel((0, 0), (tag & 255, (tag >> 8) & 255, (tag >> 16) & 255))
    image.save(path)
    return path


def _write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def _class_folders(image_dir: Path, classes: list[str], per_class: int, ext: str = ".jpg") -> None:
    for label, cls in enumerate(classes):
        for i in range(per_class):
            write_image(image_dir / cls / f"{cls.lower()}_{i:04d}{ext}", label)


def _caltech(d: Path, c: int, n: int) -> None:
    classes = ["BACKGROUND_Google", "Faces", "Faces_easy", "airplanes", "Leopards", "accordion", "yin_yang"]
    _class_folders(d / "caltech-101" / "101_ObjectCategories", classes[: c + 2], n)


def _pets(d: Path, c: int, n: int) -> None:
    breeds = ["Abyssinian", "american_bulldog", "Bengal", "great_pyrenees", "Persian", "pug"][:c]
    root = d / "oxford_pets"
    lines: dict[str, list[str]] = {"trainval.txt": [], "test.txt": []}
    for label, breed in enumerate(breeds):
        for i in range(1, n + 1):
            write_image(root / "images" / f"{breed}_{i}.jpg", label)
            file = "trainval.txt" if i <= n // 2 else "test.txt"
            lines[file].append(f"{breed}_{i} {label + 1} {1 + (breed[0].isupper())} {label + 1}")
    for file, rows in lines.items():
        _write(root / "annotations" / file, rows)


def _flowers(d: Path, c: int, n: int) -> None:
    from scipy.io import savemat

    root = d / "oxford_flowers"
    labels = [1 + (i % c) for i in range(c * n)]
    for i, label in enumerate(labels):
        write_image(root / "jpg" / f"image_{i + 1:05d}.jpg", label - 1)
    savemat(str(root / "imagelabels.mat"), {"labels": np.array([labels], dtype=np.uint8)})
    names = ["pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea", "english marigold"]
    (root / "cat_to_name.json").write_text(json.dumps({str(i + 1): names[i % len(names)] + f" {i}" for i in range(c)}))


def _dtd(d: Path, c: int, n: int) -> None:
    _class_folders(d / "dtd" / "images", ["banded", "blotchy", "braided", "bubbly", "bumpy"][:c], n)


def _eurosat(d: Path, c: int, n: int) -> None:
    _class_folders(
        d / "eurosat" / "2750", ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "SeaLake"][:c], n
    )


def _ucf101(d: Path, c: int, n: int) -> None:
    actions = ["ApplyEyeMakeup", "ApplyLipstick", "Archery", "BabyCrawling", "BalanceBeam"][:c]
    root = d / "ucf101"
    lists: dict[str, list[str]] = {"trainlist01.txt": [], "testlist01.txt": []}
    for label, action in enumerate(actions):
        folder = "_".join(re.findall("[A-Z][^A-Z]*", action))
        for i in range(n):
            name = f"v_{action}_g{i:02d}_c01"
            write_image(root / "UCF-101-midframes" / folder / f"{name}.jpg", label)
            if i < n * 7 // 10:
                lists["trainlist01.txt"].append(f"{action}/{name}.avi {label + 1}")
            else:
                lists["testlist01.txt"].append(f"{action}/{name}.avi")
    _write(root / "ucfTrainTestlist" / "classInd.txt", [f"{i + 1} {a}" for i, a in enumerate(actions)])
    for file, rows in lists.items():
        _write(root / "ucfTrainTestlist" / file, rows)


def _food101(d: Path, c: int, n: int) -> None:
    _class_folders(d / "food-101" / "images", ["apple_pie", "baby_back_ribs", "baklava", "beef_carpaccio"][:c], n)


def _food101n(d: Path, c: int, n: int) -> None:
    _food101(d, c, n)
    classes = ["apple_pie", "baby_back_ribs", "baklava", "beef_carpaccio"][:c]
    root = d / "food-101n"
    keys = []
    for label, cls in enumerate(classes):
        for i in range(n):
            keys.append(f"{cls}/{i:032x}.jpg")
            write_image(root / "images" / keys[-1], (label + (i % 3 == 0)) % c)  # some web images are wrong
    _write(root / "meta" / "classes.txt", ["class_name", *classes])
    _write(root / "meta" / "imagelist.tsv", ["class_name/key", *keys])
    verified = [f"{k}\t{int(i % 3 != 0)}" for i, k in enumerate(keys) if i % 2 == 0]
    _write(root / "meta" / "verified_train.tsv", ["class_name/key\tverification_label", *verified])


def _cars(d: Path, c: int, n: int) -> None:
    from scipy.io import savemat

    root = d / "stanford_cars"
    names = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Audi TT Hatchback 2011", "BMW M3 Coupe 2012"][:c]
    meta = np.empty((1, c), dtype=object)
    for i, name in enumerate(names):
        meta[0, i] = np.array([name])
    (root / "devkit").mkdir(parents=True, exist_ok=True)
    savemat(str(root / "devkit" / "cars_meta.mat"), {"class_names": meta})
    for folder, anno in (("cars_train", root / "devkit" / "cars_train_annos.mat"),
                         ("cars_test", root / "cars_test_annos_withlabels.mat")):  # fmt: skip
        records = np.zeros((1, c * n), dtype=[("fname", "O"), ("class", "O")])
        for i in range(c * n):
            records[0, i]["fname"] = np.array([f"{i + 1:05d}.jpg"])
            records[0, i]["class"] = np.array([[i % c + 1]], dtype=np.uint8)
            write_image(root / folder / f"{i + 1:05d}.jpg", i % c)
        savemat(str(anno), {"annotations": records})


def _aircraft(d: Path, c: int, n: int) -> None:
    variants = ["707-320", "727-200", "737-200", "A300B4", "Cessna 172"][:c]
    root = d / "fgvc_aircraft"
    _write(root / "variants.txt", variants)
    lists: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for label, variant in enumerate(variants):
        for i in range(n):
            image = f"{1000000 + label * 1000 + i}"
            write_image(root / "images" / f"{image}.jpg", label)
            lists[("train", "val", "test")[i % 3]].append(f"{image} {variant}")
    for key, rows in lists.items():
        _write(root / f"images_variant_{key}.txt", rows)


def _sun397(d: Path, c: int, n: int) -> None:
    classes = ["/a/abbey", "/a/airport_terminal", "/b/bedroom", "/b/bus_interior/indoor", "/c/castle"][:c]
    root = d / "sun397"
    lists: dict[str, list[str]] = {"Training_01.txt": [], "Testing_01.txt": []}
    for label, cls in enumerate(classes):
        for i in range(n):
            path = f"{cls}/sun_{label:03d}{i:04d}.jpg"
            write_image(root / "SUN397" / path.lstrip("/"), label)
            lists["Training_01.txt" if i < n // 2 else "Testing_01.txt"].append(path)
    _write(root / "ClassName.txt", classes)
    for file, rows in lists.items():
        _write(root / file, rows)


def _imagenet(d: Path, c: int, n: int) -> None:
    wnids = ["n01440764", "n01443537", "n01484850", "n01491361", "n01494475"][:c]
    names = ["tench", "goldfish", "great white shark", "tiger shark", "hammerhead shark"]
    root = d / "imagenet"
    _write(root / "classnames.txt", [f"{w} {names[i]}" for i, w in enumerate(wnids)])
    for label, wnid in enumerate(wnids):
        for i in range(n):
            folder = "train" if i < n * 2 // 3 else "val"
            write_image(root / "images" / folder / wnid / f"{wnid}_{i}.JPEG", label)


def _folder(d: Path, c: int, n: int) -> None:
    _class_folders(d / "my_images", ["cat", "dog", "golden_retriever", "hamster", "parrot"][:c], n, ".png")


def _csv(d: Path, c: int, n: int) -> None:
    classes = ["cat", "dog", "golden_retriever", "hamster", "parrot"][:c]
    rows = ["path,label"]
    for label, cls in enumerate(classes):
        for i in range(n):
            write_image(d / "my_csv" / "img" / f"{cls}_{i}.png", label)
            rows.append(f"img/{cls}_{i}.png,{cls}")
    _write(d / "my_csv" / "labels.csv", rows)


# name -> (writer(root, classes, per_class), path of the user layout relative to the root or None)
FAKE_LAYOUTS: dict[str, tuple[Callable[[Path, int, int], None], str | None]] = {
    "caltech101": (_caltech, None),
    "oxford_pets": (_pets, None),
    "oxford_flowers": (_flowers, None),
    "dtd": (_dtd, None),
    "eurosat": (_eurosat, None),
    "ucf101": (_ucf101, None),
    "food101": (_food101, None),
    "food101n": (_food101n, None),
    "stanford_cars": (_cars, None),
    "fgvc_aircraft": (_aircraft, None),
    "sun397": (_sun397, None),
    "imagenet": (_imagenet, None),
    "folder": (_folder, "my_images"),
    "csv": (_csv, "my_csv/labels.csv"),
}


def make_fake_dataset(name: str, root: str | Path, classes: int = 3, per_class: int = 10) -> str | None:
    """Write a fake ``name`` dataset under ``root``; returns the ``path`` argument for folder/csv, else None.

    ``classes`` (2..4) classes of ``per_class`` images each (Caltech101 also gets its two ignored folders).
    """
    if name not in FAKE_LAYOUTS:
        raise KeyError(f"no fake layout for {name!r} (known: {', '.join(FAKE_LAYOUTS)})")
    if not 2 <= classes <= 4:
        raise ValueError("classes must be in 2..4")
    writer, rel = FAKE_LAYOUTS[name]
    root = Path(root)
    writer(root, classes, per_class)
    return str(root / rel) if rel else None
