"""The offline testbed: a procedural image world, a tiny CLIP pretrained on it, and few-shot tasks.

A stand-in for real CLIP weights and datasets that exercises every code path offline (DESIGN.md section 6):

- :mod:`~visprompt.testbed.world` and :mod:`~visprompt.testbed.render`: seeded scenes, captions, images.
- :mod:`~visprompt.testbed.vocab`: the real CLIP BPE remapped to a compact vocabulary.
- :mod:`~visprompt.testbed.model` and :mod:`~visprompt.testbed.pretrain`: the tiny CLIP and its pretraining.
- :mod:`~visprompt.testbed.tasks` and :mod:`~visprompt.testbed.build`: the downstream tasks on disk.
"""

from __future__ import annotations

from visprompt.testbed.build import build_testbed
from visprompt.testbed.model import load_testbed_clip
from visprompt.testbed.tasks import TASKS, TaskSpec

__all__ = ["TASKS", "TaskSpec", "build_testbed", "load_testbed_clip"]
