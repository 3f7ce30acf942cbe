"""Zero-shot CLIP: class-name prompts from templates, no training (Radford et al., ICML 2021).

The text features of every template for a class are averaged (and renormalised) into one class embedding;
``logits = exp(logit_scale) * cos(f_b, t_k)``. Templates: the field's per-dataset template (CoOp's table),
the ImageNet ensemble, or the plain "a photo of a {}.".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from visprompt.methods.base import Batch, MethodBase
from visprompt.registry import register_method

if TYPE_CHECKING:
    from visprompt.methods.build import MethodSpec
    from visprompt.models.frozen_clip import FrozenCLIP

__all__ = ["ZeroShotMethod"]


class ZeroShotMethod(MethodBase):
    """A fixed classifier: the engine evaluates it and trains nothing."""

    trains = False

    def trainable_parameters(self) -> list[nn.Parameter]:
        return []

    def forward(self, batch: Batch) -> dict[str, Any]:
        raise RuntimeError("zero-shot CLIP has no training step")


@register_method(
    "zeroshot",
    recipe={"method.selection.kind": "none", "method.templates": "dataset"},
    summary="zero-shot CLIP (Radford et al., 2021): class-name templates, no training",
    trains=False,
    reads=(),  # no prompt, split or loss: a class-name template per class
)
def zeroshot(clip: FrozenCLIP, classnames: tuple[str, ...], spec: MethodSpec) -> ZeroShotMethod:
    from visprompt.models import ZeroShotClassifier, templates_for
    from visprompt.models.templates import DEFAULT_TEMPLATE

    if spec.templates == "plain":
        templates = [DEFAULT_TEMPLATE]
    else:  # the dataset's own sentence, or CoOp's 7-template ImageNet ensemble
        templates = templates_for(spec.dataset, "select" if spec.templates == "ensemble" else None)
    return ZeroShotMethod(ZeroShotClassifier(clip, classnames, templates))
