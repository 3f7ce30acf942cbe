"""VisPrompt's prompt learner: CoOp's context, modulated per image by the cross-modal FiLM block.

VisPrompt (arXiv 2604.09532): "Seeing is Believing: Robust Vision-Guided Cross-Modal Prompt Learning under Label
Noise". Notation: B images, C classes, M context tokens, T visual tokens, D text width, E joint width.

    vis_b = tokens_b (B, T, E)   if vis_tokens == "patch"   (the frozen encoder's joint-space tokens)
          = f_b      (B, 1, E)   if vis_tokens == "global"  (the pooled embedding; attention weights are all 1)
    ctx_b = FiLM(ctx, vis_b)     (B, M, D)   see :mod:`visprompt.models.film`

and class k's prompt for image b is ``[SOS] [ctx_b] [name_k] [.] [EOT]``: P = B contexts. With
``visual_guidance=False`` the block is absent and the learner is CoOp.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from visprompt.errors import ConfigError
from visprompt.models.context import ContextPromptLearner
from visprompt.models.film import CrossModalFiLM
from visprompt.models.frozen_clip import FrozenCLIP
from visprompt.models.text import PromptEmbeddings

VIS_TOKENS = ("patch", "global")


class VisPromptLearner(ContextPromptLearner):
    """Context tokens that read the image through a gated cross-modal FiLM block.

    Args:
        clip: the frozen CLIP (read at construction only).
        classnames, n_ctx, ctx_init, csc, class_token_position: as for CoOp.
        vis_tokens: ``"patch"`` (all visual tokens) or ``"global"`` (the pooled embedding only).
        film_mode, use_ffn, gate, init, num_heads, dropout, gate_lr_scale: options of :class:`CrossModalFiLM`.
        visual_guidance: apply the FiLM block (False: plain CoOp).
    """

    def __init__(
        self,
        clip: FrozenCLIP,
        classnames: Sequence[str],
        n_ctx: int = 16,
        ctx_init: str = "",
        csc: bool = False,
        class_token_position: str = "end",
        *,
        vis_tokens: str = "patch",
        film_mode: str = "tokenwise",
        use_ffn: bool = True,
        gate: str = "learned",
        visual_guidance: bool = True,
        init: str = "default",
        num_heads: int = 8,
        dropout: float = 0.1,
        gate_lr_scale: float = 1.0,
    ) -> None:
        if vis_tokens not in VIS_TOKENS:
            raise ConfigError(f"vis_tokens must be one of {', '.join(VIS_TOKENS)}; got {vis_tokens!r}")
        super().__init__(clip, classnames, n_ctx, ctx_init, csc, class_token_position)
        self.vis_tokens = vis_tokens
        self.film = (
            CrossModalFiLM(
                clip.width,
                clip.embed_dim,
                num_heads=num_heads,
                dropout=dropout,
                film_mode=film_mode,
                use_ffn=use_ffn,
                gate=gate,
                init=init,
                gate_lr_scale=gate_lr_scale,
            ).to(device=clip.device, dtype=clip.dtype)
            if visual_guidance
            else None
        )

    @property
    def per_image(self) -> bool:
        return self.film is not None

    @property
    def uses_tokens(self) -> bool:
        """Whether forward reads the visual tokens (else the pooled embedding suffices)."""
        return self.film is not None and self.vis_tokens == "patch"

    def visual_input(self, pooled: torch.Tensor | None, tokens: torch.Tensor | None) -> torch.Tensor:
        """The visual tokens the block attends to: (B, T, E) or (B, 1, E)."""
        if self.vis_tokens == "global":
            if pooled is None:
                raise ValueError("VisPrompt with vis_tokens='global' needs the pooled image embedding")
            return pooled[:, None]  # (B, 1, E)
        if tokens is None:
            raise ValueError("VisPrompt with vis_tokens='patch' needs the visual tokens (B, T, E)")
        return tokens

    def conditioned_context(self, pooled: torch.Tensor | None, tokens: torch.Tensor | None) -> torch.Tensor:
        """ctx_b: (B, M, D), or (B, C, M, D) with class-specific context."""
        ctx = self.context.ctx  # (M, D) or (C, M, D)
        vis = self.visual_input(pooled, tokens)
        out = self.film(ctx.reshape(-1, ctx.shape[-1]), vis)  # (B, Q, D), Q = M or C*M
        return out.reshape(vis.shape[0], *ctx.shape)  # (B, M, D) or (B, C, M, D)

    def forward(
        self, pooled: torch.Tensor | None = None, tokens: torch.Tensor | None = None, length: int | None = None
    ) -> PromptEmbeddings:
        """Prompt embeddings: P = B image-conditioned contexts (P = 1 without visual guidance)."""
        if self.film is None:
            return super().forward(pooled, tokens, length)
        return self.context.assemble(self.conditioned_context(pooled, tokens), length)

    def last_stats(self) -> dict[str, float]:
        """Mean and standard deviation of the last forward's gate values (empty before any forward)."""
        if self.film is None or self.film.last_gate is None:
            return {}
        g = self.film.last_gate.float()
        return {"gate_mean": float(g.mean()), "gate_std": float(g.std(unbiased=False))}
