"""Sample selection: pure functions that split noisy-labelled training samples into clean and noisy.

``ot_split`` (VisPrompt, NLPrompt: entropic OT from model probabilities to uniform classes), ``gmm_split``
(DivideMix, JoAPR: two-component mixture on per-sample losses), ``selection_metrics`` (precision/recall of a
split against true labels). None of them edits a dataset; each returns a :class:`SplitResult`.
"""

from visprompt.selection.gmm import GaussianMixture1D, fit_gmm_1d, gmm_split
from visprompt.selection.metrics import selection_counts, selection_metrics
from visprompt.selection.ot import ot_split
from visprompt.selection.result import ConvergenceWarning, SplitResult
from visprompt.selection.sinkhorn import SinkhornStats, sinkhorn_log

__all__ = [
    "ConvergenceWarning",
    "GaussianMixture1D",
    "SinkhornStats",
    "SplitResult",
    "fit_gmm_1d",
    "gmm_split",
    "ot_split",
    "selection_counts",
    "selection_metrics",
    "sinkhorn_log",
]
