"""CoOp: learnable context vectors shared by all images (Zhou et al., "Learning to Prompt for Vision-Language
Models", IJCV 2022, arXiv 2109.01134).

Notation: C classes, M context tokens, D text width. The prompt of class k is
``[SOS] [ctx_1 .. ctx_M] [name_k] [.] [EOT]`` (or the class name in the middle / at the front), the same for
every image, so the text side runs once per step: P = 1 context.
"""

from __future__ import annotations

from visprompt.models.context import ContextPromptLearner


class CoOpPromptLearner(ContextPromptLearner):
    """CoOp's prompt learner: the context vectors are its only parameters (M x D, or C x M x D with ``csc``).

    Args:
        clip: the frozen CLIP (read at construction only).
        classnames: C class names.
        n_ctx: M context tokens (overridden by the token count of ``ctx_init``).
        ctx_init: initialising phrase ("" for N(0, 0.02^2)).
        csc: class-specific context.
        class_token_position: ``"end"``, ``"middle"`` or ``"front"``.
    """
