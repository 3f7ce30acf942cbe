r"""The split loss of a batch: a loss on the clean subset, another on the noisy one (VisPrompt: CE and GCE).

For a batch of B samples with clean mask :math:`m` (from the OT split), given labels :math:`y` and weight
:math:`\alpha` (default 0.5), with :math:`R` the noisy-subset loss (default GCE, q = 0.5):

.. math::

    L = \frac{1}{B} \Big( \alpha \sum_{i: m_i} \mathrm{CE}_i + (1 - \alpha) \sum_{i: \neg m_i} R_i \Big)
    \qquad (\texttt{normalize="batch"}, \text{the default})

Both terms use the given (noisy) label. Both sums are divided by the batch size, not by the subset sizes: an
empty subset simply contributes 0 (no special case, no division by zero), a sample's gradient weight does not
depend on how many others share its subset, and over an epoch each subset's weight is proportional to its size,
which is what the authors' sequential clean-then-noisy passes (each a mean over its own batches, one step per
batch) give. ``normalize="subset"`` instead uses :math:`\alpha\,\mathrm{mean}_{clean}\,\mathrm{CE} + (1 -
\alpha)\,\mathrm{mean}_{noisy}\,R`, the paper's equation read literally; an empty subset's mean is taken as 0.
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["split_loss_terms"]

Normalize = Literal["batch", "subset"]


def split_loss_terms(
    per_clean: torch.Tensor | None,
    per_noisy: torch.Tensor | None,
    clean_mask: torch.Tensor,
    *,
    weights: tuple[float, float],
    normalize: Normalize = "batch",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The weighted clean and noisy terms from per-sample losses over the whole batch.

    ``w_c * sum_{i: m_i} per_clean_i / n_c`` and ``w_n * sum_{i: not m_i} per_noisy_i / n_n``, where n = B
    (``normalize="batch"``) or the subset's size (``"subset"``, at least 1). A term whose per-sample losses are
    None is a constant 0 (no graph).

    Args:
        per_clean, per_noisy: (B,) per-sample losses (only the rows of their own subset are read), or None.
        clean_mask: (B,) bool, on the losses' device.
        weights: ``(w_c, w_n)``.
        normalize: ``"batch"`` or ``"subset"``.
    """
    zero = clean_mask.new_zeros((), dtype=torch.float32)
    if normalize == "batch":
        clean_den = noisy_den = max(clean_mask.shape[0], 1)
    else:
        clean_den, noisy_den = max(int(clean_mask.sum()), 1), max(int((~clean_mask).sum()), 1)
    clean = zero
    if per_clean is not None:  # masked, so NaN-free even if the subset is empty
        clean = weights[0] * torch.where(clean_mask, per_clean, zero).sum() / clean_den
    noisy = zero
    if per_noisy is not None:
        noisy = weights[1] * torch.where(clean_mask, zero, per_noisy).sum() / noisy_den
    return clean, noisy
