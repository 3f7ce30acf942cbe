"""Few-shot sampling: K images per class, drawn without replacement by a seeded generator.

The protocol (CoOp's ``generate_fewshot_dataset``): the training split keeps K images per class, the validation
split min(K, 4). Sampling happens before any label noise, on the dataset's own labels, so the same seed gives the
same images whatever the noise; each sample keeps its ``index`` in the full split. O(N).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from visprompt.data.records import Sample
from visprompt.errors import ConfigError, DataError

__all__ = ["group_by_label", "sample_few_shot"]


def group_by_label(samples: Sequence[Sample]) -> dict[int, list[int]]:
    """Positions of the samples of each label, labels in increasing order."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, sample in enumerate(samples):
        groups[sample.label].append(i)
    return {label: groups[label] for label in sorted(groups)}


def sample_few_shot(
    samples: Sequence[Sample],
    shots: int,
    seed: int | np.random.Generator,
    strict: bool = True,
    where: str = "train split",
) -> tuple[Sample, ...]:
    """``shots`` samples of every label, chosen uniformly without replacement, ordered by (label, index).

    Args:
        samples: the full split.
        shots: K, images per class (>= 1).
        seed: an integer seed or a numpy Generator (consumed in label order).
        strict: a class holding fewer than K images raises :class:`DataError`; otherwise it keeps all it has.
        where: names the split in error messages.
    """
    if isinstance(shots, bool) or not isinstance(shots, (int, np.integer)) or shots < 1:
        raise ConfigError(f"data.shots: expected an integer >= 1, got {shots!r}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    chosen: list[Sample] = []
    for label, positions in group_by_label(samples).items():
        if len(positions) < shots:
            if strict:
                name = samples[positions[0]].classname
                raise DataError(
                    f"{where}: class {name!r} (label {label}) holds {len(positions)} images, fewer than shots={shots}"
                )
            picked = positions
        else:
            picked = [positions[i] for i in rng.choice(len(positions), size=shots, replace=False)]
        chosen += sorted((samples[i] for i in picked), key=lambda s: s.index)
    return tuple(chosen)
