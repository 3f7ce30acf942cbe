"""What a method is: a module whose ``forward(batch)`` is one training step returning a dict.

A method owns a classifier (a frozen CLIP plus a learnable prompt) and composes it with a selection
strategy and a loss. The engine's generic loop drives it through a handful of hooks, all with defaults here:

    before_epoch(epoch, view)  -> dict      work over the whole training set (full-set OT, JoAPR's GMM)
    plan_epoch(epoch, n, bs, g)-> [idx]     the epoch's mini-batches as index tensors (default: shuffled)
    split(batch)         -> [batch], dict   per-batch preparation (no gradient), possibly into several steps
    forward(batch)             -> dict      the step: ``loss`` (a tensor to minimise) plus float statistics
    extra_state() / load_extra_state(d)     non-parameter state that a resumed run needs

A batch is a dict of tensors on the training device: ``labels`` (B,) observed labels, ``true_labels`` (B,)
clean labels (negative where the class is unknown: -1 unknown, -2 the label known wrong; used for logging
only), ``index`` (B,) positions in the training set, and either ``images`` (B, 3, H, W) or the frozen image
outputs ``pooled`` (B, E) and ``tokens`` (B, T, E).

Statistics returned by ``forward``/``before_epoch`` follow one convention so the loop can aggregate them:
keys starting with ``n_`` or ``sel_`` are counts (summed over the epoch); other keys are per-sample means
(averaged over the epoch weighted by batch size), except a :class:`PartMean`, a mean over one part of the batch
(its clean rows), weighted by that part's size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from visprompt.models.protocols import Classifier

__all__ = ["Batch", "MethodBase", "PartMean", "TrainView", "batch_logits", "select_batch", "shuffled_batches"]

Batch = dict[str, torch.Tensor]


class PartMean(float):
    """A step statistic that is the mean over ``count`` of the batch's samples (a part of it, such as its clean
    rows): the training loop weighs it by ``count`` where it weighs a plain statistic by the batch size, so the
    epoch's value is the mean over the part's samples. Everywhere else it is the float it holds."""

    count: int

    def __new__(cls, value: float, count: int) -> PartMean:
        if count < 1:
            raise ValueError(f"a mean over {count} samples")
        mean = super().__new__(cls, value)
        mean.count = int(count)
        return mean


@dataclass
class TrainView:
    """The whole training set as a method sees it before an epoch (no augmentation, no gradient)."""

    labels: torch.Tensor  # (N,) observed labels
    true_labels: torch.Tensor  # (N,) clean labels; -1 unknown, -2 the label known wrong (records.true_label_code)
    logits: Callable[[], torch.Tensor]  # () -> (N, C) float32 logits of the current model (eval mode)
    batch_size: int = 0  # the training batch size (0: unknown); the epoch-scope split cuts its pass with it
    generator: torch.Generator | None = None  # seeded by (seed, epoch): the epoch-scope split's shuffled pass
    pooled: Callable[[], torch.Tensor] | None = None  # () -> (N, E) frozen pooled image features (None: not given)

    @property
    def num_samples(self) -> int:
        return int(self.labels.numel())


def batch_logits(classifier: Classifier, batch: Batch) -> torch.Tensor:
    """Logits (B, C) of a batch from cached frozen image outputs when present, else from images."""
    if "pooled" in batch:
        return classifier.logits_from_features(batch["pooled"], batch.get("tokens"))
    return classifier(batch["images"])


def select_batch(batch: Batch, mask: torch.Tensor) -> Batch:
    """The rows of ``batch`` where ``mask`` (B,) is true; per-batch scalars are dropped."""
    return {k: v[mask] for k, v in batch.items() if v.ndim > 0 and v.shape[0] == mask.shape[0]}


def shuffled_batches(num_samples: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A random permutation cut into batches; the last, short batch is dropped when there is a full one.

    (Dassl's training loader does the same: ``drop_last`` whenever the set holds at least one batch.)
    """
    order = torch.randperm(num_samples, generator=generator)
    batches = list(order.split(batch_size))
    if len(batches) > 1 and batches[-1].numel() < batch_size:
        batches.pop()
    return batches


class MethodBase(nn.Module):
    """Default hooks shared by the methods (one level of inheritance, no loop logic)."""

    #: False for methods without a training phase (zero-shot): the engine only evaluates them.
    trains: bool = True

    def __init__(self, classifier: Classifier) -> None:
        super().__init__()
        self.classifier = classifier

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.classifier.trainable_parameters())

    def named_trainable_parameters(self) -> dict[str, nn.Parameter]:
        """Trainable parameters by name (the names used in ``checkpoint.safetensors``)."""
        wanted = {id(p) for p in self.trainable_parameters()}
        return {name: p for name, p in self.classifier.named_parameters() if id(p) in wanted}

    def param_groups(self) -> list[dict[str, Any]]:
        """The trainable parameters as optimizer groups ``{"params": [...], "lr_scale": s}``.

        A submodule of the classifier may carry a float attribute ``lr_scale`` (VisPrompt's gate with
        ``prompt.gate_lr_scale``): its parameters train at that multiple of the learning rate, in a group of their
        own. The group at scale 1 comes first (the scheduler reads its rate); one group when nothing is scaled.
        """
        scale_of: dict[int, float] = {}
        for module in self.classifier.modules():  # parents before children: the innermost declaration wins
            scale = getattr(module, "lr_scale", None)
            if scale is not None:
                scale_of.update({id(p): float(scale) for p in module.parameters()})
        groups: dict[float, list[nn.Parameter]] = {1.0: []}
        for p in self.trainable_parameters():
            groups.setdefault(scale_of.get(id(p), 1.0), []).append(p)
        return [{"params": params, "lr_scale": scale} for scale, params in groups.items() if params]

    def before_epoch(self, epoch: int, view: TrainView) -> dict[str, float]:
        return {}

    def plan_epoch(
        self, epoch: int, num_samples: int, batch_size: int, generator: torch.Generator
    ) -> list[torch.Tensor]:
        return shuffled_batches(num_samples, batch_size, generator)

    def split(self, batch: Batch) -> tuple[list[Batch], dict[str, Any]]:
        return [batch], {}

    def forward(self, batch: Batch) -> dict[str, Any]:  # pragma: no cover - every method overrides it
        raise NotImplementedError

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        return None

    def logits(self, batch: Batch) -> torch.Tensor:
        return batch_logits(self.classifier, batch)

    def model_stats(self) -> dict[str, float]:
        """The classifier's statistics of its last forward (VisPrompt's gate), empty for others."""
        return dict(self.classifier.last_stats())
