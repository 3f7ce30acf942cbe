"""CoCoOp: a meta-network shifts the context by an image-conditioned bias (Zhou et al., "Conditional Prompt
Learning for Vision-Language Models", CVPR 2022, arXiv 2203.05557).

Notation: B images, C classes, M context tokens, D text width, E joint width.

    pi_b = MetaNet(f_b / |f_b|)          # (B, D)   Linear(E, E/16) - ReLU - Linear(E/16, D)
    ctx_b = ctx + pi_b                   # (B, M, D) the same shift for every context token

so each image has its own prompts: P = B contexts. Defaults follow the published configuration
(M = 4 initialised from "a photo of a").
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from visprompt.models.context import ContextPromptLearner
from visprompt.models.frozen_clip import FrozenCLIP
from visprompt.models.text import PromptEmbeddings


class CoCoOpPromptLearner(ContextPromptLearner):
    """CoCoOp's prompt learner: shared context vectors plus a meta-net bias from the pooled image embedding.

    Args:
        clip: the frozen CLIP (read at construction only).
        classnames: C class names.
        n_ctx, ctx_init, class_token_position: as for CoOp (class-specific context does not apply).
        reduction: the meta-net's hidden width is E // reduction.
    """

    per_image = True  # one context per image (P = B)

    def __init__(
        self,
        clip: FrozenCLIP,
        classnames: Sequence[str],
        n_ctx: int = 4,
        ctx_init: str = "a photo of a",
        class_token_position: str = "end",
        reduction: int = 16,
    ) -> None:
        super().__init__(clip, classnames, n_ctx, ctx_init, False, class_token_position)
        embed_dim, width = clip.embed_dim, clip.width
        hidden = max(1, embed_dim // reduction)
        self.meta_net = nn.Sequential(
            OrderedDict(
                linear1=nn.Linear(embed_dim, hidden),
                relu=nn.ReLU(inplace=True),
                linear2=nn.Linear(hidden, width),
            )
        ).to(device=clip.device, dtype=clip.dtype)

    def forward(
        self, pooled: torch.Tensor | None = None, tokens: torch.Tensor | None = None, length: int | None = None
    ) -> PromptEmbeddings:
        """Prompt embeddings for P = B image-conditioned contexts."""
        if pooled is None:
            raise ValueError("CoCoOp needs the pooled image embedding")
        ctx = self.context.ctx
        shift = self.meta_net(F.normalize(pooled.to(ctx.dtype), dim=-1))  # (B, D)
        return self.context.assemble(ctx[None] + shift[:, None], length)  # ctx_b: (B, M, D)
