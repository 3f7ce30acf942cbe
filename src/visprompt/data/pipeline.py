"""The benchmark data protocol in one call: load, few-shot sample, add noise, cache the realisation.

:func:`prepare_fewshot` returns the splits a run trains and evaluates on: K noisy images per class for training,
min(K, 4) clean images per class for validation, the full clean test split. The few-shot images depend only on
(dataset, K, seed) and the noisy labels on the noise setting and seed, through separate seeded streams, so a
sweep over noise rates shares its images. The realisation is cached as JSON keyed by (dataset, shots, seed,
noise): the chosen sample indices and observed labels plus a fingerprint of the dataset's splits, so every method
sees exactly the same noisy set and a changed dataset is noticed (the cache is then rebuilt, with a warning).

Noise that needs the frozen CLIP (``asym-semantic``: a nearest-class map from its text features; ``instance``:
its image features of the K-shot training images) takes them through callables that are called only when the
split is not cached; the cache key then also holds the backbone (``backbone``: arch and weights), since the
labels depend on it. ``open-set`` noise holds the last ``open_set_classes`` classes out of the task: the splits
returned have C - k classes (train, val and test keep only the others), and the held-out classes' training
images are the pool of outside images (:func:`~visprompt.data.noise.apply_noise`).

:func:`splits_to_json` / :func:`splits_from_json` are the self-contained record a run keeps (``split.json``).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from visprompt.config import NoiseSpec
from visprompt.data.datasets import get_spec, load_dataset
from visprompt.data.fewshot import sample_few_shot
from visprompt.data.files import atomic_write_json, read_json
from visprompt.data.noise import apply_noise, noise_stats, num_noisy
from visprompt.data.records import DatasetSplits, Sample
from visprompt.errors import ConfigError, DataError

__all__ = ["cache_path", "prepare_fewshot", "read_splits", "splits_fingerprint", "splits_from_json", "splits_to_json",
           "write_splits"]  # fmt: skip

logger = logging.getLogger(__name__)

CACHE_FORMAT = "visprompt-fewshot/1"
NO_NOISE = NoiseSpec(type="none")
SPLITS_FORMAT = "visprompt-splits/1"
_TRAIN_STREAM, _VAL_STREAM = 0, 1  # few-shot generators: default_rng([stream, seed])
VAL_SHOTS = 4  # validation keeps min(K, 4) images per class (CoOp)
ALL_SHOTS = "all"  # data.shots: every training image (an audit covers them all), validation keeps VAL_SHOTS per class


def splits_fingerprint(splits: DatasetSplits) -> str:
    """A hash of every split's (index, label, last two path parts): independent of where the data root lives."""
    h = hashlib.sha256(repr(splits.classnames).encode())
    for key in ("train", "val", "test"):
        for s in getattr(splits, key):
            tail = "/".join(s.path.replace(os.sep, "/").rsplit("/", 2)[-2:])
            h.update(f"{key}\t{s.index}\t{s.label}\t{tail}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:16]


def cache_path(
    cache_dir: str | Path, dataset: str, shots: int | str, seed: int, tag: str, path: str | None = None
) -> Path:
    """``<cache_dir>/<dataset>[-<hash of path>]-<K>shot-seed<seed>-<noise tag>.json``."""
    name = (
        dataset if path is None else f"{dataset}-{hashlib.sha256(os.fsencode(Path(path).absolute())).hexdigest()[:8]}"
    )
    return Path(cache_dir) / f"{name}-{shots}shot-seed{seed}-{tag}.json"


def _check_settings(shots: int | str, noise: NoiseSpec) -> None:
    if shots != ALL_SHOTS and (isinstance(shots, bool) or not isinstance(shots, int) or shots < 1):
        raise ConfigError(f"data.shots: expected an integer >= 1 or {ALL_SHOTS!r}, got {shots!r}")
    if noise.type == "pairs-per-class" and shots != ALL_SHOTS and noise.false_per_class > shots:
        raise ConfigError(f"noise.false_per_class={noise.false_per_class} exceeds data.shots={shots}")


def _task_splits(full: DatasetSplits, noise: NoiseSpec) -> DatasetSplits:
    """The splits the task uses: ``full``, or for open-set noise ``full`` without its last k classes."""
    if noise.type != "open-set":
        return full
    open_set_classes = noise.open_set_classes
    c = full.num_classes - open_set_classes
    if c < 2:
        raise ConfigError(
            f"noise.open_set_classes={open_set_classes} leaves {max(c, 0)} of the {full.num_classes} classes of "
            f"{full.name}; expected at most {full.num_classes - 2}"
        )
    keep = {key: tuple(s for s in getattr(full, key) if s.label < c) for key in ("train", "val", "test")}
    return DatasetSplits(name=full.name, classnames=full.classnames[:c], **keep)


def _tagged(noise: NoiseSpec, backbone: str | None, caching: bool) -> tuple[str, str | None]:
    """The cache tag and key's backbone: CLIP-dependent noise adds a hash of ``backbone`` to the tag."""
    tag = noise.tag
    if not noise.definition.depends_on_backbone or noise.is_clean:
        return tag, None
    if backbone is None:
        if caching:
            raise ConfigError(f"noise.type={noise.type!r}: a cached split needs backbone= (its labels depend on it)")
        return tag, None
    return f"{tag}-{hashlib.sha256(backbone.encode()).hexdigest()[:8]}", backbone


def _check_classes(splits: DatasetSplits) -> None:
    """Every class of the task needs training images: one without would give a 'K-shot' run with 0 shots."""
    present = {s.label for s in splits.train}
    empty = [name for label, name in enumerate(splits.classnames) if label not in present]
    if empty:
        raise DataError(
            f"{splits.name}: class {empty[0]!r} has no training images ({len(empty)} such classes: an empty class "
            "folder, or a label found only in the val/test split); add images or remove the class"
        )


def _check_files(splits: DatasetSplits) -> None:
    missing = [s.path for key in ("train", "val", "test") for s in getattr(splits, key) if not os.path.isfile(s.path)]
    if missing:
        raise DataError(
            f"{splits.name}: {len(missing)} listed images are missing, e.g. {missing[0]} "
            "(run `visprompt data verify` for the full list)"
        )


def _in_range(values: Any, n: int) -> bool:
    return isinstance(values, list) and all(type(v) is int and 0 <= v < n for v in values)


def _from_cache(
    file: Path, full: DatasetSplits, fingerprint: str, num_classes: int
) -> tuple[tuple[Sample, ...], tuple[Sample, ...]] | None:
    try:
        data = read_json(file, "few-shot cache")
        if data.get("format") != CACHE_FORMAT or data.get("fingerprint") != fingerprint:
            logger.warning("few-shot cache %s was made from different data; rebuilding it", file)
            return None
        train_index, train_label, val_index = data["train"]["index"], data["train"]["label"], data["val"]["index"]
        if not (_in_range(train_index, len(full.train)) and _in_range(train_label, num_classes)
                and _in_range(val_index, len(full.val))):  # fmt: skip
            raise ValueError("a sample index or label out of range")  # (a negative one would count from the end)
        train = tuple(
            full.train[i].relabel(y, full.classnames[y]) if y != full.train[i].label else full.train[i]
            for i, y in zip(train_index, train_label, strict=True)
        )
        val = tuple(full.val[i] for i in val_index)
    except (DataError, KeyError, TypeError, IndexError, ValueError, AttributeError) as exc:
        logger.warning("few-shot cache %s is unreadable (%s); rebuilding it", file, exc)
        return None
    logger.info("loaded few-shot split from %s", file)
    return train, val


SemanticTargets = Callable[[Sequence[str]], np.ndarray]  # class names -> (C,) nearest-class map or (C, C) similarity
ImageFeatures = Callable[[Sequence[Sample]], np.ndarray]  # training samples -> (N, d) image features


def prepare_fewshot(
    dataset: str,
    root: str | Path,
    shots: int | str,
    noise: NoiseSpec = NO_NOISE,
    seed: int = 1,
    path: str | None = None,
    cache_dir: Path | str | None = None,
    check_files: bool = True,
    *,
    semantic_targets: SemanticTargets | np.ndarray | None = None,
    image_features: ImageFeatures | None = None,
    backbone: str | None = None,
) -> DatasetSplits:
    """K-shot noisy train, min(K, 4)-shot clean val and the full clean test split of ``dataset``.

    Args:
        dataset, root, path: as for :func:`~visprompt.data.datasets.load_dataset`.
        shots: K images per class (a class holding fewer raises :class:`DataError`), or ``"all"``: the whole
            training split (what an audit covers); validation then keeps 4 images per class.
        noise: the noise setting (:func:`~visprompt.data.noise.apply_noise`).
        seed: seeds the few-shot choice and the noise (separate streams).
        cache_dir: where the realisation is cached (None: no cache).
        check_files: raise if any listed image is missing (one stat per image).
        semantic_targets: asym-semantic: the nearest-class map (or similarity) of the task's classes, or a callable
            computing it from the class names.
        image_features: instance: a callable giving the (N, d) image features of the K-shot training samples.
        backbone: names the frozen CLIP (arch and weights) for the cache key of asym-semantic/instance noise.
    """
    _check_settings(shots, noise)
    full = load_dataset(dataset, root, path)
    fingerprint = splits_fingerprint(full)
    if "features" in noise.definition.needs and not noise.is_clean:  # the noise reads the images' pixels too
        fingerprint = _with_file_stats(fingerprint, full.train)
    task = _task_splits(full, noise)
    _check_classes(task)
    tag, backbone = _tagged(noise, backbone, cache_dir is not None)
    file = None
    if cache_dir is not None:
        file = cache_path(cache_dir, get_spec(dataset).name, shots, seed, tag, path)
    cached = _from_cache(file, full, fingerprint, task.num_classes) if file is not None and file.is_file() else None
    if cached is not None:
        train, val = cached
    else:
        if shots == ALL_SHOTS:
            train = task.train
            val_shots = VAL_SHOTS
        else:
            train = sample_few_shot(task.train, shots, np.random.default_rng([_TRAIN_STREAM, seed]))
            val_shots = min(shots, VAL_SHOTS)
        val = sample_few_shot(
            task.val, val_shots, np.random.default_rng([_VAL_STREAM, seed]), strict=False, where="val split"
        )
        train = _add_noise(train, full, task, noise, seed, semantic_targets, image_features)
    splits = DatasetSplits(name=full.name, classnames=task.classnames, train=train, val=val, test=task.test)
    if check_files:
        _check_files(splits)
    stats = _split_stats(splits)
    _check_realised_rate(noise, stats, shots)
    if file is not None and cached is None:
        record = {
            "format": CACHE_FORMAT,
            "key": {"dataset": full.name, "path": path, "shots": shots, "seed": seed, "noise": asdict(noise),
                    **({"backbone": backbone} if backbone is not None else {})},
            "fingerprint": fingerprint,
            "num_classes": full.num_classes,
            "train": {"index": [s.index for s in train], "label": [s.label for s in train]},
            "val": {"index": [s.index for s in val]},
            "stats": stats,
        }  # fmt: skip
        atomic_write_json(file, record)
        logger.info("cached few-shot split in %s", file)
    logger.info("%s: %s-shot train %d images (%d noisy), val %d, test %d", full.name, shots, len(train),
                stats["num_noisy"], len(val), len(task.test))  # fmt: skip
    return splits


def _with_file_stats(fingerprint: str, samples: Sequence[Sample]) -> str:
    """``fingerprint`` extended by each image file's size and modification time: for noise computed from the
    images (``instance``), whose cached labels an image rewritten under its old name would otherwise keep."""
    h = hashlib.sha256(fingerprint.encode())
    for s in samples:
        try:
            st = os.stat(s.path)
            h.update(f"{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(b"missing\n")
    return h.hexdigest()[:16]


def _check_realised_rate(noise: NoiseSpec, stats: dict[str, Any], shots: int | str) -> None:
    """Refuse a noise rate that can flip no label of the training set (floor(rate x N) = 0: a clean run under a
    noisy label); warn where the realised rate is off the nominal one by more than half a point."""
    known = stats["num_samples"] - stats["num_unknown"]
    if noise.type == "pairs-per-class" or noise.rate == 0 or not known:
        return
    flipped = stats["num_noisy"]
    if num_noisy(known, noise.rate) == 0:  # instance noise draws its flips: none by chance is a draw, not the rate
        raise DataError(
            f"noise.type={noise.type} noise.rate={noise.rate} flips none of the {known} training labels ({shots} "
            "shots per class), so the run would be clean under a noisy label: use more shots or a higher rate"
        )
    if noise.type != "instance" and abs(flipped / known - noise.rate) > 0.005:  # instance: a mean rate, drawn
        logger.warning("noise.rate=%s flips %d of %d training labels: a realised rate of %.1f%%", noise.rate, flipped,
                       known, 100 * flipped / known)  # fmt: skip


def _add_noise(
    train: tuple[Sample, ...],
    full: DatasetSplits,
    task: DatasetSplits,
    noise: NoiseSpec,
    seed: int,
    semantic_targets: SemanticTargets | np.ndarray | None,
    image_features: ImageFeatures | None,
) -> tuple[Sample, ...]:
    """``apply_noise`` with the inputs the noise type needs (computed here, only when some sample flips)."""
    targets = features = None
    pool: tuple[Sample, ...] = ()
    needs = noise.definition.needs
    flips = not noise.is_clean and len(train) > 0
    if "targets" in needs and flips and semantic_targets is not None:
        targets = semantic_targets(task.classnames) if callable(semantic_targets) else semantic_targets
    if "features" in needs and flips and image_features is not None:
        features = image_features(train)
    if "pool" in needs:
        pool = tuple(s for s in full.train if s.label >= task.num_classes)  # the held-out classes' training images
    return apply_noise(train, task.classnames, noise, seed, targets=targets,
                       features=features, pool=pool)  # fmt: skip


# ------------------------------------------------------------------------------------------- run-directory record


def _relative(path: str, base: str) -> str:
    prefix = base.rstrip(os.sep) + os.sep
    return path[len(prefix) :] if base and path.startswith(prefix) else os.path.relpath(path, base) if base else path


def _columns(samples: Sequence[Sample], base: str) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {
        "index": [s.index for s in samples],
        "path": [_relative(s.path, base) for s in samples],
        "label": [s.label for s in samples],
        "true_label": [s.true_label for s in samples],
    }
    if any(s.label_wrong for s in samples):  # only where some label is known wrong (Food-101N's training split)
        columns["label_wrong"] = [s.label_wrong for s in samples]
    return columns


def _split_stats(splits: DatasetSplits) -> dict[str, Any]:
    """:func:`noise_stats` of the training split, with ``num_open_set`` where some images lie outside the classes."""
    outside = any(s.true_label is not None and s.true_label >= splits.num_classes for s in splits.train)
    return noise_stats(splits.train, splits.num_classes if outside else None)


def splits_to_json(splits: DatasetSplits) -> dict[str, Any]:
    """A self-contained JSON-able record of ``splits`` (paths relative to their common folder ``root``)."""
    paths = [s.path for key in ("train", "val", "test") for s in getattr(splits, key)]
    base = os.path.commonpath(paths) if paths else ""
    if base and paths and base in paths:  # a single image: its folder is the base
        base = os.path.dirname(base)
    return {
        "format": SPLITS_FORMAT,
        "name": splits.name,
        "classnames": list(splits.classnames),
        "root": base,
        **{key: _columns(getattr(splits, key), base) for key in ("train", "val", "test")},
        "stats": _split_stats(splits),
    }


def _class_index(value: Any, num_classes: int | None, where: str) -> int:
    """``value`` as a class index: an integer in [0, num_classes) (None: no upper bound), else a DataError."""
    too_big = num_classes is not None and isinstance(value, int) and value >= num_classes
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or too_big:
        bound = f"in [0, {num_classes})" if num_classes is not None else ">= 0"
        raise DataError(f"split record: {where} is {value!r}, expected a class index {bound}")
    return value


def _split_samples(key: str, col: dict[str, Any], base: str, classnames: tuple[str, ...]) -> tuple[Sample, ...]:
    """Split ``key``'s samples from its columns in a split record, every label checked (:func:`splits_from_json`)."""
    wrong = col.get("label_wrong", [False] * len(col["index"]))
    samples = []
    rows = zip(col["index"], col["path"], col["label"], col["true_label"], wrong, strict=True)
    for j, (i, p, y, t, w) in enumerate(rows):
        y = _class_index(y, len(classnames), f"{key}.label[{j}]")
        if t is not None:
            t = _class_index(t, None if key == "train" else len(classnames), f"{key}.true_label[{j}]")
        if not isinstance(w, bool) or (w and t is not None):
            raise DataError(
                f"split record: {key}.label_wrong[{j}] is {w!r}, expected true or false (true only where true_label "
                "is null)"
            )
        if key != "train" and (w or t not in (None, y)):  # evaluation scores against the label
            raise DataError(
                f"split record: {key}.label[{j}] is {y}, which its true label says is wrong ({key} labels are scored "
                "as the truth; only train labels may be noisy)"
            )
        samples.append(Sample(int(i), os.path.join(base, p) if base else p, y, t, classnames[y], label_wrong=w))
    return tuple(samples)


def splits_from_json(data: dict[str, Any]) -> DatasetSplits:
    """The inverse of :func:`splits_to_json`; a malformed record raises :class:`DataError`.

    Labels must be class indices in [0, C) (a negative one would be read as a class counted from the end), and so
    must known true labels, except a training image's from outside the label set (open-set noise: >= C); a
    validation or test label must not contradict its true label (they are scored against the label).
    """
    if not isinstance(data, dict) or data.get("format") != SPLITS_FORMAT:
        raise DataError(f"split record: expected format {SPLITS_FORMAT!r}")
    try:
        classnames = tuple(str(c) for c in data["classnames"])
        parts = {key: _split_samples(key, data[key], data["root"], classnames) for key in ("train", "val", "test")}
        return DatasetSplits(name=str(data["name"]), classnames=classnames, **parts)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise DataError(f"split record: malformed ({type(exc).__name__}: {exc})") from None


def write_splits(splits: DatasetSplits, file: str | Path) -> Path:
    """Write :func:`splits_to_json` of ``splits`` to ``file`` atomically."""
    return atomic_write_json(file, splits_to_json(splits))


def read_splits(file: str | Path) -> DatasetSplits:
    """Read a file written by :func:`write_splits`."""
    try:
        return splits_from_json(read_json(file, "split record"))
    except DataError as exc:
        raise DataError(str(exc).replace("split record:", f"split record {file}:", 1)) from None
