"""The dataset registry: the field's benchmarks in CoOp's folder layout, Food101N, and users' own data.

A root folder ``DATA/`` holds one folder per dataset (``caltech-101/``, ``oxford_pets/``, ``dtd/``, ...), each
with its images and its split file ``split_zhou_<Name>.json`` (see :mod:`visprompt.data.coop`). A dataset is a
:class:`DatasetSpec` in :data:`DATASETS`; :func:`load_dataset` turns a name and a root into
:class:`~visprompt.data.records.DatasetSplits` with absolute paths and cleaned class names, creating and saving the
split file (atomically, with a fixed seed) where it is absent. A new dataset in the CoOp layout is one call:

>>> register_coop_dataset("my-task", folder="my_task", split_file="split_my_task.json")  # doctest: +SKIP

``"folder"`` and ``"csv"`` load users' own data from ``path`` (:mod:`visprompt.data.custom`).

Expected sizes (classes, train, val, test) are those of CoOp's published split files as tabulated in the CoOp
paper (Zhou et al., "Learning to Prompt for Vision-Language Models", IJCV 2022, dataset statistics table); for
FGVCAircraft the official split; for Food101N the 310,009 images of ``meta/imagelist.tsv`` (Food-101N README,
CleanNet, Lee et al. CVPR 2018) with Food101's validation and test splits. ImageNet's are the ILSVRC-2012 sizes.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from visprompt.data import readers
from visprompt.data.coop import (
    RawSplit,
    classnames_from_rows,
    clean_classname,
    read_split_file,
    rows_to_samples,
    save_split_file,
    split_image_folder,
)
from visprompt.data.custom import load_csv, load_image_folder
from visprompt.data.files import list_dirs, list_images, read_lines
from visprompt.data.records import DatasetSplits, Sample
from visprompt.errors import DataError, UnknownNameError
from visprompt.registry import Registry

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "ExpectedCounts",
    "canonical_name",
    "coop_spec",
    "dataset_dir",
    "get_spec",
    "load_dataset",
    "register_coop_dataset",
    "register_dataset",
]

logger = logging.getLogger(__name__)

Reader = Callable[[Path, Path], RawSplit]  # (dataset folder, split root) -> raw split rows


class ExpectedCounts(NamedTuple):
    """Published sizes of a dataset: number of classes and of train/val/test images."""

    classes: int
    train: int
    val: int
    test: int


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset lives under the data root and how to read it."""

    name: str  # registry name (lower case, e.g. "oxford_pets")
    folder: str  # folder under the data root, as the field names it (e.g. "oxford_pets")
    image_dir: str = "images"  # image folder inside `folder`; split-file paths are relative to it ("" = `folder`)
    split_file: str | None = None  # CoOp split JSON inside `folder`; None: the reader is read on every load
    expected: ExpectedCounts | None = None  # published sizes, checked by `visprompt data verify`
    reader: Reader | None = None  # builds the split from the raw layout when the split file is absent
    renames: Mapping[str, str] = field(default_factory=dict)  # raw class name -> the field's name
    aliases: tuple[str, ...] = ()  # other accepted names (CoOp's class names, e.g. "DescribableTextures")
    folder_aliases: tuple[str, ...] = ()  # other accepted folder names (e.g. "food101" for "food-101")
    load: Callable[..., DatasetSplits] | None = None  # custom loader (spec, root, path, save_split) -> splits
    reads_path: bool = False  # its loader reads data.path (folder, csv); for the others data.path stays unset

    @property
    def layout(self) -> str:
        """The expected layout in words, for error messages."""
        images = f"{self.folder}/{self.image_dir}/" if self.image_dir else f"{self.folder}/"
        split = f" and {self.folder}/{self.split_file}" if self.split_file else ""
        return f"{images}{split}"


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` to :data:`DATASETS` under ``spec.name``."""
    return DATASETS.register(spec.name)(spec)


def _read_image_folder(dataset_dir: Path, image_dir: Path, ignored: tuple[str, ...] = (), renames=None) -> RawSplit:
    return split_image_folder(image_dir, ignored=ignored, renames=renames)


def coop_spec(
    name: str,
    folder: str,
    split_file: str | None,
    image_dir: str = "images",
    expected: ExpectedCounts | tuple[int, int, int, int] | None = None,
    renames: Mapping[str, str] | None = None,
    reader: Reader | None = None,
    ignored: tuple[str, ...] = (),
    aliases: tuple[str, ...] = (),
    folder_aliases: tuple[str, ...] = (),
) -> DatasetSpec:
    """The spec of a dataset in the CoOp layout; without ``reader``, a missing split file is created from
    ``image_dir/<class>/<image>`` with CoOp's 50/20/30 per-class rule (minus the ``ignored`` class folders)."""
    renames = dict(renames or {})
    if reader is None:
        reader = functools.partial(_read_image_folder, ignored=tuple(ignored), renames=renames)
    return DatasetSpec(
        name=name,
        folder=folder,
        image_dir=image_dir,
        split_file=split_file,
        expected=ExpectedCounts(*expected) if expected is not None else None,
        reader=reader,
        renames=renames,
        aliases=tuple(aliases),
        folder_aliases=tuple(folder_aliases),
    )


def register_coop_dataset(
    name: str,
    folder: str,
    split_file: str | None,
    image_dir: str = "images",
    expected: ExpectedCounts | tuple[int, int, int, int] | None = None,
    **options,
) -> DatasetSpec:
    """Register a dataset in the CoOp layout (one call); ``options`` as for :func:`coop_spec`."""
    return register_dataset(coop_spec(name, folder, split_file, image_dir, expected, **options))


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def get_spec(name: str) -> DatasetSpec:
    """The spec registered as ``name``, or whose name or alias matches it ignoring case, ``-`` and ``_``;
    an unknown name raises :class:`~visprompt.errors.UnknownNameError` with the closest names."""
    if name in DATASETS:
        return DATASETS.get(name)
    key = _norm(name)
    for registered in DATASETS:
        spec = DATASETS.get(registered)
        if key and key in {_norm(spec.name), *(_norm(a) for a in spec.aliases)}:
            return spec
    return DATASETS.get(name)  # raises with close matches


def canonical_name(name: str) -> str:
    """The registered name of the dataset that ``name`` names (an alias such as ``pets`` or ``DescribableTextures``,
    matched as by :func:`get_spec`); an unknown name is returned as given (loading it reports the closest names)."""
    try:
        return get_spec(name).name
    except UnknownNameError:
        return name


def dataset_dir(spec: DatasetSpec, root: str | Path) -> Path:
    """The dataset's folder under ``root``; a missing root or folder raises :class:`DataError` naming it."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist (expected a folder holding one folder per dataset)")
    for folder in (spec.folder, *spec.folder_aliases):
        if (root / folder).is_dir():
            return root / folder
    raise DataError(f"dataset folder {root / spec.folder} does not exist ({spec.name} expects {root}/{spec.layout})")


def _read_raw(spec: DatasetSpec, root: str | Path, save_split: bool) -> tuple[Path, RawSplit]:
    """The dataset's split root and raw rows, creating (and, if asked, saving) a missing split file."""
    ddir = dataset_dir(spec, root)
    split_root = ddir / spec.image_dir if spec.image_dir else ddir
    if not split_root.is_dir():
        raise DataError(f"wrong layout: {split_root} does not exist ({spec.name} expects {Path(root)}/{spec.layout})")
    split_path = ddir / spec.split_file if spec.split_file else None
    if split_path is not None and split_path.is_file():
        return split_root, read_split_file(split_path)
    if spec.reader is None:
        raise DataError(f"split file {split_path} does not exist and {spec.name} has no reader to create it")
    raw = spec.reader(ddir, split_root)
    if split_path is not None:
        if save_split:
            save_split_file(raw, split_path)
        else:
            logger.info("split file %s is absent; it will be created on the first load", split_path)
    return split_root, raw


def _load_coop(spec: DatasetSpec, root: str | Path, path: str | None, save_split: bool) -> DatasetSplits:
    split_root, raw = _read_raw(spec, root, save_split)
    source = str(dataset_dir(spec, root) / (spec.split_file or spec.image_dir))
    classnames = tuple(clean_classname(c, spec.renames) for c in classnames_from_rows(raw, source))
    parts = {key: rows_to_samples(rows, split_root, classnames) for key, rows in raw.items()}
    return DatasetSplits(name=spec.name, classnames=classnames, **parts)


def _load_folder(spec: DatasetSpec, root: str | Path, path: str | None, save_split: bool) -> DatasetSplits:
    if not path:
        raise DataError(f"dataset {spec.name!r} needs a path (data.path): the image folder or CSV file to read")
    return load_image_folder(path) if spec.name == "folder" else load_csv(path)


def _food101n_rows(ddir: Path, label_of: Mapping[str, int]) -> tuple[list[tuple[str, int]], dict[str, int]]:
    """(image key, label) of Food-101N's image list (or its image folders) and the verification labels
    (``class/key -> 0/1``) where present; ``label_of`` maps cleaned Food-101 class names to labels."""
    meta = ddir / "meta"
    if (meta / "imagelist.tsv").is_file():
        keys = [k for k in read_lines(meta / "imagelist.tsv", "image list") if not k.startswith("class_name")]
    else:
        keys = [f"{c}/{f}" for c in list_dirs(ddir / "images") for f in list_images(ddir / "images" / c)]
    verified: dict[str, int] = {}
    for name in ("verified_train.tsv", "verified_val.tsv"):
        if (meta / name).is_file():
            for line in read_lines(meta / name, "verification file"):
                key, _, flag = line.partition("\t")
                if flag.strip() in ("0", "1"):
                    verified[key] = int(flag)
    labels: dict[str, int] = {}  # raw folder name -> label
    rows = []
    for key in keys:
        raw = key.split("/", 1)[0]
        if raw not in labels:
            if clean_classname(raw) not in label_of:
                raise DataError(f"{ddir}: Food-101N class {raw!r} is not a Food-101 class (at {key})")
            labels[raw] = label_of[clean_classname(raw)]
        rows.append((key, labels[raw]))
    return rows, verified


def _load_food101n(spec: DatasetSpec, root: str | Path, path: str | None, save_split: bool) -> DatasetSplits:
    """Train on Food-101N's noisy web labels; validate and test on Food-101's clean splits.

    Only the images Food-101N's annotators verified have a known truth: a label verified correct is the true label;
    one verified wrong is known noisy, its true class unknown (``label_wrong``). The others' truth is unknown.
    """
    food = load_dataset("food101", root, save_split=save_split)
    ddir = dataset_dir(spec, root)
    if not (ddir / "images").is_dir():
        raise DataError(f"wrong layout: {ddir / 'images'} does not exist ({spec.name} expects {root}/{spec.layout})")
    rows, verified = _food101n_rows(ddir, {name: i for i, name in enumerate(food.classnames)})
    prefix = str((ddir / "images").absolute()) + os.sep
    train = tuple(
        Sample(
            index=i,
            path=prefix + key,
            label=label,
            true_label=label if verified.get(key) == 1 else None,
            classname=food.classnames[label],
            label_wrong=verified.get(key) == 0,
        )
        for i, (key, label) in enumerate(rows)
    )
    return DatasetSplits(name=spec.name, classnames=food.classnames, train=train, val=food.val, test=food.test)


def load_dataset(
    name: str, root: str | Path = "DATA", path: str | None = None, save_split: bool = True
) -> DatasetSplits:
    """Load a registered dataset from ``root`` (or users' data from ``path`` when ``name`` is folder/csv).

    A missing split file is created deterministically and saved atomically unless ``save_split`` is false.
    Errors (missing root or folder, wrong layout, malformed split file, unknown name) are one line.
    """
    spec = get_spec(name)
    load = spec.load or _load_coop
    splits = load(spec, root, path, save_split)
    logger.info(
        "%s: %d classes, %d train / %d val / %d test images",
        spec.name,
        splits.num_classes,
        len(splits.train),
        len(splits.val),
        len(splits.test),
    )
    return splits


# ------------------------------------------------------------------------------------------------ the benchmarks

CALTECH_RENAMES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}
EUROSAT_RENAMES = {
    "AnnualCrop": "Annual Crop Land",
    "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "River": "River",
    "SeaLake": "Sea or Lake",
}

register_coop_dataset(
    "caltech101", "caltech-101", "split_zhou_Caltech101.json", "101_ObjectCategories", (100, 4128, 1649, 2465),
    renames=CALTECH_RENAMES, ignored=("BACKGROUND_Google", "Faces_easy"), aliases=("Caltech101",),
)  # fmt: skip
register_coop_dataset(
    "oxford_pets", "oxford_pets", "split_zhou_OxfordPets.json", "images", (37, 2944, 736, 3669),
    reader=readers.read_oxford_pets, aliases=("OxfordPets", "pets"),
)  # fmt: skip
register_coop_dataset(
    "oxford_flowers", "oxford_flowers", "split_zhou_OxfordFlowers.json", "jpg", (102, 4093, 1633, 2463),
    reader=readers.read_oxford_flowers, aliases=("OxfordFlowers", "flowers102", "flowers"),
)  # fmt: skip
register_coop_dataset(
    "dtd", "dtd", "split_zhou_DescribableTextures.json", "images", (47, 2820, 1128, 1692),
    aliases=("DescribableTextures",),
)  # fmt: skip
register_coop_dataset(
    "eurosat", "eurosat", "split_zhou_EuroSAT.json", "2750", (10, 13500, 5400, 8100), renames=EUROSAT_RENAMES,
)  # fmt: skip
register_coop_dataset(
    "ucf101", "ucf101", "split_zhou_UCF101.json", "UCF-101-midframes", (101, 7639, 1898, 3783),
    reader=readers.read_ucf101,
)  # fmt: skip
register_coop_dataset(
    "food101", "food-101", "split_zhou_Food101.json", "images", (101, 50500, 20200, 30300),
    folder_aliases=("food101",),
)  # fmt: skip
register_coop_dataset(
    "stanford_cars", "stanford_cars", "split_zhou_StanfordCars.json", "", (196, 6509, 1635, 8041),
    reader=readers.read_stanford_cars, aliases=("StanfordCars", "cars"),
)  # fmt: skip
register_coop_dataset(
    "fgvc_aircraft", "fgvc_aircraft", None, "images", (100, 3334, 3333, 3333),
    reader=readers.read_fgvc_aircraft, aliases=("FGVCAircraft", "aircraft"),
)  # fmt: skip
register_coop_dataset(
    "sun397", "sun397", "split_zhou_SUN397.json", "SUN397", (397, 15880, 3970, 19850), reader=readers.read_sun397,
)  # fmt: skip
register_coop_dataset(
    "imagenet", "imagenet", "split_visprompt_ImageNet.json", "images", (1000, 1281167, 50000, 50000),
    reader=readers.read_imagenet,
)  # fmt: skip
register_dataset(
    DatasetSpec(
        name="food101n",
        folder="food-101n",
        image_dir="images",
        expected=ExpectedCounts(101, 310009, 20200, 30300),
        aliases=("Food101N",),
        folder_aliases=("food101n", "Food-101N_release", "Food-101N"),
        load=_load_food101n,
    )
)
register_dataset(DatasetSpec(name="folder", folder="", image_dir="", load=_load_folder, reads_path=True))
register_dataset(DatasetSpec(name="csv", folder="", image_dir="", load=_load_folder, reads_path=True))
