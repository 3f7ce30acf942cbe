"""``visprompt-plus``: VisPrompt's prompt learner trained so that it holds up at every noise rate and class count.

Not the paper's method (that is ``visprompt``). Changes to how VisPrompt's cross-modal FiLM prompt is trained,
each a config field; :data:`RECIPE` holds the values chosen on the offline testbed (docs/testbed-ablations.md says
on which tasks and seeds, and reports them on held-out ones). The recipe uses the full-set split, the zero-shot
prior, the noisy part's weight (``kept-spread-classes``) and loss (``q_schedule=noise``), and relabelling by the
posterior in the epochs whose split keeps at most 0.3 of the labels; the noisy target and the gate's schedule are
measured alternatives, off in the recipe:

* **One OT split over the training set per epoch** (``method.selection.scope=full``), in eval mode before the
  epoch's updates, instead of one per mini-batch. With a uniform 1/C class marginal a mini-batch of 16 cannot
  hold C = 50 or 100 classes, so the per-batch split calls most clean samples noisy; over N = C x shots samples
  the marginal is what the few-shot set actually holds.
* **A zero-shot prior** (``method.prior_weight``): logits = learned + w x zero-shot logits (the dataset's
  templates on the frozen CLIP), in training, in the split and at test time. The split then starts from the
  zero-shot predictions instead of a random prompt's, and the learned prompt only has to correct them.
* **The noisy part's weight** (``method.noisy_weight``): ``kept`` multiplies the loss on the samples the split
  calls noisy by the epoch split's kept fraction k, ``kept-squared`` by k squared: at 75% noise k is about 0.3 and
  the rejected labels count a tenth as much as the kept ones. ``kept-odds`` by (k / (1 - k)) squared, at most 1:
  full weight while the split keeps at least half the labels, k squared's fall below that. ``kept-spread``
  reads where the rejected labels point (``reject_conc`` in the log): ``kept-odds`` while they spread over the
  other classes (symmetric noise, where k under-states how many rejections are right), ``kept-squared`` while they
  pile onto one label per OT pseudo-label (a pair flip), linear between. ``kept-spread-classes`` (the recipe) takes
  the spread part's odds against one other class, (C - 1) k / (1 - k), full from 9: ``kept-spread`` at 10
  classes, full weight at 50 classes even at 75% noise, where each wrong label is rare.
* **The noisy part's target** (``method.noisy_target``): ``given`` trains a sample the split calls noisy on its
  given label (with ``method.loss.noisy``); ``zeroshot`` trains it towards the frozen zero-shot CLIP's class
  distribution for its image (cross-entropy to soft targets); ``mixed`` does both: kept x the given label's loss +
  (1 - kept) x the cross-entropy to zero-shot, kept being the epoch split's kept fraction (``noisy_weight``'s factor
  applies on top): the more labels the split rejects, the more the rejected samples pull the prompt towards
  zero-shot CLIP instead of towards labels it does not trust.
* **The gate's schedule** (``method.gate_schedule``): ``kept`` multiplies the FiLM block's gate by the epoch
  split's kept fraction (``kept-squared`` by its square), in that epoch's training and at test time, so the visual
  branch injects less the more labels the split rejects; ``fixed`` leaves the gate as learned.
* **The noisy part's loss** (``method.q_schedule``): ``noise`` sets the GCE's q to 1 - the epoch split's kept
  fraction, so the rejected samples train near the cross-entropy when the split keeps most labels (on clean data
  they are mostly hard, right ones) and near MAE, which barely fits a wrong label, when it rejects most.
* **Relabelling** (``method.relabel``): a sample the split calls noisy is trained on its OT pseudo-label when the
  model gives that label at least ``relabel_min_prob``, and gets no loss otherwise (never its given label);
  ``relabel_by=posterior`` thresholds the pseudo-label's probability once the given label is weighed by the noise
  the split estimates (:func:`label_odds`: the given label is (C - 1) k / (1 - k) times as likely as any one other
  class while the rejections spread, k / (1 - k) for a pair flip), and a sample below it keeps its given label as
  the noisy part. On clean data (k near 1) this barely moves a label; with 50 classes at 75% noise it moves most.
  ``posterior-zeroshot`` moves a label only where, besides, the frozen zero-shot CLIP (which never saw a label)
  names the pseudo-label: the learned model's own confusions are not taught back to it. ``relabel_max_kept``
  relabels only in the epochs whose split keeps at most that fraction of the training set: on clean data the split
  still rejects a quarter to a third of the labels (the model's own confusions, all of them right), and a model
  that relabels them learns its confusions; where the split keeps under a third, most rejected labels are wrong.

:data:`RECIPE` is the complete recipe (every selection, loss, prompt and method field it relies on), and
it is registered with exactly these values (``register_method``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from visprompt.methods.base import Batch, TrainView
from visprompt.methods.objective import SplitLoss
from visprompt.methods.prompt import VISPROMPT_READS, PromptMethod
from visprompt.methods.selection import OTSelection, rejection_concentration, split_counts
from visprompt.registry import register_method

if TYPE_CHECKING:
    from visprompt.methods.build import MethodSpec

__all__ = ["RECIPE", "PlusMethod", "label_odds", "prior_classifier", "relabel_posterior"]

#: ``method.prior_schedule``: the power of the noise estimate (1 - kept fraction) the prior weight is multiplied by.
PRIOR_SCHEDULES = {"fixed": 0, "noise": 1, "noise-squared": 2}
#: ``method.noisy_target``: what the split's noisy part is trained towards (module docstring).
NOISY_TARGETS = ("given", "zeroshot", "mixed")
#: ``kept-spread``: the rejections' concentration (:func:`~visprompt.methods.selection.rejection_concentration`) at
#: or below the first value counts as spread (symmetric noise), at or above the second as a pair flip, linear between.
SPREAD_RANGE = (0.05, 0.30)


def _odds(k: float) -> float:
    """The squared odds kept : rejected, at most 1: full weight while the split keeps at least half the labels."""
    return 1.0 if k >= 0.5 else (k / (1.0 - k)) ** 2


#: ``kept-spread-classes``: under spread rejections a rejected sample's given label is about (C - 1) k / (1 - k) times
#: as likely to be its class as any one other class (k of the labels right, the rest spread over C - 1 classes). The
#: noisy part gets full weight from this ratio up, and (ratio / CLASS_ODDS_FULL)^2 below: at C = 10 this is
#: ``kept-odds`` exactly (full from k = 1/2), the class count where the recipe was chosen.
CLASS_ODDS_FULL = 9.0


def _class_odds(k: float, num_classes: int) -> float:
    """``kept-odds`` with the odds against one other class: min(1, ((C - 1) / 9 x k / (1 - k))^2)."""
    if k >= 1.0:
        return 1.0
    ratio = k / (1.0 - k) * ((num_classes - 1) / CLASS_ODDS_FULL)  # x 1.0 exactly at C = 10: kept-odds to the bit
    return min(1.0, ratio**2)


def _flip_share(conc: float | None) -> float:
    """How much the rejections look like a pair flip: 0 while spread, 1 when concentrated (or unmeasured)."""
    low, high = SPREAD_RANGE
    return 1.0 if conc is None else min(max((conc - low) / (high - low), 0.0), 1.0)


def _spread(k: float, conc: float | None, spread_weight: float) -> float:
    """``spread_weight`` while the rejections are spread over the other classes, ``kept-squared`` while they
    concentrate on one label per pseudo-label (unknown: ``kept-squared``), linear in the concentration between."""
    flip = _flip_share(conc)
    return flip * k**2 + (1.0 - flip) * spread_weight


def label_odds(k: float, conc: float | None, num_classes: int) -> float:
    """How many times as likely a given label is to be a sample's class as any one other class, when k of the
    labels are right and the rest spread over the C - 1 other classes ((C - 1) k / (1 - k)) or pile onto one
    (k / (1 - k), a pair flip); between the two by the rejections' concentration, as ``kept-spread``."""
    if k >= 1.0:
        return float("inf")
    flip = _flip_share(conc)
    return k / (1.0 - k) * (flip + (1.0 - flip) * (num_classes - 1))


def relabel_posterior(probs: torch.Tensor, labels: torch.Tensor, pseudo: torch.Tensor, odds: float) -> torch.Tensor:
    """(N,) the probability of each pseudo-label once the model's (N, C) ``probs`` are weighed by the label noise:
    the given label ``odds`` times any other class, p(pseudo) / (1 + (odds - 1) p(given)); 0 where they agree."""
    given = probs.gather(1, labels[:, None]).squeeze(1)
    post = probs.gather(1, pseudo[:, None]).squeeze(1) / (1.0 + (odds - 1.0) * given)
    return torch.where(pseudo == labels, torch.zeros_like(post), post)


#: ``method.noisy_weight``: the noisy part's loss weight as a function of the split's kept fraction k, of how
#: concentrated the given labels of its rejections are (``conc``, None when unmeasured) and of the class count C.
NOISY_WEIGHTS: dict[str, Callable[[float, float | None, int], float]] = {
    "fixed": lambda k, conc, c: 1.0,
    "kept": lambda k, conc, c: k,
    "kept-squared": lambda k, conc, c: k**2,  # as k ** 2 has always been computed here (pow), to the last bit
    "kept-odds": lambda k, conc, c: _odds(k),
    "kept-spread": lambda k, conc, c: _spread(k, conc, _odds(k)),
    "kept-spread-classes": lambda k, conc, c: _spread(k, conc, _class_odds(k, c)),
}
#: ``method.q_schedule``: how the noisy part's GCE q follows the split (``noise``: q = 1 - kept, at least Q_FLOOR).
Q_SCHEDULES = ("fixed", "noise")
Q_FLOOR = 0.05
#: ``method.gate_schedule``: the power of the split's kept fraction the FiLM gate is multiplied by.
GATE_SCHEDULES = {"fixed": 0, "kept": 1, "kept-squared": 2}
#: ``method.relabel_by``: what ``relabel_min_prob`` thresholds (module docstring, "Relabelling").
RELABEL_BY = ("model", "posterior", "posterior-zeroshot")

#: The complete recipe of ``visprompt-plus`` as dotted config keys (registered with the builder below).
RECIPE: dict[str, Any] = {
    "method.selection.kind": "ot",
    "method.selection.scope": "full",
    "method.selection.cost": "neglogp",
    "method.selection.eps": 0.01,
    "method.selection.budget": 1.0,
    "method.loss.clean": "ce",
    "method.loss.noisy": "gce",
    "method.loss.alpha": 0.5,
    "method.loss.q": 0.5,
    "method.loss.schedule": "joint",
    "method.loss.normalize_alpha": True,
    "method.noisy_weight": "kept-spread-classes",
    "method.prior_weight": 0.25,
    "method.prior_schedule": "noise",
    "method.noisy_target": "given",
    "method.gate_schedule": "fixed",
    "method.q_schedule": "noise",
    "method.relabel": True,
    "method.relabel_min_prob": 0.5,
    "method.relabel_by": "posterior",
    "method.relabel_max_kept": 0.3,
    "method.templates": "dataset",
    "prompt.vis_tokens": "patch",
    "prompt.film_mode": "tokenwise",
    "prompt.use_ffn": True,
    "prompt.gate": "learned",
    "prompt.visual_guidance": True,
}


def prior_classifier(clip: nn.Module, learner: nn.Module, prior: nn.Module | None, weight: float) -> nn.Module:
    """A :class:`~visprompt.models.classifier.PromptClassifier` whose logits add ``weight`` x ``prior``'s logits."""
    from visprompt.models.classifier import PromptClassifier

    class PriorPromptClassifier(PromptClassifier):
        """Learned logits plus ``prior_weight`` times frozen zero-shot logits (same image features)."""

        def __init__(self) -> None:
            super().__init__(clip, learner)
            # a 0-dim buffer, saved with the checkpoint (PlusMethod.named_trainable_parameters): an adapted weight
            # (prior_schedule=noise) is what eval and predict must use
            self.register_buffer("prior_scale", torch.tensor(float(weight)))
            if prior is not None:
                self.register_buffer("prior_embeddings", prior.class_embeddings.detach().clone(), persistent=False)

        @property
        def prior_weight(self) -> float:
            return float(self.prior_scale)

        @prior_weight.setter
        def prior_weight(self, value: float) -> None:
            self.prior_scale.fill_(float(value))

        def prior_logits(self, pooled: torch.Tensor) -> torch.Tensor:
            """The frozen zero-shot logits (B, C) in float32 of pooled image features (B, E)."""
            f = F.normalize(pooled.float(), dim=-1)  # (B, E)
            return self.clip.logit_scale.float().exp() * f @ self.prior_embeddings.float().t()

        def logits_from_features(self, pooled: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
            logits = super().logits_from_features(pooled, tokens)  # (B, C)
            if not hasattr(self, "prior_embeddings"):
                return logits
            return logits + (self.prior_scale.float() * self.prior_logits(pooled)).to(logits.dtype)

    return PriorPromptClassifier()


class PlusMethod(PromptMethod):
    """:class:`PromptMethod` with relabelling of the epoch split's noisy part (see the module docstring)."""

    def __init__(
        self,
        classifier: nn.Module,
        selector: OTSelection,
        loss: SplitLoss,
        *,
        relabel: bool,
        relabel_min_prob: float,
        relabel_by: str = "model",
        relabel_max_kept: float = 1.0,
        noisy_weight: str = "fixed",
        prior_schedule: str = "fixed",
        noisy_target: str = "given",
        gate_schedule: str = "fixed",
        q_schedule: str = "fixed",
    ) -> None:
        super().__init__(classifier, selector, loss)
        if q_schedule not in Q_SCHEDULES:
            raise ValueError(f"q_schedule must be one of {', '.join(Q_SCHEDULES)}, got {q_schedule!r}")
        if q_schedule != "fixed" and (loss.noisy != "gce" or loss.clean != "ce"):
            raise ValueError(f"q_schedule={q_schedule!r} sets the noisy part's GCE q: it needs loss.noisy='gce' and "
                             f"loss.clean='ce' (got {loss.noisy!r}, {loss.clean!r})")  # fmt: skip
        self.q_schedule = q_schedule
        if gate_schedule not in GATE_SCHEDULES:
            raise ValueError(f"gate_schedule must be one of {', '.join(GATE_SCHEDULES)}, got {gate_schedule!r}")
        if gate_schedule != "fixed" and (self._film is None or self._film.gate == "zero"):
            raise ValueError(f"gate_schedule={gate_schedule!r} needs the FiLM block with a non-zero gate")
        self.gate_schedule = gate_schedule
        if noisy_target not in NOISY_TARGETS:
            raise ValueError(f"noisy_target must be one of {', '.join(NOISY_TARGETS)}, got {noisy_target!r}")
        if noisy_target != "given" and (relabel or not hasattr(classifier, "prior_embeddings")):
            raise ValueError(f"noisy_target={noisy_target!r} needs zero-shot logits (a prior) and relabel=False")
        self.noisy_target = noisy_target
        self._zs_probs: torch.Tensor | None = None  # (N, C) zero-shot probabilities of the training set (frozen)
        if prior_schedule not in PRIOR_SCHEDULES:
            raise ValueError(f"prior_schedule must be one of {', '.join(PRIOR_SCHEDULES)}, got {prior_schedule!r}")
        self.prior_schedule = prior_schedule
        self.base_prior = float(getattr(classifier, "prior_weight", 0.0))
        if noisy_weight not in NOISY_WEIGHTS:
            raise ValueError(f"noisy_weight must be one of {', '.join(NOISY_WEIGHTS)}, got {noisy_weight!r}")
        self.noisy_weight = noisy_weight
        self.base_loss = loss
        if selector.scope not in ("full", "epoch"):
            raise ValueError(f"visprompt-plus needs an epoch split (scope full or epoch), got {selector.scope!r}")
        if relabel_by not in RELABEL_BY:
            raise ValueError(f"relabel_by must be one of {', '.join(RELABEL_BY)}, got {relabel_by!r}")
        self.relabel = relabel
        self.relabel_min_prob = relabel_min_prob
        self.relabel_by = relabel_by
        if not 0.0 <= relabel_max_kept <= 1.0:
            raise ValueError(f"relabel_max_kept must be a fraction in [0, 1], got {relabel_max_kept}")
        self.relabel_max_kept = relabel_max_kept
        if relabel_by == "posterior-zeroshot" and not hasattr(classifier, "prior_embeddings"):
            raise ValueError("relabel_by='posterior-zeroshot' needs zero-shot logits (method.prior_weight > 0)")
        self._zs_top: torch.Tensor | None = None  # (N,) zero-shot CLIP's class for each training sample (frozen)
        self._target: torch.Tensor | None = None  # (N,) training target per sample for this epoch
        self._use: torch.Tensor | None = None  # (N,) whether a sample gets any loss this epoch

    @property
    def _film(self) -> nn.Module | None:
        """The learner's FiLM block (None without one); a property, so it is not registered a second time."""
        return getattr(getattr(self.classifier, "learner", None), "film", None)

    def before_epoch(self, epoch: int, view: TrainView) -> dict[str, Any]:
        from visprompt.methods.selection import _solver_stats

        result, probs = self.selector.epoch_split(view)
        labels = view.labels.to(result.clean.device)
        clean = result.clean
        target, use = labels.clone(), torch.ones_like(clean)
        stats: dict[str, Any] = {}
        kept = float(clean.float().mean())  # the split's kept fraction: 1 - its noise estimate
        conc = rejection_concentration(result.pseudo_labels.cpu(), view.labels.cpu(), probs.shape[1])
        if self.relabel:
            target, use, stats = self._relabelled(view, clean, result.pseudo_labels, probs, kept, conc)
        self._clean, self._target, self._use = clean.cpu(), target.cpu(), use.cpu()
        if self.noisy_target != "given" and self._zs_probs is None:  # frozen: computed once
            self._zs_probs = self._zeroshot_logits(view, f"noisy_target={self.noisy_target!r}").softmax(dim=-1).cpu()
        if conc is not None:
            stats["reject_conc"] = conc
        changes: dict[str, float] = {}
        if self.noisy_weight != "fixed":  # trust the rejected labels as much as the split trusts labels overall
            changes["noisy_scale"] = stats["noisy_scale"] = NOISY_WEIGHTS[self.noisy_weight](kept, conc, probs.shape[1])
        if self.q_schedule == "noise":  # near CE while the split keeps most labels, near MAE when it rejects most
            changes["q"] = stats["noisy_q"] = max(1.0 - kept, Q_FLOOR)
        if self.noisy_target == "mixed":  # ... and zero-shot CLIP as much as it distrusts them
            changes["noisy_mix"] = stats["noisy_mix"] = 1.0 - kept
        if changes:
            self.loss = dataclasses.replace(self.base_loss, **changes)
        if self.prior_schedule != "fixed" and hasattr(self.classifier, "prior_weight"):
            # the next epoch (and the test) weighs the zero-shot prior by this split's noise estimate
            power = PRIOR_SCHEDULES[self.prior_schedule]
            self.classifier.prior_weight = self.base_prior * (1.0 - kept) ** power
            stats["prior_weight"] = self.classifier.prior_weight
        if self.gate_schedule != "fixed":  # this epoch (and the test) injects kept^power of the learned gate
            self._film.gate_scale.fill_(kept ** GATE_SCHEDULES[self.gate_schedule])
            stats["gate_scale"] = float(self._film.gate_scale)
        counts = split_counts(self._clean, view.labels.cpu(), view.true_labels.cpu())
        return {**_solver_stats(result), **counts, **stats}

    def _relabelled(
        self,
        view: TrainView,
        clean: torch.Tensor,
        pseudo: torch.Tensor,
        probs: torch.Tensor,
        kept: float,
        conc: float | None,
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """This epoch's (N,) training targets, (N,) which samples get a loss, and the relabelling's statistics."""
        labels = view.labels.to(clean.device)
        pseudo, probs = pseudo.to(clean.device), probs.to(clean.device)
        use = torch.ones_like(clean)
        stats: dict[str, Any] = {}
        if kept > self.relabel_max_kept:  # the split keeps too many labels this epoch: all on their given labels
            moved, target = torch.zeros_like(clean), labels.clone()
        elif self.relabel_by == "model":  # the model's probability alone; unsure rejections get no loss
            sure = probs.gather(1, pseudo[:, None]).squeeze(1) >= self.relabel_min_prob  # (N,)
            target = torch.where(clean, labels, pseudo)
            use = clean | sure
            moved = (~clean) & use
        else:  # the given label keeps its odds against the pseudo-label; unsure rejections keep their label
            odds = label_odds(kept, conc, probs.shape[1])
            moved = torch.zeros_like(clean)
            if math.isfinite(odds):  # (infinite: the split keeps every label, none is moved)
                moved = (~clean) & (relabel_posterior(probs, labels, pseudo, odds) >= self.relabel_min_prob)
                stats["relabel_odds"] = odds
            if self.relabel_by == "posterior-zeroshot":  # ... and only where zero-shot CLIP names it too
                moved &= self._zeroshot_top(view).to(clean.device) == pseudo
            target = torch.where(moved, pseudo, labels)
        true = view.true_labels.to(clean.device)
        known = moved & (true >= 0)
        stats |= {
            "n_relabelled": int(moved.sum()),
            "sel_relabel_right": int((target[known] == true[known]).sum()),
            "sel_relabel_known": int(known.sum()),
        }
        return target, use, stats

    def _zeroshot_top(self, view: TrainView) -> torch.Tensor:
        """(N,) the frozen zero-shot CLIP's class for each training sample: it never saw a label (computed once)."""
        if self._zs_top is None:
            self._zs_top = self._zeroshot_logits(view, f"relabel_by={self.relabel_by!r}").argmax(dim=-1).cpu()
        return self._zs_top

    def _zeroshot_logits(self, view: TrainView, option: str) -> torch.Tensor:
        """(N, C) the frozen zero-shot CLIP's logits of the training set; ``option`` names what needs them in the
        error raised when the view holds no frozen features."""
        if view.pooled is None:
            raise ValueError(f"{option} needs the training set's frozen features (TrainView.pooled)")
        with torch.no_grad():
            return self.classifier.prior_logits(view.pooled())

    def named_trainable_parameters(self) -> dict[str, torch.Tensor]:
        """The learner's parameters plus the adapted weights eval and predict must use: the zero-shot prior's
        weight, and the gate's scale when it is scheduled (a fixed schedule leaves it at 1 and out of the file)."""
        own = super().named_trainable_parameters()
        scale = getattr(self.classifier, "prior_scale", None)
        if scale is not None:
            own["classifier.prior_scale"] = scale
        if self.gate_schedule != "fixed":
            own["learner.film.gate_scale"] = self._film.gate_scale
        return own

    def split(self, batch: Batch) -> tuple[list[Batch], dict[str, Any]]:
        if self._target is None:
            return super().split(batch)
        index = batch["index"]
        batch = {
            **batch,
            "clean": self._clean.to(index.device)[index],
            "target": self._target.to(index.device)[index],
            "use": self._use.to(index.device)[index],
        }
        if self._zs_probs is not None:
            batch["zs_probs"] = self._zs_probs.to(index.device)[index]
        return [batch], {}

    def forward(self, batch: Batch) -> dict[str, Any]:
        if "target" not in batch:
            return super().forward(batch)
        logits = self.logits(batch)  # (B, C)
        clean, use = batch["clean"], batch["use"]
        if self.relabel:  # the noisy part is trained on its pseudo-labels, where the model is sure enough
            if use.any():
                loss, parts = self.loss(logits[use], batch["target"][use], clean[use])
            else:
                loss, parts = logits.sum() * 0.0, {}
            scale = float(use.sum()) / max(int(use.numel()), 1)  # keep the 1/B normalisation of the whole batch
            loss = loss * scale
        else:
            loss, parts = self.loss(logits, batch["labels"], clean, noisy_target=batch.get("zs_probs"))
        return {"loss": loss, **parts, **self.model_stats()}


@register_method(
    "visprompt-plus",
    recipe=RECIPE,
    summary="ours, not the paper's: VisPrompt's learner, full-set OT per epoch, noisy part weighted by kept and where "
    f"its labels point, GCE q = 1 - kept, zero-shot prior weighted by {RECIPE['method.prior_weight']} x (1 - kept), "
    f"relabelled by the posterior while kept <= {RECIPE['method.relabel_max_kept']}",
    reads=VISPROMPT_READS,
)
def visprompt_plus(clip: nn.Module, classnames: tuple[str, ...], spec: MethodSpec) -> PlusMethod:
    """``visprompt-plus``: VisPrompt's learner, an epoch-level OT split, a zero-shot prior and relabelling."""
    from visprompt.models import ZeroShotClassifier, templates_for
    from visprompt.models.templates import DEFAULT_TEMPLATE
    from visprompt.models.visprompt import VisPromptLearner

    if not isinstance(spec.selector, OTSelection):
        raise ValueError("visprompt-plus needs method.selection.kind=ot")
    learner = VisPromptLearner(clip, classnames, **dataclasses.asdict(spec.coop), **dataclasses.asdict(spec.visprompt))
    prior = None
    if spec.prior_weight > 0 or spec.noisy_target != "given":
        if spec.templates == "plain":
            templates = [DEFAULT_TEMPLATE]
        else:
            templates = templates_for(spec.dataset, "select" if spec.templates == "ensemble" else None)
        prior = ZeroShotClassifier(clip, classnames, templates)
    classifier = prior_classifier(clip, learner, prior, spec.prior_weight)
    return PlusMethod(
        classifier,
        spec.selector,
        spec.loss,
        relabel=spec.relabel,
        relabel_min_prob=spec.relabel_min_prob,
        relabel_by=spec.relabel_by,
        relabel_max_kept=spec.relabel_max_kept,
        noisy_weight=spec.noisy_weight,
        prior_schedule=spec.prior_schedule,
        noisy_target=spec.noisy_target,
        gate_schedule=spec.gate_schedule,
        q_schedule=spec.q_schedule,
    )
