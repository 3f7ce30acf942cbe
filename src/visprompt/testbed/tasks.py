"""The testbed's downstream few-shot tasks: what each one classifies, its domain shift and its split sizes.

Every task classifies one attribute of the scene, or a conjunction of two, while the other attributes vary
freely, and is rendered with a shift away from pretraining (:class:`~visprompt.testbed.render.Style`): unseen
background textures blended in, tint and contrast changes, blur, pixel noise, more clutter, and one consistent
camera change per task (a colour cast or a hue rotation, as a different camera or light would make).

The consistent change is what gives prompt learning something to learn. Measured on the shipped checkpoint
(MODEL_CARD.md): under random corruption alone the frozen features hold no more than zero-shot reads out (a
16-shot linear probe and CoOp stay at or below zero-shot, as a first prototype of the testbed found), whereas under a
consistent camera change zero-shot is misled but the features still separate the classes (the linear probe
stays high), and 16 labelled shots per class let CoOp recalibrate the class embeddings.

:data:`TASKS` (the tasks that meet the acceptance targets and that ``build_testbed`` writes by default) and
:data:`EXTRA_TASKS` (shape, pattern and position tasks whose concepts the shipped checkpoint has not aligned
well enough yet) are registry-ready (name, folder, split file, class names, expected counts);
:mod:`visprompt.testbed.build` writes the files.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from visprompt.testbed.render import Style
from visprompt.testbed.world import BACKGROUNDS, COLOURS, PATTERNS, POSITIONS, SHAPES

COOP_INIT = "a photo of a"  # CoOp's default context initialisation; its words must be in the vocabulary

SHIFT = Style(
    noise_prob=0.7,
    noise_std=(0.03, 0.09),
    blur_prob=0.5,
    tint=0.25,
    contrast=(0.6, 1.15),
    lines=(1, 3),
    distractors=(1, 3),
    texture_prob=0.9,
    texture_alpha=(0.3, 0.6),
)
SHIFT_MILD = Style(
    noise_prob=0.6,
    noise_std=(0.02, 0.07),
    blur_prob=0.4,
    tint=0.2,
    contrast=(0.7, 1.1),
    lines=(1, 3),
    distractors=(1, 2),
    texture_prob=0.6,
    texture_alpha=(0.15, 0.35),
)


@dataclass(frozen=True)
class TaskSpec:
    """One downstream task in the CoOp folder layout: ``<root>/<folder>/images/<class>/`` + the split file."""

    name: str  # dataset name (registry key)
    folder: str  # folder under the data root
    split_file: str  # split file name inside the folder (CoOp's split_zhou_<Name>.json)
    attribute: str  # the scene attribute classified (a field of world.Scenes), or several joined by "+"
    classnames: tuple[str, ...]  # class names, index = label
    template: str  # zero-shot prompt template with one "{}" for the class name
    style: Style  # the domain shift it is rendered with
    train_per_class: int = 50  # train images per class (16-shot sampling with noisy labels draws from these)
    val_per_class: int = 10
    test_per_class: int = 100
    flip_invariant: bool = True  # False when a horizontal flip or a crop can change the label (positions)
    fixed: tuple[tuple[str, int], ...] = ()  # other scene attributes held fixed, e.g. (("size", 2),) close-ups
    values: tuple | None = None  # attribute value(s) of each label (None: label = attribute value)

    @property
    def attributes(self) -> tuple[str, ...]:
        return tuple(self.attribute.split("+"))

    def attribute_values(self) -> np.ndarray:
        """(C, A) attribute values (indices into the world's tables) that each label stands for."""
        values = self.values if self.values is not None else range(len(self.classnames))
        return np.asarray(list(values), dtype=np.int64).reshape(len(self.classnames), len(self.attributes))

    @property
    def image_dir(self) -> str:
        return "images"

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    @property
    def expected_counts(self) -> dict[str, int]:
        """Number of images per split."""
        c = self.num_classes
        return {"train": c * self.train_per_class, "val": c * self.val_per_class, "test": c * self.test_per_class}


WARM_LIGHT = (1.0, 0.8, 0.5)  # per-channel gain of a warm (tungsten-like) colour cast
COOL_LIGHT = (0.6, 0.8, 1.0)  # ... and of a cool (shade-like) one
SCENE_COLOURS = ("red", "blue", "yellow")
SCENE_BACKGROUNDS = ("grass", "sand", "water")
MANY_BACKGROUNDS = BACKGROUNDS[:5]  # sky, grass, sand, water, bricks: with the ten colours, 50 classes

TASKS: tuple[TaskSpec, ...] = (
    TaskSpec(
        "testbed-backgrounds",
        "testbed_backgrounds",
        "split_zhou_TestbedBackgrounds.json",
        "background",
        BACKGROUNDS,
        "a photo of an object on {}.",
        dataclasses.replace(SHIFT_MILD, hue=(75.0, 75.0)),
    ),
    TaskSpec(
        "testbed-colours",
        "testbed_colours",
        "split_zhou_TestbedColours.json",
        "colour",
        tuple(COLOURS),
        "a photo of a {} object.",
        dataclasses.replace(SHIFT_MILD, gain=WARM_LIGHT),
    ),
    TaskSpec(
        "testbed-scenes",
        "testbed_scenes",
        "split_zhou_TestbedScenes.json",
        "colour+background",
        tuple(f"{c} object on {b}" for c in SCENE_COLOURS for b in SCENE_BACKGROUNDS),
        "a photo of a {}.",
        dataclasses.replace(SHIFT, gain=COOL_LIGHT),
        values=tuple((list(COLOURS).index(c), BACKGROUNDS.index(b)) for c in SCENE_COLOURS for b in SCENE_BACKGROUNDS),
    ),
    # The many-class task: every colour on five backgrounds, 50 classes. With C = 50 a training mini-batch of 16
    # cannot hold every class, which is where a per-mini-batch OT split with a uniform 1/C class marginal breaks
    # down (the paper's Caltech101, Flowers102, UCF101 and Food-101 have about 100 classes). Smaller train/val/test
    # pools than the 10-class tasks keep a run cheap on a CPU: 16-shot sampling draws from 20 train images per
    # class, and the test set is 20 images per class (1,000 images, as many as the other tasks).
    TaskSpec(
        "testbed-many",
        "testbed_many",
        "split_zhou_TestbedMany.json",
        "colour+background",
        tuple(f"{c} object on {b}" for c in COLOURS for b in MANY_BACKGROUNDS),
        "a photo of a {}.",
        dataclasses.replace(SHIFT_MILD, gain=COOL_LIGHT),
        train_per_class=20,
        val_per_class=4,
        test_per_class=20,
        values=tuple((list(COLOURS).index(c), BACKGROUNDS.index(b)) for c in COLOURS for b in MANY_BACKGROUNDS),
    ),
)
EXTRA_TASKS: tuple[TaskSpec, ...] = (
    TaskSpec(
        "testbed-shapes", "testbed_shapes", "split_zhou_TestbedShapes.json", "shape", SHAPES, "a photo of a {}.", SHIFT
    ),
    TaskSpec(
        "testbed-patterns",
        "testbed_patterns",
        "split_zhou_TestbedPatterns.json",
        "pattern",
        PATTERNS,
        "a photo of a {} object.",
        SHIFT,
    ),
    TaskSpec(
        "testbed-positions",
        "testbed_positions",
        "split_zhou_TestbedPositions.json",
        "position",
        POSITIONS,
        "a photo of an object in the {}.",
        SHIFT,
        flip_invariant=False,
    ),
)
TASKS_BY_NAME = {t.name: t for t in (*TASKS, *EXTRA_TASKS)}


def registry_entries() -> list[dict]:
    """Keyword arguments of ``visprompt.data.datasets.register_coop_dataset`` for every task (extras included)."""
    entries = []
    for t in TASKS_BY_NAME.values():
        c = t.expected_counts
        expected = (t.num_classes, c["train"], c["val"], c["test"])
        entries.append({"name": t.name, "folder": t.folder, "split_file": t.split_file, "expected": expected})
    return entries


def vocabulary_phrases() -> list[str]:
    """Every phrase the tiny CLIP's vocabulary must cover: the world's words, class names, templates."""
    from visprompt.testbed.world import world_words

    phrases = [*world_words(), COOP_INIT, "."]
    for task in TASKS_BY_NAME.values():
        phrases += [task.template.format(c) for c in task.classnames]
    return phrases
