"""Sample records and dataset splits: plain, immutable data shared by every part of the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, replace

from visprompt.errors import DataError

__all__ = ["TRUTH_LABEL_WRONG", "TRUTH_UNKNOWN", "DatasetSplits", "Sample", "true_label_code"]

# Tensors of true labels (the training loop's ``true_labels``) hold a class index, or one of these negative codes;
# every reader tests ``>= 0`` before it takes an entry for a class.
TRUTH_UNKNOWN = -1  # the true label is unknown
TRUTH_LABEL_WRONG = -2  # the label is known wrong, the true class is not (Sample.label_wrong)


@dataclass(frozen=True)
class Sample:
    """One labelled image.

    ``label`` is the label training sees (after noise injection, the observed, possibly wrong one);
    ``true_label`` is the dataset's annotation where known (``None`` for real-noise data such as Food101N); an
    image from outside the task's C classes (open-set noise) has its class in the full dataset there, an index
    >= C: known, never equal to ``label``, so it counts as noisy. ``label_wrong`` marks a label known to be wrong
    whose true class is unknown (``true_label`` None: Food-101N's images that its annotators verified as
    mislabelled); it counts as noisy. ``classname`` is the name of ``label``.
    """

    index: int  # position in its split as read from disk (stable across runs)
    path: str  # absolute path of the image file
    label: int  # observed label in [0, C)
    true_label: int | None  # clean label in [0, C) (>= C: outside the label set), None when unknown
    classname: str  # class name of `label`
    label_wrong: bool = False  # the label is known wrong, its true class unknown (true_label is None)

    def __post_init__(self) -> None:
        if self.label_wrong and self.true_label is not None:
            raise ValueError(f"sample {self.path}: label_wrong is for an unknown true class, true_label is given")

    @property
    def is_noisy(self) -> bool | None:
        """Whether the observed label differs from the true one (None when the truth is unknown)."""
        if self.label_wrong:
            return True
        return None if self.true_label is None else self.label != self.true_label

    def relabel(self, label: int, classname: str) -> Sample:
        """A copy carrying a new observed label (the true label is kept; a new label for one known wrong is of
        unknown truth)."""
        wrong = self.label_wrong and label == self.label
        return replace(self, label=label, classname=classname, label_wrong=wrong)


def true_label_code(sample: Sample) -> int:
    """``sample``'s entry in a tensor of true labels: its true class, :data:`TRUTH_LABEL_WRONG` or
    :data:`TRUTH_UNKNOWN`."""
    if sample.true_label is not None:
        return sample.true_label
    return TRUTH_LABEL_WRONG if sample.label_wrong else TRUTH_UNKNOWN


@dataclass(frozen=True)
class DatasetSplits:
    """The train/val/test splits of one dataset and its cleaned class names (index = label)."""

    name: str
    classnames: tuple[str, ...]
    train: tuple[Sample, ...]
    val: tuple[Sample, ...]
    test: tuple[Sample, ...]

    def __post_init__(self) -> None:
        seen: dict[str, int] = {}
        for k, name in enumerate(self.classnames):
            key = name.lower()  # CLIP's tokenizer ignores case: one prompt for both, and tables keyed by name drop one
            if key in seen:
                raise DataError(
                    f"dataset {self.name}: classes {seen[key]} and {k} are both named {name!r} (case is ignored)"
                )
            seen[key] = k

    @property
    def num_classes(self) -> int:
        return len(self.classnames)
