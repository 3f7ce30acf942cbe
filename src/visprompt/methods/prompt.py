"""Prompt learning with a split loss: CoOp, CoOp+GCE, CoCoOp, NLPrompt and VisPrompt.

These methods differ only in their parts, composed here: the prompt learner inside the classifier (CoOp,
CoCoOp or VisPrompt's cross-modal FiLM prompt), the selection strategy (none, OT per mini-batch, OT over the
training set) and the split loss (:class:`~visprompt.methods.objective.SplitLoss`).

One training step (``forward``) computes the logits, the clean mask of the batch (from the strategy, on the
detached probabilities of this same forward for per-mini-batch OT; from the epoch's full-set split
otherwise) and the loss. With the sequential schedule each batch is first split into its clean and noisy
parts (``split``, no gradient), and each part is one optimizer step; with full-set OT the epoch then visits
every clean batch before any noisy one, as NLPrompt's loop does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from visprompt.methods.base import METHODS, Batch, MethodBase, TrainView, select_batch, shuffled_batches
from visprompt.methods.objective import SplitLoss
from visprompt.methods.selection import NoSelection, OTSelection, split_counts

if TYPE_CHECKING:
    from visprompt.methods.build import MethodSpec

__all__ = ["PromptMethod"]


class PromptMethod(MethodBase):
    """A prompt classifier trained with a selection strategy and a split loss."""

    def __init__(self, classifier: nn.Module, selector: NoSelection | OTSelection, loss: SplitLoss) -> None:
        super().__init__(classifier)
        self.selector = selector
        self.loss = loss
        self._clean: torch.Tensor | None = None  # (N,) full-set clean mask of the current epoch

    @property
    def sequential(self) -> bool:
        return self.loss.schedule == "sequential"

    # ------------------------------------------------------------------------------------ epoch hooks
    def before_epoch(self, epoch: int, view: TrainView) -> dict[str, Any]:
        if self.selector.scope not in ("full", "epoch"):
            return {}
        clean, stats = self.selector.select_full(view)
        self._clean = clean.cpu()
        return {**stats, **split_counts(self._clean, view.labels.cpu(), view.true_labels.cpu())}

    def plan_epoch(
        self, epoch: int, num_samples: int, batch_size: int, generator: torch.Generator
    ) -> list[torch.Tensor]:
        if not (self.sequential and self._clean is not None):
            return shuffled_batches(num_samples, batch_size, generator)
        plan = []
        for part in (self._clean, ~self._clean):  # every clean batch, then every noisy one
            rows = part.nonzero().squeeze(1)  # (N_part,)
            if rows.numel():
                plan += [rows[b] for b in shuffled_batches(int(rows.numel()), batch_size, generator)]
        return plan

    def split(self, batch: Batch) -> tuple[list[Batch], dict[str, Any]]:
        stats: dict[str, Any] = {}
        if self._clean is not None:
            batch = {**batch, "clean": self._clean.to(batch["index"].device)[batch["index"]]}
        elif self.sequential and self.selector.scope == "minibatch":
            with torch.no_grad():
                probs = self.logits(batch).float().softmax(dim=-1)  # (B, C)
            clean, stats = self.selector.select(probs, batch["labels"])
            stats.update(split_counts(clean, batch["labels"], batch["true_labels"]))
            batch = {**batch, "clean": clean}
        if not self.sequential or "clean" not in batch:
            return [batch], stats
        parts = [select_batch(batch, m) for m in (batch["clean"], ~batch["clean"])]
        return [p for p in parts if p["labels"].numel()], stats

    # -------------------------------------------------------------------------------------- the step
    def forward(self, batch: Batch) -> dict[str, Any]:
        logits = self.logits(batch)  # (B, C)
        labels = batch["labels"]
        out: dict[str, Any] = {}
        if "clean" in batch:
            clean = batch["clean"]
        else:
            clean, out = self.selector.select(logits.detach().float().softmax(dim=-1), labels)
            out.update(split_counts(clean, labels, batch["true_labels"]))
        loss, parts = self.loss(logits, labels, clean)
        return {"loss": loss, **parts, **out, **self.model_stats()}


# ------------------------------------------------------------------------------------------ the registry


def _classifier(clip: nn.Module, learner: nn.Module) -> nn.Module:
    from visprompt.models.classifier import PromptClassifier

    return PromptClassifier(clip, learner)


@METHODS.register("coop")
@METHODS.register("coop-gce")
@METHODS.register("nlprompt")
def coop(clip: nn.Module, classnames: tuple[str, ...], spec: MethodSpec) -> PromptMethod:
    """A CoOp prompt learner with the preset's selection and loss; the three methods differ only there.

    * ``coop``: no selection, cross-entropy on the given labels (alpha = 1).
    * ``coop-gce``: the generalised cross-entropy of PTNL (gce, q = 0.5).
    * ``nlprompt``: a full-set OT split, CE on the clean part and MAE on the rest.
    """
    from visprompt.models.coop import CoOpPromptLearner

    learner = CoOpPromptLearner(clip, classnames, **spec.coop)
    return PromptMethod(_classifier(clip, learner), spec.selector, spec.loss)


@METHODS.register("cocoop")
def cocoop(clip: nn.Module, classnames: tuple[str, ...], spec: MethodSpec) -> PromptMethod:
    """CoCoOp: the context shifted per image by a meta-net on the pooled image embedding."""
    from visprompt.models.cocoop import CoCoOpPromptLearner

    kwargs = {k: v for k, v in spec.coop.items() if k != "csc"}  # no class-specific context in CoCoOp
    return PromptMethod(_classifier(clip, CoCoOpPromptLearner(clip, classnames, **kwargs)), spec.selector, spec.loss)


@METHODS.register("visprompt")
@METHODS.register("visprompt-faithful")
@METHODS.register("visprompt-clean-only")
def visprompt(clip: nn.Module, classnames: tuple[str, ...], spec: MethodSpec) -> PromptMethod:
    """VisPrompt: cross-modal FiLM prompts, OT split, alpha * CE(clean) + (1 - alpha) * GCE(noisy).

    ``visprompt-faithful`` is the authors' loop (its preset: an epoch-start split per mini-batch in eval mode,
    then clean-only and noisy-only batches); ``visprompt-clean-only`` is the same learner and split with no loss
    on the noisy part (its preset).
    """
    from visprompt.models.visprompt import VisPromptLearner

    learner = VisPromptLearner(clip, classnames, **spec.coop, **spec.visprompt)
    return PromptMethod(_classifier(clip, learner), spec.selector, spec.loss)
