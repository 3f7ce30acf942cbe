"""Training and evaluation data as the loop consumes it: cached frozen image outputs, or images.

Notation: N samples, B batch, C classes, E joint width, T visual tokens.

The image encoder is frozen, so its outputs on un-augmented images never change. They are computed once
(:func:`encode_samples`) and reused:

* for training, when ``data.augment`` is off and ``run.cache_features`` on (:class:`FeatureData`): a step
  then costs only the prompt learner and the text encoder;
* for whole-training-set passes before an epoch (full-set OT, JoAPR's GMM), always;
* for evaluation (:func:`predict_logits`), always: images are encoded batch by batch and the classifier
  reads the features through ``logits_from_features``.

Across runs, the un-augmented outputs of a training set or a test split can come from a persistent
:class:`~visprompt.engine.store.FeatureStore` (``run.feature_store``), shared by every run and sweep worker
that writes to the same folder; results are bit-identical with and without it.

With augmentation on, training batches are images drawn through a DataLoader (:class:`ImageData`) whose
batch sampler is the method's plan and whose workers are seeded from the epoch's generator.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from visprompt.data.loader import SampleDataset
from visprompt.data.records import Sample, true_label_code
from visprompt.engine.progress import progress
from visprompt.engine.runtime import Precision, worker_init_fn
from visprompt.engine.store import FeatureStore
from visprompt.methods.base import Batch, MethodBase, TrainView

log = logging.getLogger(__name__)

__all__ = ["FeatureData", "FeatureSet", "ImageData", "encode_samples", "feature_logits", "predict_logits"]


def _targets(samples: Sequence[Sample]) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.tensor([s.label for s in samples], dtype=torch.long)  # (N,)
    true = torch.tensor([true_label_code(s) for s in samples], dtype=torch.long)  # (N,), negative: class unknown
    return labels, true


def _eval_loader(samples: Sequence[Sample], transform: Callable[[Any], torch.Tensor], batch_size: int,
                 num_workers: int) -> DataLoader:  # fmt: skip
    """In-order loader with its own generator: iterating it leaves the global RNG (resume) untouched."""
    return DataLoader(
        SampleDataset(samples, transform), batch_size=batch_size, num_workers=num_workers,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip


def _encoded_batches(
    clip: nn.Module, samples: Sequence[Sample], transform: Callable[[Any], torch.Tensor], batch_size: int,
    device: torch.device, precision: Precision, num_workers: int, desc: str, store: FeatureStore | None = None,
    keep_tokens: bool = True,
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:  # fmt: skip
    """The frozen image tower's outputs on ``samples`` in order, batch by batch: pooled (B, E), tokens (B, T, E).

    With a ``store``, read from it when it holds these outputs (else computed and written to it); tokens are
    then None unless ``keep_tokens``.
    """

    def encode() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        loader = _eval_loader(samples, transform, batch_size, num_workers)
        for batch in progress(loader, desc=desc, total=len(loader), leave=False):
            with precision.autocast():
                pooled, tokens = clip.encode_image(batch["image"].to(device))  # (B, E), (B, T, E)
            yield pooled, tokens  # outside autocast: the caller's code does not run under it

    if store is None:
        return encode()
    key = store.key(clip, samples, transform, batch_size=batch_size, device=device, precision=precision.name)
    return store.batches(key, encode, batch_size=batch_size, device=device, keep_tokens=keep_tokens, what=desc)


@dataclass
class FeatureSet:
    """Frozen image outputs of N samples: pooled (N, E) and, when a learner reads them, tokens (N, T, E)."""

    pooled: torch.Tensor
    tokens: torch.Tensor | None

    def __len__(self) -> int:
        return int(self.pooled.shape[0])

    def rows(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {"pooled": self.pooled[index]}
        if self.tokens is not None:
            out["tokens"] = self.tokens[index]
        return out


@torch.no_grad()
def encode_samples(
    clip: nn.Module,
    samples: Sequence[Sample],
    transform: Callable[[Any], torch.Tensor],
    *,
    batch_size: int,
    device: torch.device,
    precision: Precision,
    keep_tokens: bool = True,
    num_workers: int = 0,
    desc: str = "encoding images",
    store: FeatureStore | None = None,
) -> FeatureSet:
    """Encode ``samples`` (un-augmented ``transform``) with the frozen image tower; features in float32.

    ``store``: a :class:`~visprompt.engine.store.FeatureStore` to read the outputs from (or fill).
    """
    pooled, tokens = [], []
    encoded = _encoded_batches(
        clip, samples, transform, batch_size, device, precision, num_workers, desc, store, keep_tokens
    )
    for p, t in encoded:
        pooled.append(p.float())
        if keep_tokens:
            tokens.append(t.float())
    empty = torch.empty(0, device=device)
    return FeatureSet(torch.cat(pooled) if pooled else empty, torch.cat(tokens) if keep_tokens and tokens else None)


@torch.no_grad()
def feature_logits(
    classifier: nn.Module, features: FeatureSet, *, batch_size: int, precision: Precision
) -> torch.Tensor:
    """Logits (N, C) in float32 of the classifier (in eval mode) on cached features."""
    was_training = classifier.training
    classifier.eval()
    try:
        out = []
        for rows in torch.arange(len(features), device=features.pooled.device).split(batch_size):
            batch = features.rows(rows)
            with precision.autocast():
                out.append(classifier.logits_from_features(batch["pooled"], batch.get("tokens")).float())
        return torch.cat(out)
    finally:
        classifier.train(was_training)


@torch.no_grad()
def predict_logits(
    classifier: nn.Module,
    clip: nn.Module,
    samples: Sequence[Sample],
    transform: Callable[[Any], torch.Tensor],
    *,
    batch_size: int,
    device: torch.device,
    precision: Precision,
    keep_tokens: bool = True,
    num_workers: int = 0,
    desc: str = "evaluating",
    store: FeatureStore | None = None,
) -> torch.Tensor:
    """Logits (N, C) on CPU: images encoded batch by batch (or read from ``store``), the classifier reading them."""
    was_training = classifier.training
    classifier.eval()
    out = []
    try:
        encoded = _encoded_batches(
            clip, samples, transform, batch_size, device, precision, num_workers, desc, store, keep_tokens
        )
        for pooled, tokens in encoded:
            with precision.autocast():
                logits = classifier.logits_from_features(pooled, tokens if keep_tokens else None)
            out.append(logits.float().cpu())
    finally:
        classifier.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


class _TrainSet:
    """What both kinds of training data share: targets and the whole-set view for ``before_epoch``.

    ``eval_features`` gives the frozen outputs of the un-augmented training images; it is called once, at the first
    whole-set pass, and the seconds that call takes are :attr:`encoding_s` (the training loop keeps them out of the
    epoch that pays them; the runner reports them as ``timings.features_s``).
    """

    def __init__(
        self, samples: Sequence[Sample], eval_features: Callable[[], FeatureSet], *, device: torch.device,
        precision: Precision, eval_batch_size: int,
    ) -> None:  # fmt: skip
        self.samples = list(samples)
        self.labels, self.true_labels = _targets(self.samples)
        self.num_samples = len(self.samples)
        self.device = device
        self.encoding_s = 0.0
        self._eval_features = eval_features
        self._features: FeatureSet | None = None
        self._precision = precision
        self._eval_batch_size = eval_batch_size

    def _whole_set(self) -> FeatureSet:
        if self._features is None:
            started = time.perf_counter()
            self._features = self._eval_features()
            self.encoding_s += time.perf_counter() - started
        return self._features

    def view(self, method: MethodBase) -> TrainView:
        def logits() -> torch.Tensor:
            feats = self._whole_set()
            return feature_logits(method.classifier, feats, batch_size=self._eval_batch_size, precision=self._precision)

        return TrainView(
            self.labels.to(self.device), self.true_labels.to(self.device), logits,
            pooled=lambda: self._whole_set().pooled,
        )  # fmt: skip

    def _targets_of(self, index: torch.Tensor) -> Batch:
        return {
            "labels": self.labels[index].to(self.device),
            "true_labels": self.true_labels[index].to(self.device),
            "index": index.to(self.device),
        }


class FeatureData(_TrainSet):
    """Training batches of cached frozen image outputs."""

    def __init__(self, samples: Sequence[Sample], features: FeatureSet, **kwargs: Any) -> None:
        super().__init__(samples, lambda: features, **kwargs)
        self.features = self._features = features  # given: no encoding here (encoding_s stays 0)

    def batches(self, plan: list[torch.Tensor], seed: int = 0) -> Iterator[Batch]:
        for index in plan:
            yield {**self.features.rows(index.to(self.features.pooled.device)), **self._targets_of(index)}


class ImageData(_TrainSet):
    """Training batches of (augmented) images read by a DataLoader that follows the method's plan."""

    def __init__(
        self, samples: Sequence[Sample], transform: Callable[[Any], torch.Tensor],
        eval_features: Callable[[], FeatureSet], *, num_workers: int = 0, **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(samples, eval_features, **kwargs)
        self.dataset = SampleDataset(self.samples, transform)
        self.num_workers = num_workers

    def batches(self, plan: list[torch.Tensor], seed: int = 0) -> Iterator[Batch]:
        """Batches of ``plan``; data-loader workers are seeded from ``seed`` (the epoch's seed)."""
        generator = torch.Generator().manual_seed(seed)
        loader = DataLoader(
            self.dataset,
            batch_sampler=[b.tolist() for b in plan],
            num_workers=self.num_workers,
            worker_init_fn=worker_init_fn,
            generator=generator,
            persistent_workers=False,
        )
        for batch in loader:
            yield {"images": batch["image"].to(self.device, non_blocking=True), **self._targets_of(batch["index"])}
