"""The testbed's downstream few-shot tasks: what each one classifies, its domain shift and its split sizes.

Every task classifies one attribute of the main object or scene (the other attributes vary freely) and is
rendered with a shift away from pretraining (:class:`~visprompt.testbed.render.Style`): unseen background
textures blended in, tint and contrast changes, blur, pixel noise and more clutter. The attributes were chosen
among those pretraining captions name only sometimes (``world.MENTION_PROB``), so zero-shot transfer is
partial and few-shot prompt learning has room to improve on it (TESTBED-NOTES.md).

:data:`TASKS` is the registry-ready list (name, folder, split file, class names, expected counts) that the
data layer's dataset registry consumes; :mod:`visprompt.testbed.build` writes the files.
"""

from __future__ import annotations

from dataclasses import dataclass

from visprompt.testbed.render import Style
from visprompt.testbed.world import BACKGROUNDS, PATTERNS, POSITIONS, SHAPES

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
    attribute: str  # the scene attribute classified (a field of world.Scenes)
    classnames: tuple[str, ...]  # class names, index = label = attribute value
    template: str  # zero-shot prompt template with one "{}" for the class name
    style: Style  # the domain shift it is rendered with
    train_per_class: int = 50  # train images per class (16-shot sampling with noisy labels draws from these)
    val_per_class: int = 10
    test_per_class: int = 100
    flip_invariant: bool = True  # False when a horizontal flip or a crop can change the label (positions)

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


TASKS: tuple[TaskSpec, ...] = (
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
    TaskSpec(
        "testbed-backgrounds",
        "testbed_backgrounds",
        "split_zhou_TestbedBackgrounds.json",
        "background",
        BACKGROUNDS,
        "a photo of an object on {}.",
        SHIFT_MILD,
    ),
)
TASKS_BY_NAME = {t.name: t for t in TASKS}


def registry_entries() -> list[dict]:
    """Keyword arguments of ``visprompt.data.datasets.register_coop_dataset`` for every task."""
    entries = []
    for t in TASKS:
        c = t.expected_counts
        expected = (t.num_classes, c["train"], c["val"], c["test"])
        entries.append({"name": t.name, "folder": t.folder, "split_file": t.split_file, "expected": expected})
    return entries


def vocabulary_phrases() -> list[str]:
    """Every phrase the tiny CLIP's vocabulary must cover: the world's words, class names, templates."""
    from visprompt.testbed.world import world_words

    phrases = [*world_words(), COOP_INIT, "."]
    for task in TASKS:
        phrases += [task.template.format(c) for c in task.classnames]
    return phrases
