"""Losses: CE, GCE, MAE, SCE (registered in ``LOSSES``) and the combined VisPrompt clean/noisy loss."""

from visprompt.losses.robust import LOSSES, LossFn, cross_entropy, gce, mae, per_sample_loss, reduce, sce
from visprompt.losses.split import split_loss_terms, visprompt_loss, visprompt_loss_terms

__all__ = [
    "LOSSES",
    "LossFn",
    "cross_entropy",
    "gce",
    "mae",
    "per_sample_loss",
    "reduce",
    "sce",
    "split_loss_terms",
    "visprompt_loss",
    "visprompt_loss_terms",
]
