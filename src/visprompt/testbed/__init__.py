"""The offline testbed: a procedural image world, a tiny CLIP pretrained on it, and few-shot tasks.

A stand-in for real CLIP weights and datasets that exercises every code path offline (docs/architecture.md):

- :mod:`~visprompt.testbed.world` and :mod:`~visprompt.testbed.render`: seeded scenes, captions, images.
- :mod:`~visprompt.testbed.vocab`: the real CLIP BPE remapped to a compact vocabulary.
- :mod:`~visprompt.testbed.model` and :mod:`~visprompt.testbed.pretrain`: the tiny CLIP and its pretraining.
- :mod:`~visprompt.testbed.tasks` and :mod:`~visprompt.testbed.build`: the downstream tasks on disk.
"""

from __future__ import annotations

import importlib
from typing import Any

from visprompt.testbed.tasks import TASKS, TaskSpec, registry_entries

__all__ = ["TASKS", "TaskSpec", "build_testbed", "load_testbed_clip", "register_tasks"]

_LAZY = {"build_testbed": "visprompt.testbed.build", "load_testbed_clip": "visprompt.testbed.model"}


def register_tasks() -> None:
    """Register every testbed task in the dataset registry (idempotent), so ``--dataset testbed-...`` works."""
    from visprompt.data.datasets import DATASETS, register_coop_dataset

    for entry in registry_entries():
        if entry["name"] not in DATASETS:
            register_coop_dataset(**entry)


def __getattr__(name: str) -> Any:  # the builders pull in torch: import them on first use
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


register_tasks()
