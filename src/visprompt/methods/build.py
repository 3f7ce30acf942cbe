"""The one boundary where a RunConfig becomes explicit arguments: :class:`MethodSpec` and :func:`build_method`.

Every registered method is a builder ``(clip, classnames, spec) -> MethodBase``; the spec carries typed
values only (no config object reaches a method). The paper's ablations are overrides of the visprompt
preset (``prompt.gate=zero``, ``prompt.use_ffn=false``, ``method.selection.kind=none``, ...), all of which
arrive here as fields of the spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from visprompt.config import RunConfig
from visprompt.errors import ConfigError
from visprompt.methods.base import METHODS, MethodBase
from visprompt.methods.objective import SplitLoss
from visprompt.methods.selection import NoSelection, OTSelection

__all__ = ["MethodSpec", "build_method", "method_spec"]


@dataclass(frozen=True)
class MethodSpec:
    """Everything a method builder may use, as plain values."""

    name: str  # registered method name
    dataset: str = ""  # dataset name (zero-shot templates)
    coop: dict[str, Any] = field(default_factory=dict)  # n_ctx, ctx_init, csc, class_token_position
    visprompt: dict[str, Any] = field(default_factory=dict)  # the cross-modal FiLM block's options
    selector: NoSelection | OTSelection = field(default_factory=NoSelection)
    selection_kind: str = "none"  # none | ot | gmm
    gmm_threshold: float = 0.5
    loss: SplitLoss = field(default_factory=SplitLoss)
    mixup_alpha: float = 0.001
    templates: str = "dataset"  # zero-shot: dataset | ensemble | plain
    prior_weight: float = 0.0  # visprompt-plus: weight of the zero-shot logits added to the learned ones
    relabel: bool = False  # visprompt-plus: OT-noisy samples trained on their OT pseudo-label
    relabel_min_prob: float = 0.5  # ... when the model gives the pseudo-label at least this probability
    noisy_weight: str = "fixed"  # visprompt-plus: fixed | kept (noisy-part weight x the split's kept fraction)
    prior_schedule: str = "fixed"  # visprompt-plus: fixed | noise (prior weight x (1 - the kept fraction))


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
        coop={"n_ctx": p.n_ctx, "ctx_init": p.ctx_init, "csc": p.csc, "class_token_position": p.class_token_position},
        visprompt={
            "vis_tokens": p.vis_tokens,
            "film_mode": p.film_mode,
            "use_ffn": p.use_ffn,
            "gate": p.gate,
            "visual_guidance": p.visual_guidance,
            "init": p.init,
            "num_heads": p.num_heads,
            "dropout": p.dropout,
        },
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
        noisy_weight=cfg.method.noisy_weight,
        prior_schedule=cfg.method.prior_schedule,
    )


def build_method(spec: MethodSpec, clip: nn.Module, classnames: tuple[str, ...] | list[str]) -> MethodBase:
    """Build the registered method ``spec.name`` on a frozen CLIP (the caller seeds and moves it)."""
    import visprompt.methods  # noqa: F401  (registers the built-in methods)

    builder = METHODS.get(spec.name)
    if spec.selection_kind == "gmm" and spec.name != "joapr":
        raise ConfigError(f"method.selection.kind: 'gmm' is JoAPR's split; method {spec.name!r} takes none or ot")
    return builder(clip, tuple(classnames), spec)
