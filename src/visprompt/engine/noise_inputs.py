"""What label noise that depends on the frozen CLIP takes from it (README: asym-semantic and instance noise).

Notation: N samples, C classes, E joint embedding width.

- ``asym-semantic``: :func:`semantic_targets`, each class's nearest other class by the cosine of their text
  embeddings (the class names through the dataset's zero-shot template, ``"a photo of a {}."`` for datasets
  without one; :func:`~visprompt.models.templates.templates_for`).
- ``instance``: :func:`image_features`, the frozen image tower's pooled embeddings of the un-augmented training
  images (the noise function L2-normalises them).

Both return numpy arrays for the pure functions of :mod:`visprompt.data.noise`; :func:`noise_inputs` binds them
to a run as the callables :func:`~visprompt.data.pipeline.prepare_fewshot` takes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from visprompt.data.noise import nearest_other_class
from visprompt.data.records import Sample
from visprompt.engine.data import encode_samples
from visprompt.engine.runtime import Precision
from visprompt.engine.store import FeatureStore

__all__ = ["class_similarity", "image_features", "noise_inputs", "semantic_targets"]


@torch.no_grad()
def class_similarity(clip: nn.Module, classnames: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """Cosine similarity (C, C) of the classes' zero-shot text embeddings (templates averaged, as zero-shot CLIP)."""
    from visprompt.models import ZeroShotClassifier

    emb = ZeroShotClassifier(clip, classnames, templates).class_embeddings.float()  # (C, E) unit rows
    return emb @ emb.T  # (C, C)


def semantic_targets(clip: nn.Module, classnames: Sequence[str], dataset: str) -> np.ndarray:
    """t (C,): t[c] is the class whose text embedding is nearest to class c's, c excluded."""
    from visprompt.models import templates_for

    return nearest_other_class(class_similarity(clip, classnames, templates_for(dataset)).cpu().numpy())


def image_features(
    clip: nn.Module,
    samples: Sequence[Sample],
    transform: Callable[[Any], torch.Tensor],
    *,
    batch_size: int,
    device: torch.device,
    precision: Precision,
    num_workers: int = 0,
    store: FeatureStore | None = None,
) -> np.ndarray:
    """Pooled frozen image embeddings (N, E) of ``samples`` through the un-augmented ``transform``, float32."""
    feats = encode_samples(
        clip, samples, transform, batch_size=batch_size, device=device, precision=precision, keep_tokens=False,
        num_workers=num_workers, desc="encoding train images for instance noise", store=store,
    )  # fmt: skip
    return feats.pooled.float().cpu().numpy()


def noise_inputs(
    clip: nn.Module, dataset: str, transform: Callable[[Any], torch.Tensor], **encode: Any
) -> dict[str, Callable[[Sequence[Any]], np.ndarray]]:
    """``semantic_targets`` and ``image_features`` callables for :func:`~visprompt.data.pipeline.prepare_fewshot`.

    ``encode``: :func:`image_features`' keyword arguments (``batch_size``, ``device``, ``precision``, ...).
    """
    return {
        "semantic_targets": lambda names: semantic_targets(clip, names, dataset),
        "image_features": lambda samples: image_features(clip, samples, transform, **encode),
    }
