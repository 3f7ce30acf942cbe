"""Learnable prompt context (CoOp) and the assembly of prompt embeddings around class names.

Notation: P contexts (1, or B when the context depends on the image), C classes, M context tokens, D text width,
L tokens.

A prompt is ``[SOS] [ctx_1 .. ctx_M] [class-name tokens] [.] [EOT] [pad ...]`` (``class_token_position =
"end"``), or with the class name in the ``"middle"`` (after ctx_1..ctx_{M/2}) or at the ``"front"`` (right
after SOS). The context is shared by all classes (``csc=False``) or class-specific (``csc=True``). It is
initialised N(0, 0.02^2) or from the token embeddings of a phrase (``ctx_init``, which then sets M).

The class-name part is tokenised once; its frozen token embeddings are kept as a non-persistent buffer (they
are rebuilt from the class names, never checkpointed). Assembly returns a
:class:`~visprompt.models.text.PromptEmbeddings`: with the class name at the end and a shared context, the
prefix is ``[SOS, ctx]`` (K = 1 + M, the case the prefix-shared text path accelerates); otherwise the prefix is
``[SOS]`` alone and the context is scattered into each class's body.

:class:`ContextPromptLearner` is the part the prompt learners share: it owns a :class:`PromptContext` and
exposes the interface :class:`~visprompt.models.classifier.PromptClassifier` reads (``prefix_len``,
``pool_index``, ``per_image``, ``uses_tokens``, ``last_stats``); its forward assembles the plain context (CoOp).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from visprompt.errors import ConfigError
from visprompt.models.frozen_clip import FrozenCLIP
from visprompt.models.text import PromptEmbeddings

logger = logging.getLogger(__name__)

CLASS_TOKEN_POSITIONS = ("end", "middle", "front")
CTX_INIT_STD = 0.02


def _content_ids(row: torch.Tensor) -> list[int]:
    """Token ids between SOS and EOT of one tokenizer row (EOT is the largest id, CLIP's convention)."""
    return row[1 : int(row.argmax())].tolist()


def clean_classname(name: str) -> str:
    """Class names as CoOp writes them into prompts: underscores become spaces."""
    return name.replace("_", " ").strip()


class PromptContext(nn.Module):
    """The learnable context vectors and the frozen class-name embeddings they are assembled with.

    Args:
        clip: the frozen CLIP (read at construction only; not stored).
        classnames: C class names.
        n_ctx: M, the number of context tokens (overridden by the token count of ``ctx_init``).
        ctx_init: a phrase whose token embeddings initialise the context ("" for N(0, 0.02^2)).
        csc: class-specific context (C x M vectors) instead of one shared context (M vectors).
        class_token_position: ``"end"``, ``"middle"`` or ``"front"``.

    Randomness comes from torch's global generator (seed it for reproducibility).
    """

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
        if class_token_position not in CLASS_TOKEN_POSITIONS:
            raise ConfigError(
                f"class_token_position must be one of {CLASS_TOKEN_POSITIONS}, got {class_token_position!r}"
            )
        if not classnames:
            raise ConfigError("prompt learner needs at least one class name")
        reason = clip.text_unsupported_reason()
        if reason is not None:
            raise ConfigError(reason)
        self.classnames = [clean_classname(n) for n in classnames]
        self.csc = csc
        self.class_token_position = class_token_position
        width, n_cls = clip.width, len(self.classnames)
        param = dict(device=clip.device, dtype=clip.dtype)

        if ctx_init:
            phrase = _content_ids(clip.tokenize([clean_classname(ctx_init)])[0])
            if not phrase:
                raise ConfigError(f"ctx_init {ctx_init!r} has no tokens: expected a phrase with words")
            if len(phrase) != n_ctx:
                logger.info(
                    "ctx_init %r has %d tokens: using n_ctx=%d (not %d)", ctx_init, len(phrase), len(phrase), n_ctx
                )
            n_ctx = len(phrase)
            with torch.no_grad():
                init = clip.token_embedding(torch.tensor(phrase, device=clip.device)).to(clip.dtype)  # (M, D)
            ctx = init.repeat(n_cls, 1, 1) if csc else init  # (C, M, D) or (M, D)
        else:
            if n_ctx < 1:
                raise ConfigError(f"n_ctx must be >= 1 without ctx_init, got {n_ctx}")
            ctx = torch.empty(*((n_cls,) if csc else ()), n_ctx, width, **param).normal_(0.0, CTX_INIT_STD)
        self.n_ctx = n_ctx
        self.ctx = nn.Parameter(ctx.clone())  # (M, D) or (C, M, D)

        ids, slots = self._templates(clip, n_ctx)
        with torch.no_grad():
            embeds = clip.token_embedding(ids).to(clip.dtype)  # (C, L, D)
        self.register_buffer("token_embeds", embeds, persistent=False)
        self.register_buffer("ctx_slot", slots, persistent=False)  # (C, L): context index at each position or -1
        self.register_buffer("pool_index", clip.pool_index(ids), persistent=False)  # (C,)
        self.register_buffer("token_ids", ids, persistent=False)  # (C, L), 0 at context positions
        self.prefix_len = 1 + n_ctx if class_token_position == "end" and not csc else 1

    def _templates(self, clip: FrozenCLIP, n_ctx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (C, L) of each class's prompt (0 at context positions) and the context slot map (C, L)."""
        rows = clip.tokenize(["", ".", *self.classnames])  # (2 + C, L)
        sos, eot = int(rows[0, 0]), int(rows[0].max())  # CLIP: EOT has the largest id
        dot = _content_ids(rows[1])
        length = clip.context_length
        ctx = [(0, -(i + 1)) for i in range(n_ctx)]  # placeholder id 0 with slot i, encoded as -(i+1)
        half = n_ctx // 2
        all_ids, all_slots = [], []
        for name, row in zip(self.classnames, rows[2:], strict=True):
            name_tok = [(t, 0) for t in _content_ids(row)]
            dot_tok = [(t, 0) for t in dot]
            if self.class_token_position == "end":
                body = ctx + name_tok + dot_tok
            elif self.class_token_position == "middle":
                body = ctx[:half] + name_tok + ctx[half:] + dot_tok
            else:
                body = name_tok + ctx + dot_tok
            seq = [(sos, 0), *body, (eot, 0)]
            if len(seq) > length:
                raise ConfigError(
                    f"prompt for class {name!r} has {len(seq)} tokens with n_ctx={n_ctx}; the limit is {length}"
                )
            seq += [(0, 0)] * (length - len(seq))
            all_ids.append([t for t, _ in seq])
            all_slots.append([-s - 1 for _, s in seq])  # -(i+1) -> i for context, 0 -> -1 elsewhere
        ids = torch.tensor(all_ids, dtype=torch.long, device=clip.device)
        return ids, torch.tensor(all_slots, dtype=torch.long, device=clip.device)

    @property
    def num_classes(self) -> int:
        return self.token_embeds.shape[0]

    def assemble(self, ctx: torch.Tensor, length: int | None = None) -> PromptEmbeddings:
        """Prompt embeddings with the given context, ``length`` tokens long (default: the full context length).

        Args:
            ctx: (M, D), or (C, M, D) when class-specific, optionally with a leading per-context dim P:
                (P, M, D) / (P, C, M, D).
        """
        frozen = self.token_embeds  # (C, L, D)
        length = frozen.shape[1] if length is None else length
        per_context = ctx.dim() == (4 if self.csc else 3)
        ctx = ctx if per_context else ctx[None]  # (P, M, D) or (P, C, M, D)
        n_ctx_sets, n_cls, width = ctx.shape[0], frozen.shape[0], frozen.shape[-1]
        k = self.prefix_len
        if k > 1:  # class name at the end, shared context: the prefix is [SOS, ctx]
            sos = frozen[:1, :1].expand(n_ctx_sets, 1, width)  # (P, 1, D)
            prefix = torch.cat([sos, ctx.to(frozen.dtype)], dim=1)  # (P, K, D)
            return PromptEmbeddings(prefix, frozen[None, :, k:length], self.pool_index)
        per_class = ctx if self.csc else ctx[:, None].expand(n_ctx_sets, n_cls, *ctx.shape[1:])  # (P, C, M, D)
        slot = self.ctx_slot[:, 1:length]  # (C, S)
        index = slot.clamp(min=0)[None, :, :, None].expand(n_ctx_sets, n_cls, slot.shape[1], width)  # (P, C, S, D)
        gathered = per_class.to(frozen.dtype).gather(2, index)  # (P, C, S, D)
        body = torch.where((slot >= 0)[None, :, :, None], gathered, frozen[None, :, 1:length])  # (P, C, S, D)
        return PromptEmbeddings(frozen[:1, :1], body, self.pool_index)  # prefix: SOS (1, 1, D)


class ContextPromptLearner(nn.Module):
    """A prompt learner built on a :class:`PromptContext`; as is, CoOp (the same prompts for every image, P = 1).

    Subclasses that condition the context on the image override :meth:`forward` and build their prompts with
    ``self.context.assemble``. Args are those of :class:`PromptContext`.
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
        """Statistics of the last forward for the training log (none here)."""
        return {}
