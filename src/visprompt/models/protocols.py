"""The interfaces the engine and the methods call, written down (structural: no base class to inherit).

Notation: B images, C classes, E joint embedding width, T visual tokens, L prompt length.

* :class:`PromptLearner`: what :class:`~visprompt.models.classifier.PromptClassifier` reads from a learner
  (CoOp, CoCoOp, VisPrompt).
* :class:`Classifier`: what the engine and the methods read from a classifier (a frozen CLIP and a prompt, or
  zero-shot class embeddings).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from torch import nn

    from visprompt.models.text import PromptEmbeddings

__all__ = ["Classifier", "PromptLearner"]


@runtime_checkable
class PromptLearner(Protocol):
    """Learnable prompts around the class names."""

    prefix_len: int  # positions shared by every class (SOS + context) when the class name ends the prompt, else 1
    pool_index: torch.Tensor  # (C,) the EOT position of each class's prompt
    per_image: bool  # whether the prompts depend on the image (P = B) or not (P = 1)
    uses_tokens: bool  # whether forward reads the visual tokens (else only the pooled embedding)

    def __call__(
        self, pooled: torch.Tensor | None, tokens: torch.Tensor | None, length: int | None = None
    ) -> PromptEmbeddings:  # (P, C, L, D) prompt embeddings
        ...

    def last_stats(self) -> dict[str, float]:  # statistics of the last forward worth logging (the gate)
        ...


@runtime_checkable
class Classifier(Protocol):
    """Logits of images, or of their frozen image-encoder outputs, over the task's classes."""

    uses_tokens: bool  # whether logits_from_features reads the visual tokens (callers may cache pooled only)

    @property
    def num_classes(self) -> int: ...

    def encode_images(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # (B, E), (B, T, E)
        ...

    def logits_from_features(
        self, pooled: torch.Tensor, tokens: torch.Tensor | None = None
    ) -> torch.Tensor: ...  # (B, C)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:  # (B, C)
        ...

    def trainable_parameters(self) -> list[nn.Parameter]: ...

    def last_stats(self) -> dict[str, float]: ...

    def summary(self) -> dict[str, object]: ...
