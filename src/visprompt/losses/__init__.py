"""Losses: CE, GCE, MAE, SCE (registered in ``LOSSES``) and the clean/noisy split of a batch's loss."""

from visprompt.losses.robust import LOSSES, LossFn, cross_entropy, gce, mae, per_sample_loss, sce
from visprompt.losses.split import split_loss_terms

__all__ = ["LOSSES", "LossFn", "cross_entropy", "gce", "mae", "per_sample_loss", "sce", "split_loss_terms"]
