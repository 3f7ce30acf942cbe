"""Classifiers on a frozen CLIP: learned prompts (CoOp, CoCoOp, VisPrompt) and zero-shot templates.

Notation: B images, C classes, P contexts (1, or B for image-conditioned prompts), E joint width.

    logits[b, k] = exp(logit_scale) * cos(f_b, t_{p(b), k})

with f_b the pooled image embedding and t the text feature of class k's prompt for image b (p(b) = 0 when the
prompts do not depend on the image). The image encoder's outputs can be computed once and passed to
:meth:`PromptClassifier.logits_from_features` (the engine caches them when no augmentation is used).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from visprompt.errors import ConfigError
from visprompt.models.context import clean_classname
from visprompt.models.frozen_clip import FrozenCLIP
from visprompt.models.templates import DEFAULT_TEMPLATE
from visprompt.models.text import TextEncoder

logger = logging.getLogger(__name__)


def _scaled_cosine(clip: FrozenCLIP, pooled: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """exp(logit_scale) * cosine between images (B, E) and text features (P, C, E) -> (B, C)."""
    f = F.normalize(pooled.to(text.dtype), dim=-1)  # (B, E)
    t = F.normalize(text, dim=-1)  # (P, C, E)
    scale = clip.logit_scale.to(text.dtype).exp()
    if t.shape[0] == 1:
        return scale * f @ t[0].T  # (B, C)
    if t.shape[0] != f.shape[0]:
        raise ValueError(f"{t.shape[0]} prompt contexts for {f.shape[0]} images")
    return scale * torch.einsum("be,bce->bc", f, t)  # (B, C)


def _part_name(name: str) -> str:
    parts = name.removeprefix("context.").split(".")  # "film.attn.out_proj.weight" -> "film.attn"
    return ".".join(parts[:-1][:2]) or parts[0]


class PromptClassifier(nn.Module):
    """A frozen CLIP plus a prompt learner; the learner holds every trainable parameter.

    Args:
        clip: the frozen CLIP.
        learner: a prompt learner (:class:`~visprompt.models.coop.CoOpPromptLearner`, CoCoOp, VisPrompt).
        text_path: ``"auto"`` (fastest exact path), ``"reference"``, ``"truncated"`` or ``"prefix"``.
        class_chunk: encode at most this many classes per pass (None: all).
    """

    def __init__(
        self, clip: FrozenCLIP, learner: nn.Module, *, text_path: str = "auto", class_chunk: int | None = None
    ) -> None:
        super().__init__()
        self.clip = clip
        self.learner = learner
        self.text_encoder = TextEncoder(clip, text_path, learner.prefix_len, class_chunk)
        self._text_cache: tuple[tuple, torch.Tensor] | None = None
        logger.info(
            "%s on %s: %d trainable parameters, text path %s",
            type(learner).__name__,
            clip.arch,
            sum(p.numel() for p in self.trainable_parameters()),
            self.text_encoder.path,
        )

    @property
    def num_classes(self) -> int:
        return int(self.learner.pool_index.shape[0])

    @property
    def uses_tokens(self) -> bool:
        """Whether :meth:`logits_from_features` reads the visual tokens (callers may cache pooled features only)."""
        return bool(self.learner.uses_tokens)

    def encode_images(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen image outputs: pooled (B, E) and visual tokens (B, T, E)."""
        return self.clip.encode_image(images)

    def text_features(self, pooled: torch.Tensor | None = None, tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Unnormalised text features (P, C, E) of the current prompts.

        For image-independent prompts outside training and autograd they are cached until a learner parameter
        changes (tracked by the tensors' version counters, which in-place optimiser steps bump).
        """
        cacheable = not self.learner.per_image and not self.training and not torch.is_grad_enabled()
        if cacheable:
            key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in self.learner.parameters())
            if self._text_cache is not None and self._text_cache[0] == key:
                return self._text_cache[1]
        length = self.text_encoder.required_length(self.learner.pool_index)
        text = self.text_encoder(self.learner(pooled, tokens, length))  # (P, C, E)
        self._text_cache = (key, text) if cacheable else None
        return text

    def logits_from_features(self, pooled: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, C) from precomputed image outputs (pooled (B, E), tokens (B, T, E))."""
        return _scaled_cosine(self.clip, pooled, self.text_features(pooled, tokens))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) = exp(logit_scale) * cosine(image, prompt) for a batch of normalised images."""
        return self.logits_from_features(*self.clip.encode_image(images))

    def named_trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters an optimiser should update (all in the learner; the backbone is frozen)."""
        return [p for _, p in self.named_trainable_parameters()]

    def last_stats(self) -> dict[str, float]:
        """Statistics of the last forward worth logging (VisPrompt: gate mean/std); empty for others."""
        return self.learner.last_stats()

    def summary(self) -> dict[str, object]:
        """Trainable parameter counts per part, backbone size and the text path in use."""
        parts: dict[str, int] = {}
        for name, p in self.learner.named_parameters():
            if p.requires_grad:
                key = _part_name(name)
                parts[key] = parts.get(key, 0) + p.numel()
        return {
            "arch": self.clip.arch,
            "learner": type(self.learner).__name__,
            "num_classes": self.num_classes,
            "text_path": self.text_encoder.path,
            "class_chunk": self.text_encoder.class_chunk,
            "trainable": parts,
            "trainable_total": sum(p.numel() for p in self.trainable_parameters()),
            "backbone_params": sum(p.numel() for p in self.clip.parameters()),
            "backbone_trainable": sum(p.numel() for p in self.clip.parameters() if p.requires_grad),
        }


class ZeroShotClassifier(nn.Module):
    """Zero-shot CLIP: class embeddings are the normalised mean of the template sentences' text features.

    Args:
        clip: the frozen CLIP.
        classnames: C class names (underscores become spaces).
        templates: format strings with one ``{}`` for the class name (several: an ensemble).
        batch_size: sentences per text-encoder pass.
    """

    def __init__(
        self,
        clip: FrozenCLIP,
        classnames: Sequence[str],
        templates: Sequence[str] = (DEFAULT_TEMPLATE,),
        *,
        batch_size: int = 256,
    ) -> None:
        super().__init__()
        if not templates or any("{}" not in t for t in templates):
            raise ConfigError(f"zero-shot templates must each contain '{{}}'; got {list(templates)!r}")
        self.clip = clip
        self.classnames = [clean_classname(n) for n in classnames]
        self.templates = list(templates)
        sentences = [t.format(n) for n in self.classnames for t in self.templates]
        with torch.no_grad():
            feats = torch.cat(
                [
                    clip.encode_text(clip.tokenize(sentences[i : i + batch_size]))
                    for i in range(0, len(sentences), batch_size)
                ]
            )  # (C*T, E)
            feats = F.normalize(feats, dim=-1).reshape(len(self.classnames), len(self.templates), -1)  # (C, T, E)
            weights = F.normalize(feats.mean(dim=1), dim=-1)  # (C, E)
        self.register_buffer("class_embeddings", weights, persistent=False)

    uses_tokens = False

    @property
    def num_classes(self) -> int:
        return self.class_embeddings.shape[0]

    def encode_images(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.clip.encode_image(images)

    def text_features(self, pooled: torch.Tensor | None = None, tokens: torch.Tensor | None = None) -> torch.Tensor:
        return self.class_embeddings[None]  # (1, C, E)

    def logits_from_features(self, pooled: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        return _scaled_cosine(self.clip, pooled, self.class_embeddings[None])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits_from_features(*self.clip.encode_image(images))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return []

    def last_stats(self) -> dict[str, float]:
        return {}

    def summary(self) -> dict[str, object]:
        return {
            "arch": self.clip.arch,
            "learner": "zero-shot",
            "num_classes": self.num_classes,
            "templates": len(self.templates),
            "text_path": "open_clip",
            "trainable": {},
            "trainable_total": 0,
            "backbone_params": sum(p.numel() for p in self.clip.parameters()),
            "backbone_trainable": 0,
        }
