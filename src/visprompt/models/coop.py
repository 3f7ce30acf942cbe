"""CoOp: learnable context vectors shared by all images (Zhou et al., "Learning to Prompt for Vision-Language
Models", IJCV 2022, arXiv 2109.01134).

Notation: C classes, M context tokens, D text width. The prompt of class k is
``[SOS] [ctx_1 .. ctx_M] [name_k] [.] [EOT]`` (or the class name in the middle / at the front), the same for
every image, so the text side runs once per step: P = 1 context.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from visprompt.models.context import PromptContext
from visprompt.models.frozen_clip import FrozenCLIP
from visprompt.models.text import PromptEmbeddings


class CoOpPromptLearner(nn.Module):
    """CoOp's prompt learner: the context vectors are its only parameters (M x D, or C x M x D with ``csc``).

    Args:
        clip: the frozen CLIP (read at construction only).
        classnames: C class names.
        n_ctx: M context tokens (overridden by the token count of ``ctx_init``).
        ctx_init: initialising phrase ("" for N(0, 0.02^2)).
        csc: class-specific context.
        class_token_position: ``"end"``, ``"middle"`` or ``"front"``.
    """

    per_image = False  # the prompts do not depend on the image (P = 1)
    uses_tokens = False  # the visual tokens are not read

    def __init__(
        self,
        clip: FrozenCLIP,
        classnames: Sequence[str],
        n_ctx: int = 16,
        ctx_init: str = "",
        csc: bool = False,
        class_token_position: str = "end",
    ) -> None:
        super().__init__()
        self.context = PromptContext(clip, classnames, n_ctx, ctx_init, csc, class_token_position)

    @property
    def prefix_len(self) -> int:
        return self.context.prefix_len

    @property
    def pool_index(self) -> torch.Tensor:
        return self.context.pool_index

    def forward(
        self, pooled: torch.Tensor | None = None, tokens: torch.Tensor | None = None, length: int | None = None
    ) -> PromptEmbeddings:
        """Prompt embeddings for one context (P = 1); the image features are not used."""
        return self.context.assemble(self.context.ctx, length)

    def last_stats(self) -> dict[str, float]:
        return {}
