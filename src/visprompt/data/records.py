"""Sample records and dataset splits: plain, immutable data shared by every part of the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Sample:
    """One labelled image.

    ``label`` is the label training sees (after noise injection, the observed, possibly wrong one);
    ``true_label`` is the dataset's annotation where known (``None`` for real-noise data such as Food101N); an
    image from outside the task's C classes (open-set noise) has its class in the full dataset there, an index
    >= C: known, never equal to ``label``, so it counts as noisy. ``classname`` is the name of ``label``.
    """

    index: int  # position in its split as read from disk (stable across runs)
    path: str  # absolute path of the image file
    label: int  # observed label in [0, C)
    true_label: int | None  # clean label in [0, C) (>= C: outside the label set), None when unknown
    classname: str  # class name of `label`

    @property
    def is_noisy(self) -> bool | None:
        """Whether the observed label differs from the true one (None when the truth is unknown)."""
        return None if self.true_label is None else self.label != self.true_label

    def relabel(self, label: int, classname: str) -> Sample:
        """A copy carrying a new observed label (the true label is kept)."""
        return replace(self, label=label, classname=classname)


@dataclass(frozen=True)
class DatasetSplits:
    """The train/val/test splits of one dataset and its cleaned class names (index = label)."""

    name: str
    classnames: tuple[str, ...]
    train: tuple[Sample, ...]
    val: tuple[Sample, ...]
    test: tuple[Sample, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classnames)
