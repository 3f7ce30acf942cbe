"""The one boundary where a RunConfig becomes explicit arguments: :class:`MethodSpec` and :func:`build_method`.

Every registered method (:data:`~visprompt.registry.METHODS`) has a builder ``(clip, classnames, spec) ->
MethodBase``; the spec carries typed values only (no config object reaches a method). The paper's ablations are
overrides of the visprompt recipe (``prompt.gate=zero``, ``prompt.use_ffn=false``, ``method.selection.kind=none``,
...) or registered variants, all of which arrive here as fields of the spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from visprompt.config import RunConfig
from visprompt.errors import ConfigError
from visprompt.methods.base import MethodBase
from visprompt.methods.objective import SplitLoss
from visprompt.methods.selection import NoSelection, OTSelection
from visprompt.registry import METHODS

if TYPE_CHECKING:
    from visprompt.models.frozen_clip import FrozenCLIP

__all__ = ["CoOpOptions", "MethodSpec", "VisPromptOptions", "build_method", "method_spec"]


@dataclass(frozen=True)
class CoOpOptions:
    """The shared-context prompt's arguments (:class:`~visprompt.models.coop.CoOpPromptLearner`)."""

    n_ctx: int = 16
    ctx_init: str = ""
    csc: bool = False
    class_token_position: str = "end"


@dataclass(frozen=True)
class VisPromptOptions:
    """The cross-modal FiLM block's arguments (:class:`~visprompt.models.visprompt.VisPromptLearner`)."""

    vis_tokens: str = "patch"
    film_mode: str = "tokenwise"
    use_ffn: bool = True
    gate: str = "learned"
    visual_guidance: bool = True
    init: str = "default"
    num_heads: int = 8
    dropout: float = 0.1
    gate_lr_scale: float = 1.0


@dataclass(frozen=True)
class MethodSpec:
    """Everything a method builder may use, as typed values (no config object reaches a method)."""

    name: str  # registered method name
    dataset: str = ""  # dataset name (zero-shot templates)
    coop: CoOpOptions = field(default_factory=CoOpOptions)
    visprompt: VisPromptOptions = field(default_factory=VisPromptOptions)
    selector: NoSelection | OTSelection = field(default_factory=NoSelection)
    selection_kind: str = "none"  # none | ot | gmm
    gmm_threshold: float = 0.5
    loss: SplitLoss = field(default_factory=SplitLoss)
    mixup_alpha: float = 0.001
    templates: str = "dataset"  # zero-shot: dataset | ensemble | plain
    prior_weight: float = 0.0  # visprompt-plus: weight of the zero-shot logits added to the learned ones
    relabel: bool = False  # visprompt-plus: OT-noisy samples trained on their OT pseudo-label
    relabel_min_prob: float = 0.5  # ... when the model gives the pseudo-label at least this probability
    relabel_by: str = "model"  # visprompt-plus: model | posterior | posterior-zeroshot (see RELABEL_BY)
    relabel_max_kept: float = 1.0  # visprompt-plus: relabel only in epochs whose split keeps at most this fraction
    noisy_weight: str = "fixed"  # visprompt-plus: a NOISY_WEIGHTS name (x f(kept, ...))
    prior_schedule: str = "fixed"  # visprompt-plus: fixed | noise | noise-squared (x (1 - kept) or its square)
    noisy_target: str = "given"  # visprompt-plus: given | zeroshot | mixed (what the split's noisy part is trained to)
    gate_schedule: str = "fixed"  # visprompt-plus: fixed | kept | kept-squared (the FiLM gate x kept fraction^power)
    q_schedule: str = "fixed"  # visprompt-plus: fixed | noise (the noisy part's GCE q = 1 - kept fraction)
    class_chunk: int | None = None  # the text encoder's classes per pass (run.class_chunk; None: all at once)


def method_spec(cfg: RunConfig) -> MethodSpec:
    """Convert the method-related parts of a RunConfig into a :class:`MethodSpec`."""
    p, sel, loss = cfg.prompt, cfg.method.selection, cfg.method.loss
    if sel.kind == "ot":
        selector: NoSelection | OTSelection = OTSelection(
            scope=sel.scope, cost=sel.cost, eps=sel.eps, tol=sel.tol, max_iter=sel.max_iter, budget=sel.budget
        )
    else:
        selector = NoSelection()
    return MethodSpec(
        name=cfg.method.name,
        dataset=cfg.data.dataset,
        coop=CoOpOptions(p.n_ctx, p.ctx_init, p.csc, p.class_token_position),
        visprompt=VisPromptOptions(
            p.vis_tokens,
            p.film_mode,
            p.use_ffn,
            p.gate,
            p.visual_guidance,
            p.init,
            p.num_heads,
            p.dropout,
            p.gate_lr_scale,
        ),
        selector=selector,
        selection_kind=sel.kind,
        gmm_threshold=sel.gmm_threshold,
        loss=SplitLoss(
            clean=loss.clean,
            noisy=loss.noisy,
            alpha=loss.alpha,
            q=loss.q,
            schedule=loss.schedule,
            normalize_alpha=loss.normalize_alpha,
        ),
        mixup_alpha=cfg.method.mixup_alpha,
        templates=cfg.method.templates,
        prior_weight=cfg.method.prior_weight,
        relabel=cfg.method.relabel,
        relabel_min_prob=cfg.method.relabel_min_prob,
        relabel_by=cfg.method.relabel_by,
        relabel_max_kept=cfg.method.relabel_max_kept,
        noisy_weight=cfg.method.noisy_weight,
        prior_schedule=cfg.method.prior_schedule,
        noisy_target=cfg.method.noisy_target,
        gate_schedule=cfg.method.gate_schedule,
        q_schedule=cfg.method.q_schedule,
        class_chunk=cfg.run.class_chunk,
    )


def build_method(spec: MethodSpec, clip: FrozenCLIP, classnames: tuple[str, ...] | list[str]) -> MethodBase:
    """Build the registered method ``spec.name`` on a frozen CLIP (the caller seeds and moves it)."""
    definition = METHODS.get(spec.name)
    if spec.selection_kind == "gmm" and spec.name != "joapr":
        raise ConfigError(f"method.selection.kind: 'gmm' is JoAPR's split; method {spec.name!r} takes none or ot")
    method = definition.build(clip, tuple(classnames), spec)
    if spec.class_chunk is not None:
        from visprompt.models.classifier import PromptClassifier

        for module in method.modules():  # every prompt classifier the method holds
            if isinstance(module, PromptClassifier):
                module.text_encoder.class_chunk = spec.class_chunk
    return method
