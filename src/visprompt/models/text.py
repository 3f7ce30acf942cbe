"""The frozen text encoder run on prompt embeddings: a reference path and two exact fast paths.

Notation: P distinct contexts (1 for CoOp, B for image-conditioned prompts), C classes, K prefix tokens
(SOS + M context tokens when the class name is at the end), S suffix tokens, L = K + S tokens, D text width,
E joint width, H heads.

A prompt is split as ``[prefix (K tokens, the same for every class of a context)] [body (per class)]``
(:class:`PromptEmbeddings`). CLIP's text feature is read at one position (the EOT token for CLIP's argmax
pooling): ``t = proj(ln_final(h_L[eot]))``. Three ways to compute it, equal up to float rounding:

* ``"reference"``: all ``context_length`` (77) tokens of all P x C prompts through the transformer, as
  open_clip's ``encode_text`` does.
* ``"truncated"``: under the causal mask, position i attends to positions <= i only, so tokens after the last
  EOT never reach a pooled position; run L = max(eot) + 1 tokens (about 25 of 77 for short class names).
* ``"prefix"``: the prefix's hidden states attend only within the prefix, so they are the same for all classes
  of a context. Per layer l, compute the prefix once per context (P x K tokens) and keep its keys and values
  ``Kp_l, Vp_l``; each class's body (S tokens) then attends to ``[Kp_l; K_body]`` with the causal mask on the
  body part:

      a = softmax([q Kp^T, q Kb^T + causal] / sqrt(d_head)),   out = a[:, :K] Vp + a[:, K:] Vb

  so the transformer runs P x K + P x C x S tokens instead of P x C x L.

``"auto"`` takes the fastest valid one: prefix sharing when the prefix holds context tokens (K >= 2) and the
tower has plain CLIP blocks, else truncation when the tower is causal, else the reference. Classes can be
processed in chunks (``class_chunk``) to bound peak memory; the prefix cache is computed once for all chunks.

The distinct-token floor: the truncated and prefix paths group classes by prompt length, so each class runs
exactly its own tokens up to the pooled one (not the longest class's), and the prefix path runs its last layer
at the pooled position only. Per step the prefix path then runs P x K + P x sum_c (pool_c + 1 - K) positions,
the count of distinct ones (:func:`distinct_positions`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from visprompt.errors import ConfigError
from visprompt.models.frozen_clip import FrozenCLIP

logger = logging.getLogger(__name__)

TEXT_PATHS = ("auto", "reference", "truncated", "prefix")


@dataclass(frozen=True)
class PromptEmbeddings:
    """Token embeddings of P x C prompts, split into a per-context prefix and a per-class body.

    Attributes:
        prefix: (P, K, D) the first K tokens, shared by every class of a context.
        body: (Pb, C, S, D) the following tokens of each class; Pb is 1 (the same body for every context) or P.
        pool_index: (C,) long, the position (in the full sequence, >= K for the prefix path) of the token
            each prompt's feature is read from.
    """

    prefix: torch.Tensor
    body: torch.Tensor
    pool_index: torch.Tensor

    @property
    def num_contexts(self) -> int:
        return max(self.prefix.shape[0], self.body.shape[0])

    @property
    def num_classes(self) -> int:
        return self.body.shape[1]

    @property
    def prefix_len(self) -> int:
        return self.prefix.shape[1]

    def classes(self, index: slice | torch.Tensor) -> PromptEmbeddings:
        """The same prompts restricted to a slice (or a long tensor of indices) of classes."""
        return PromptEmbeddings(self.prefix, self.body[:, index], self.pool_index[index])


def causal_mask(n: int, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Additive causal mask (n, n): 0 on and below the diagonal, -inf above."""
    return torch.full((n, n), float("-inf"), dtype=dtype, device=device).triu_(1)


def _run_transformer(clip: FrozenCLIP, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    transformer = clip.transformer
    if not hasattr(transformer, "batch_first"):  # open_clip < 2.23 took (L, N, D)
        return transformer(x.transpose(0, 1), attn_mask=mask).transpose(0, 1)
    return transformer(x, attn_mask=mask)  # (N, L, D)


def encode_full(clip: FrozenCLIP, prompts: PromptEmbeddings, length: int | None = None) -> torch.Tensor:
    """Reference (``length=None``: all ``context_length`` tokens) or truncated path -> features (P, C, E).

    ``length`` must exceed every pool index; the body is cut to ``length - K`` tokens.
    """
    prefix, body, idx = prompts.prefix, prompts.body, prompts.pool_index
    length = clip.context_length if length is None else length
    n_ctx, n_cls, k, d = prompts.num_contexts, prompts.num_classes, prompts.prefix_len, prefix.shape[-1]
    if body.shape[2] < length - k:
        raise ValueError(f"prompt body has {body.shape[2]} tokens; the {length}-token path needs {length - k}")
    body = body[:, :, : length - k]  # (Pb, C, S, D)
    x = torch.cat([prefix[:, None].expand(n_ctx, n_cls, k, d), body.expand(n_ctx, -1, -1, -1)], dim=2)  # (P, C, L, D)
    x = x.reshape(n_ctx * n_cls, length, d) + clip.positional_embedding[:length].to(x.dtype)  # (N, L, D)
    mask = causal_mask(length, dtype=x.dtype, device=x.device) if clip.causal else None
    x = _run_transformer(clip, x, mask)
    rows = torch.arange(n_ctx * n_cls, device=x.device)
    x = x[rows, idx.repeat(n_ctx)]  # (N, D) at the pooled positions
    return clip.project_text(x).reshape(n_ctx, n_cls, -1)  # (P, C, E)


# -- prefix sharing ------------------------------------------------------------------------------------------


def prefix_unsupported_reason(clip: FrozenCLIP) -> str | None:
    """Why the prefix-shared path cannot run on this text tower, or None."""
    from open_clip.transformer import ResidualAttentionBlock

    if not clip.causal:
        return "the text transformer is not causal"
    for blk in clip.transformer.resblocks:
        attn = getattr(blk, "attn", None)
        if type(blk) is not ResidualAttentionBlock or not isinstance(attn, nn.MultiheadAttention):
            return f"text block {type(blk).__name__} is not a plain CLIP attention block"
        if not attn._qkv_same_embed_dim or attn.bias_k is not None or attn.add_zero_attn or hasattr(blk, "ln_1_kv"):
            return "text attention has separate q/k/v widths, extra key biases or cross-attention"
    return None


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    return x.unflatten(-1, (heads, x.shape[-1] // heads)).transpose(-3, -2)  # (..., S, D) -> (..., H, S, hd)


def prefix_cache(clip: FrozenCLIP, prefix: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Keys and values (P, H, K, hd) of the prefix tokens at every layer, running the prefix once."""
    k = prefix.shape[1]
    h = prefix + clip.positional_embedding[:k].to(prefix.dtype)  # (P, K, D)
    mask = causal_mask(k, dtype=h.dtype, device=h.device)
    blocks = clip.transformer.resblocks
    cache = []
    for i, blk in enumerate(blocks):
        attn = blk.attn
        _, kv = F.linear(blk.ln_1(h), attn.in_proj_weight, attn.in_proj_bias).split([h.shape[-1], 2 * h.shape[-1]], -1)
        key, value = kv.chunk(2, dim=-1)  # (P, K, D) each
        cache.append((_split_heads(key, attn.num_heads), _split_heads(value, attn.num_heads)))  # (P, H, K, hd)
        if i + 1 < len(blocks):
            h = blk(h, attn_mask=mask)  # the prefix's own update: open_clip's block as is
    return cache


def _body_attention(
    blk: nn.Module, h: torch.Tensor, kp: torch.Tensor, vp: torch.Tensor, mask: torch.Tensor, last_only: bool = False
) -> torch.Tensor:
    """Multi-head attention of body tokens (Pb, C, S, D) over [prefix keys; body keys] -> (P, C, S', D).

    ``last_only``: queries at the last body position only (S' = 1); keys and values still cover all S.
    """
    attn = blk.attn
    heads = attn.num_heads
    n_pre, _, k, hd = kp.shape
    n_body, n_cls, s, d = h.shape
    x = blk.ln_1(h)
    w, b = attn.in_proj_weight, attn.in_proj_bias
    if last_only:
        q = F.linear(x[:, :, -1:], w[:d], None if b is None else b[:d])  # (Pb, C, 1, D)
        key, value = F.linear(x, w[d:], None if b is None else b[d:]).chunk(2, dim=-1)  # (Pb, C, S, D)
        mask = mask[-1:]  # the last row of the causal mask: it sees every body token
    else:
        q, key, value = F.linear(x, w, b).chunk(3, dim=-1)  # (Pb, C, S, D)
    sq = q.shape[2]
    q = _split_heads(q, heads) * hd**-0.5  # (Pb, C, H, S', hd)
    key, value = _split_heads(key, heads), _split_heads(value, heads)  # (Pb, C, H, S, hd)
    q_rows = q.permute(0, 2, 1, 3, 4).reshape(n_body, heads, n_cls * sq, hd)  # (Pb, H, C*S', hd)
    p = max(n_pre, n_body)
    s_pre = (q_rows @ kp.transpose(-1, -2)).reshape(p, heads, n_cls, sq, k).permute(0, 2, 1, 3, 4)  # (P,C,H,S',K)
    s_body = q @ key.transpose(-1, -2) + mask  # (Pb, C, H, S', S)
    a = torch.cat([s_pre.expand(p, -1, -1, -1, -1), s_body.expand(p, -1, -1, -1, -1)], dim=-1).softmax(dim=-1)
    a_pre, a_body = a.split([k, s], dim=-1)  # (P, C, H, S', K), (P, C, H, S', S)
    a_rows = a_pre.permute(0, 2, 1, 3, 4).reshape(p, heads, n_cls * sq, k)  # (P, H, C*S', K)
    out = (a_rows @ vp).reshape(p, heads, n_cls, sq, hd).permute(0, 2, 1, 3, 4) + a_body @ value  # (P,C,H,S',hd)
    return attn.out_proj(out.transpose(-3, -2).reshape(p, n_cls, sq, d))  # (P, C, S', D)


def _pool_layout(pool_index: torch.Tensor, prefix_len: int) -> tuple[int, bool]:
    """(S, uniform) of a prefix-path call: body tokens up to the last pooled one, and whether all pool there."""
    if bool((pool_index < prefix_len).any()):
        raise ValueError("prefix-shared path: a pooled position lies inside the shared prefix")
    top = int(pool_index.max())
    return top + 1 - prefix_len, bool((pool_index == top).all())


def encode_prefix_shared(
    clip: FrozenCLIP,
    prompts: PromptEmbeddings,
    cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    layout: tuple[int, bool] | None = None,
) -> torch.Tensor:
    """Prefix-shared path -> features (P, C, E); ``cache`` is :func:`prefix_cache` of ``prompts.prefix``.

    When every class is pooled at the same position (classes grouped by length, as :class:`TextEncoder` does),
    the last layer runs its query, output projection and MLP at that position only: nothing else is read.
    ``layout`` is ``_pool_layout(prompts.pool_index, K)`` when the caller already has it (it is read from the
    pool indices otherwise).
    """
    k, idx = prompts.prefix_len, prompts.pool_index
    s, uniform = _pool_layout(idx, k) if layout is None else layout
    if cache is None:
        cache = prefix_cache(clip, prompts.prefix)
    h = prompts.body[:, :, :s] + clip.positional_embedding[k : k + s].to(prompts.body.dtype)  # (Pb, C, S, D)
    mask = causal_mask(s, dtype=h.dtype, device=h.device)
    blocks = clip.transformer.resblocks
    for i, (blk, (kp, vp)) in enumerate(zip(blocks, cache, strict=True)):
        last_only = uniform and i + 1 == len(blocks)
        res = h[:, :, -1:] if last_only else h
        h = res + blk.ls_1(_body_attention(blk, h, kp, vp, mask, last_only))  # (P, C, S or 1, D) from layer 1 on
        h = h + blk.ls_2(blk.mlp(blk.ln_2(h)))
    h = h.expand(prompts.num_contexts, -1, -1, -1)
    if uniform:
        return clip.project_text(h[:, :, -1])  # (P, C, E): every class pooled at its last body token
    h = h[:, torch.arange(h.shape[1], device=h.device), idx - k]  # (P, C, D) at the pooled positions
    return clip.project_text(h)  # (P, C, E)


# -- path choice ---------------------------------------------------------------------------------------------


def resolve_text_path(clip: FrozenCLIP, path: str, prefix_len: int) -> str:
    """The concrete path for a request (``"auto"`` picks the fastest valid one); invalid requests raise."""
    if path not in TEXT_PATHS:
        raise ConfigError(f"unknown text path {path!r} (expected one of {', '.join(TEXT_PATHS)})")
    no_trunc = None if clip.causal else "the text transformer is not causal"
    no_prefix = prefix_unsupported_reason(clip)
    if no_prefix is None and prefix_len < 2:
        no_prefix = "the prompts share no context prefix across classes (class-specific or non-final class token)"
    if path == "auto":
        return "prefix" if no_prefix is None else "truncated" if no_trunc is None else "reference"
    reason = {"reference": None, "truncated": no_trunc, "prefix": no_prefix}[path]
    if reason is not None:
        raise ConfigError(f"text path {path!r} is not valid for {clip.arch}: {reason}")
    return path


def length_groups(pool_index: torch.Tensor) -> list[torch.Tensor]:
    """Class indices grouped by pooled position (equal prompt lengths), shortest first, each in class order."""
    return [torch.nonzero(pool_index == v).flatten() for v in torch.unique(pool_index).tolist()]


def distinct_positions(pool_index: torch.Tensor, n_contexts: int, prefix_len: int) -> int:
    """Token positions a step cannot avoid: the prefix once per context, each body up to its pooled token once per
    (context, class)."""
    return n_contexts * (prefix_len + int((pool_index + 1 - prefix_len).sum()))


class TextEncoder:
    """Runs prompt embeddings through a frozen CLIP's text tower on a fixed path, optionally in class chunks.

    On the truncated and prefix paths, classes are grouped by prompt length (``bucket``): each group runs
    exactly as many tokens as its prompts have up to the pooled token, instead of every class padded to the
    longest; on the prefix path the last layer then runs at the pooled position only. The features are the
    same up to float rounding (the transformer's outputs at a position depend only on the positions before it).

    Args:
        clip: the frozen CLIP.
        path: ``"auto"``, ``"reference"``, ``"truncated"`` or ``"prefix"``.
        prefix_len: K, the number of tokens the prompts share across classes (decides whether prefix sharing
            pays).
        class_chunk: at most this many classes per pass (None: all at once). Under autograd each chunk is
            checkpointed (its activations are recomputed in the backward pass instead of kept), so a training
            step holds one chunk's activations at a time: peak memory falls with the chunk size, at the cost
            of running the chunks' forward twice. The result is the same.
        bucket: group classes by prompt length (False: pad to the longest, the earlier behaviour; kept for the
            benchmarks' before/after comparison).
    """

    def __init__(
        self,
        clip: FrozenCLIP,
        path: str = "auto",
        prefix_len: int = 1,
        class_chunk: int | None = None,
        *,
        bucket: bool = True,
    ) -> None:
        if class_chunk is not None and class_chunk < 1:
            raise ConfigError(f"class_chunk must be a positive integer or None, got {class_chunk}")
        self.clip = clip
        self.path = resolve_text_path(clip, path, prefix_len)
        self.class_chunk = class_chunk
        self.bucket = bucket
        self._plan: tuple[tuple, _Plan] | None = None  # (settings and pool indices, plan) of the last call

    def required_length(self, pool_index: torch.Tensor) -> int:
        """How many tokens the prompts must provide for this path."""
        return self.clip.context_length if self.path == "reference" else int(pool_index.max()) + 1

    def _groups(self, pool_index: torch.Tensor) -> list[torch.Tensor | slice]:
        n_cls = int(pool_index.shape[0])
        step = self.class_chunk or n_cls
        if not self.bucket or self.path == "reference":
            return [slice(start, start + step) for start in range(0, n_cls, step)]
        return [part for group in length_groups(pool_index) for part in group.split(step)]

    def _encode(
        self,
        part: PromptEmbeddings,
        cache: list[tuple[torch.Tensor, torch.Tensor]] | None,
        layout: tuple[int, bool] | None = None,
    ) -> torch.Tensor:
        if self.path == "prefix":
            return encode_prefix_shared(self.clip, part, cache, layout)
        if self.path == "truncated":
            return encode_full(self.clip, part, int(part.pool_index.max()) + 1)
        return encode_full(self.clip, part, None)

    def _encode_part(
        self, prefix: torch.Tensor, body: torch.Tensor, pool_index: torch.Tensor, *flat_cache: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`_encode` with its inputs as tensors (what ``torch.utils.checkpoint`` saves and replays)."""
        cache = [(flat_cache[i], flat_cache[i + 1]) for i in range(0, len(flat_cache), 2)] if flat_cache else None
        return self._encode(PromptEmbeddings(prefix, body, pool_index), cache)

    def positions(self, pool_index: torch.Tensor, n_contexts: int, prefix_len: int) -> int:
        """Token positions this encoder runs through the transformer for P = ``n_contexts`` contexts."""
        total = n_contexts * prefix_len if self.path == "prefix" else 0
        for group in self._groups(pool_index):
            idx = pool_index[group]
            length = self.clip.context_length if self.path == "reference" else int(idx.max()) + 1
            body = length - prefix_len if self.path == "prefix" else length
            total += n_contexts * int(idx.shape[0]) * body
        return total

    def plan(self, pool_index: torch.Tensor, prefix_len: int) -> _Plan:
        """The class groups of ``pool_index`` and what each call needs to know about them, computed once.

        The plan depends only on the pool indices' values (kept as a tuple of ints and compared on every call),
        so a learner's fixed ``pool_index`` is grouped once per run instead of at every step.
        """
        key = (self.path, self.class_chunk, self.bucket, prefix_len, *pool_index.tolist())
        if self._plan is not None and self._plan[0] == key and self._plan[1].device == pool_index.device:
            return self._plan[1]
        groups = self._groups(pool_index)
        layouts = None
        if self.path == "prefix":
            layouts = [_pool_layout(pool_index[g], prefix_len) for g in groups]
        n_cls = int(pool_index.shape[0])
        whole = (
            len(groups) == 1
            and isinstance(groups[0], torch.Tensor)
            and bool(torch.equal(groups[0], torch.arange(n_cls, device=groups[0].device)))
        )
        order = None
        if isinstance(groups[0], torch.Tensor) and len(groups) > 1:
            order = torch.argsort(torch.cat(groups))  # output column -> class order
        plan = _Plan(groups, layouts, whole, order, pool_index.device)
        self._plan = (key, plan)
        return plan

    def __call__(self, prompts: PromptEmbeddings) -> torch.Tensor:
        """Unnormalised text features (P, C, E)."""
        plan = self.plan(prompts.pool_index, prompts.prefix_len)
        groups = plan.groups
        cache = prefix_cache(self.clip, prompts.prefix) if self.path == "prefix" else None
        checkpoint = self.class_chunk is not None and len(groups) > 1 and torch.is_grad_enabled()
        outs = []
        for i, group in enumerate(groups):
            part = prompts if plan.whole else prompts.classes(group)  # one group of every class in order: as is
            if checkpoint:
                flat = [t for kv in cache for t in kv] if cache is not None else []
                outs.append(
                    torch.utils.checkpoint.checkpoint(
                        self._encode_part, part.prefix, part.body, part.pool_index, *flat, use_reentrant=False
                    )
                )
            else:
                outs.append(self._encode(part, cache, None if plan.layouts is None else plan.layouts[i]))
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)  # (P, C, E) in group order
        if plan.order is not None:
            out = out[:, plan.order]  # back to class order
        return out


@dataclass(frozen=True)
class _Plan:
    """How :class:`TextEncoder` runs one set of pool indices (see :meth:`TextEncoder.plan`)."""

    groups: list[torch.Tensor | slice]  # the class groups (or chunks), in the order they run
    layouts: list[tuple[int, bool]] | None  # prefix path: (S, uniform) of each group
    whole: bool  # a single group holding every class in class order (the prompts run as they are)
    order: torch.Tensor | None  # (C,) the output column of each class when groups reorder them, else None
    device: torch.device
