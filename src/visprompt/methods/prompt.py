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

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from visprompt.methods.base import Batch, MethodBase, TrainView, select_batch, shuffled_batches
from visprompt.methods.objective import SplitLoss
from visprompt.methods.selection import NoSelection, OTSelection, split_counts
from visprompt.registry import register_method, register_variant

if TYPE_CHECKING:
    from visprompt.methods.build import MethodSpec
    from visprompt.models.classifier import PromptClassifier
    from visprompt.models.frozen_clip import FrozenCLIP

__all__ = ["VISPROMPT_RECIPE", "PromptMethod", "coop_learner"]


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
# Each method's recipe names every selection and loss field it relies on (the config's defaults are plain CE with
# no selection); prompt and optimiser fields appear where the method's paper departs from the shared protocol.

_NO_SELECTION = {"method.selection.kind": "none"}
_CE = {
    "method.loss.clean": "ce",
    "method.loss.noisy": "none",
    "method.loss.alpha": 1.0,
    "method.loss.schedule": "joint",
}
VISPROMPT_RECIPE = {
    "method.selection.kind": "ot",
    "method.selection.scope": "minibatch",
    "method.selection.cost": "neglogp",
    "method.selection.eps": 0.01,
    "method.loss.clean": "ce",
    "method.loss.noisy": "gce",
    "method.loss.alpha": 0.5,
    "method.loss.q": 0.5,
    "method.loss.schedule": "joint",
    "prompt.vis_tokens": "patch",
    "prompt.film_mode": "tokenwise",
    "prompt.use_ffn": True,
    "prompt.gate": "learned",
    "prompt.visual_guidance": True,
}


#: What the learners read (MethodDef.reads): CoOp's context, VisPrompt's block on top; every selection and loss field
COOP_READS = ("prompt.n_ctx", "prompt.ctx_init", "prompt.csc", "prompt.class_token_position")
SPLIT_READS = ("method.selection", "method.loss")
FILM_READS = ("prompt.vis_tokens", "prompt.film_mode", "prompt.use_ffn", "prompt.gate", "prompt.visual_guidance",
              "prompt.init", "prompt.num_heads", "prompt.dropout", "prompt.gate_lr_scale")  # fmt: skip
VISPROMPT_READS = (*COOP_READS, *FILM_READS, *SPLIT_READS)


def _classifier(clip: FrozenCLIP, learner: nn.Module) -> PromptClassifier:
    from visprompt.models.classifier import PromptClassifier

    return PromptClassifier(clip, learner)


def coop_learner(clip: FrozenCLIP, classnames: tuple[str, ...], spec: MethodSpec) -> PromptMethod:
    """A CoOp prompt learner with the recipe's selection and loss (CoOp, CoOp+GCE and NLPrompt differ only there)."""
    from visprompt.models.coop import CoOpPromptLearner

    learner = CoOpPromptLearner(clip, classnames, **asdict(spec.coop))
    return PromptMethod(_classifier(clip, learner), spec.selector, spec.loss)


register_method(
    "coop",
    recipe={**_NO_SELECTION, **_CE},
    summary="CoOp (Zhou et al., IJCV 2022): a learned shared context, CE on the given labels",
    reads=(*COOP_READS, *SPLIT_READS),
)(coop_learner)
register_method(
    "coop-gce",
    recipe={**_NO_SELECTION, **_CE, "method.loss.clean": "gce", "method.loss.q": 0.5},
    summary="CoOp + GCE (PTNL, Wu et al. 2023): the generalised cross-entropy, q = 0.5",
    reads=(*COOP_READS, *SPLIT_READS),
)(coop_learner)
register_method(
    "nlprompt",
    recipe={"method.selection.kind": "ot", "method.selection.scope": "full", "method.selection.cost": "negp",
            "method.selection.eps": 0.01, "method.loss.clean": "ce", "method.loss.noisy": "mae",
            "method.loss.alpha": 0.5, "method.loss.schedule": "sequential"},
    summary="NLPrompt (Pan et al., 2025): CoOp + a full-set OT split per epoch, CE on the clean part then MAE",
    reads=(*COOP_READS, *SPLIT_READS),
)(coop_learner)  # fmt: skip


@register_method(
    "cocoop",
    # n_ctx 4: the token count of "a photo of a", which sets the context length (config.unread_fields)
    recipe={**_NO_SELECTION, **_CE, "prompt.n_ctx": 4, "prompt.ctx_init": "a photo of a", "optim.batch_size": 1,
            "optim.epochs": 10},
    summary="CoCoOp (Zhou et al., CVPR 2022): the context shifted per image by a meta-net; batch 1, 10 epochs",
    reads=("prompt.n_ctx", "prompt.ctx_init", "prompt.class_token_position", *SPLIT_READS),  # no csc in CoCoOp
)  # fmt: skip
def cocoop(clip: FrozenCLIP, classnames: tuple[str, ...], spec: MethodSpec) -> PromptMethod:
    """CoCoOp: the context shifted per image by a meta-net on the pooled image embedding."""
    from visprompt.models.cocoop import CoCoOpPromptLearner

    kwargs = {k: v for k, v in asdict(spec.coop).items() if k != "csc"}  # no class-specific context in CoCoOp
    return PromptMethod(_classifier(clip, CoCoOpPromptLearner(clip, classnames, **kwargs)), spec.selector, spec.loss)


@register_method(
    "visprompt",
    recipe=VISPROMPT_RECIPE,
    summary="VisPrompt (arXiv 2604.09532): cross-modal FiLM prompts, OT split per mini-batch, CE(clean) + GCE(noisy)",
    reads=VISPROMPT_READS,
)
def visprompt(clip: FrozenCLIP, classnames: tuple[str, ...], spec: MethodSpec) -> PromptMethod:
    """VisPrompt: cross-modal FiLM prompts, OT split, alpha * CE(clean) + (1 - alpha) * GCE(noisy)."""
    from visprompt.models.visprompt import VisPromptLearner

    learner = VisPromptLearner(clip, classnames, **asdict(spec.coop), **asdict(spec.visprompt))
    return PromptMethod(_classifier(clip, learner), spec.selector, spec.loss)


register_variant(
    "visprompt-clean-only",
    of="visprompt",
    changes={"method.loss.noisy": "none"},
    summary="VisPrompt with no loss on the OT-noisy part (not the paper's protocol; for heavily noisy labels)",
)


register_variant(
    "visprompt-faithful",
    of="visprompt",
    changes={"method.selection.scope": "epoch", "method.loss.schedule": "sequential"},
    summary="VisPrompt with the authors' loop: the OT split at each epoch's start in eval mode, per mini-batch, "
    "then clean-only and noisy-only batches",
)
