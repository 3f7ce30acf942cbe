"""The prompt learners, by name.

``PROMPT_LEARNERS.get("coop" | "cocoop" | "visprompt")`` returns the class; each is built as
``cls(clip, classnames, **options)`` and exposes ``forward(pooled, tokens, length) -> PromptEmbeddings``,
``prefix_len``, ``pool_index``, ``per_image`` and ``last_stats()``.
"""

from __future__ import annotations

from visprompt.models.cocoop import CoCoOpPromptLearner
from visprompt.models.coop import CoOpPromptLearner
from visprompt.models.visprompt import VisPromptLearner
from visprompt.registry import Registry

PROMPT_LEARNERS: Registry[type] = Registry("prompt learner")
PROMPT_LEARNERS.register("coop")(CoOpPromptLearner)
PROMPT_LEARNERS.register("cocoop")(CoCoOpPromptLearner)
PROMPT_LEARNERS.register("visprompt")(VisPromptLearner)

__all__ = ["PROMPT_LEARNERS", "CoCoOpPromptLearner", "CoOpPromptLearner", "VisPromptLearner"]
