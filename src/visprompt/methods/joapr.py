"""JoAPR (Guo et al., "JoAPR: Cleaning the Lens of Prompt Learning for Vision-Language Models", CVPR 2024).

A CoOp prompt trained in two phases, with the defaults of the authors' code (yunncheng/JoAPR, RN50 config):

Warm-up (the first ``warmup_epochs`` epochs): cross-entropy on the given labels plus a confidence penalty,
``L = CE(p, y) + lambda_e * sum_k p_k log p_k`` (lambda_e = 0.5; the second term is minus the entropy).

Then, before every epoch, on the whole training set (current model, no augmentation, no gradient):

    l_i  = CE(p_i, y_i) + H(p_i)                      per-sample loss plus entropy
    l_i <- (l_i - min l) / (max l - min l)            normalised, then averaged over the last 5 epochs
    w_i  = P(low-loss component | l_i)                a 2-component 1-D GMM (visprompt.selection.gmm)
    clean_i = w_i > tau  or  l_i < x*                 tau adapts: tau <- fraction of samples with w_i <= tau;
                                                      x*: where the two Gaussians' densities cross
                                                      (tau is capped at 0.95 so the clean set cannot vanish)
    w_i <- w_i * p_i[y_i]                             after the first selection epoch (the authors' code)

and each step refurbishes the labels and trains on a mixup of the batch (T = 2, Beta(a, a) mixup):

    clean i:  t_i = sharpen(w_i * onehot(y_i) + (1 - w_i) * p_i, T)      noisy i:  t_i = sharpen(p_i, T)
    lam ~ Beta(a, a), lam = max(lam, 1 - lam);  x~ = lam x + (1 - lam) x[perm],  t~ likewise
    L = - mean_i sum_k t~_ik log p~_ik + lambda_p * KL(uniform || mean_i p~_i)          (lambda_p = 0.5)

with sharpen(t, T)_k = t_k^T / sum_j t_j^T (Dassl's ``sharpen_prob``: T = 2 squares the probabilities).

Differences from the authors' code, kept deliberately: clean and noisy samples share each mini-batch (the
authors draw one batch from each set); with cached features the mixup mixes the frozen image outputs (pooled
and token features) instead of the pixels.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from visprompt.methods.base import Batch, MethodBase, TrainView
from visprompt.methods.selection import split_counts
from visprompt.registry import register_method

if TYPE_CHECKING:
    from visprompt.methods.build import MethodSpec
    from visprompt.models.frozen_clip import FrozenCLIP

__all__ = ["JoAPRMethod", "mixup_weight", "sharpen"]


def mixup_weight(alpha: float) -> float:
    """``max(lam, 1 - lam)`` for ``lam ~ Beta(alpha, alpha)``, exact for small ``alpha`` (torch's global RNG).

    ``lam = G1 / (G1 + G2)`` with ``G ~ Gamma(alpha)`` drawn in log space: a Gamma(alpha) variate is a
    Gamma(alpha + 1) one times ``U^(1/alpha)``, so ``log G = log Gamma(alpha + 1) + log(U) / alpha`` never
    underflows. (``torch.distributions.Beta(0.001, 0.001)`` returns exactly 0.5 in about a quarter of its draws:
    both gammas underflow to zero. At alpha = 0.001, 99% of exact draws give a weight above 0.999.)
    """
    shape = torch.full((2,), alpha + 1.0, dtype=torch.float64)
    u = 1.0 - torch.rand(2, dtype=torch.float64)  # in (0, 1]
    log_g = torch.distributions.Gamma(shape, torch.ones_like(shape)).sample().log() + u.log() / alpha
    return float(torch.sigmoid((log_g[0] - log_g[1]).abs()))


def _crossing(stats: Any) -> float:
    """Where the clean component's density falls below the noisy one's, between the two means (-inf if none).

    Solves N(x; m_c, v_c) = N(x; m_n, v_n): a x^2 + b x + c = 0 with a = 1/v_c - 1/v_n,
    b = 2 (m_n/v_n - m_c/v_c), c = m_c^2/v_c - m_n^2/v_n + log(v_c / v_n).
    """
    if "means" not in stats:
        return float("-inf")
    (m_c, m_n), (v_c, v_n) = stats["means"], stats["variances"]
    a, b = 1.0 / v_c - 1.0 / v_n, 2.0 * (m_n / v_n - m_c / v_c)
    c = m_c**2 / v_c - m_n**2 / v_n + math.log(v_c / v_n)
    roots = [-c / b] if abs(a) < 1e-12 and abs(b) > 1e-12 else []
    if abs(a) >= 1e-12 and b * b - 4 * a * c >= 0:
        disc = math.sqrt(b * b - 4 * a * c)
        roots = [(-b - disc) / (2 * a), (-b + disc) / (2 * a)]
    inside = [r for r in roots if min(m_c, m_n) <= r <= max(m_c, m_n)]
    return float(inside[0]) if inside else float("-inf")


_INPUT_KEYS = ("images", "pooled", "tokens")


def sharpen(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """``p^T`` renormalised over the last dimension (T > 1 sharpens), as JoAPR's code does."""
    powered = probs.clamp_min(1e-12) ** temperature
    return powered / powered.sum(dim=-1, keepdim=True)


class JoAPRMethod(MethodBase):
    """GMM split on per-sample losses, label refurbishment and mixup (see the module docstring)."""

    def __init__(
        self,
        classifier: nn.Module,
        num_classes: int,
        *,
        warmup_epochs: int = 1,
        threshold: float = 0.5,
        temperature: float = 2.0,
        mixup_alpha: float = 0.001,
        entropy_weight: float = 0.5,
        prior_weight: float = 0.5,
        history: int = 5,
    ) -> None:
        super().__init__(classifier)
        self.num_classes = num_classes
        self.warmup_epochs = warmup_epochs
        self.temperature = temperature
        self.mixup_alpha = mixup_alpha
        self.entropy_weight = entropy_weight
        self.prior_weight = prior_weight
        self.history = history
        self.threshold = threshold  # adapted every selection epoch (state)
        self._losses: list[torch.Tensor] = []  # normalised per-sample losses of the last epochs (state)
        self._weight: torch.Tensor | None = None  # (N,) clean weight w of the current epoch
        self._clean: torch.Tensor | None = None  # (N,) clean mask of the current epoch
        self._warmup = True

    # ------------------------------------------------------------------------------------ epoch hooks
    def before_epoch(self, epoch: int, view: TrainView) -> dict[str, Any]:
        from visprompt.selection.gmm import gmm_split

        self._warmup = epoch < self.warmup_epochs
        if self._warmup:
            return {}
        logits = view.logits().float()  # (N, C)
        labels = view.labels.to(logits.device)
        probs = logits.softmax(dim=-1)
        loss = F.cross_entropy(logits, labels, reduction="none") - (probs * probs.clamp_min(1e-12).log()).sum(-1)
        loss = (loss - loss.min()) / (loss.max() - loss.min()).clamp_min(1e-12)  # (N,) in [0, 1]
        self._losses = [*self._losses, loss.cpu()][-self.history :]
        averaged = torch.stack(self._losses).mean(0)  # (N,)
        result = gmm_split(averaged, threshold=self.threshold, normalize=False)
        posterior = result.confidence.float().cpu()  # (N,) P(low-loss component | loss)
        self.threshold = min(float((posterior <= self.threshold).float().mean()), 0.95)  # estimated noise rate
        self._clean = (posterior > self.threshold) | (averaged < _crossing(result.stats))
        self._weight = posterior
        if epoch > self.warmup_epochs:
            self._weight = posterior * probs.gather(1, labels[:, None]).squeeze(1).cpu()  # w_i * p_i[y_i]
        return {"gmm_threshold": self.threshold, **split_counts(self._clean, labels.cpu(), view.true_labels.cpu())}

    def extra_state(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "losses": [t.clone() for t in self._losses]}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.threshold = float(state["threshold"])
        self._losses = [t.clone() for t in state["losses"]]

    # -------------------------------------------------------------------------------------- the step
    def forward(self, batch: Batch) -> dict[str, Any]:
        if self._warmup or self._weight is None:
            return self._warmup_step(batch)
        labels = batch["labels"]
        with torch.no_grad():
            probs = self.logits(batch).float().softmax(dim=-1)  # (B, C)
            index = batch["index"].cpu()
            w = self._weight[index].to(probs.device)[:, None]  # (B, 1)
            clean = self._clean[index].to(probs.device)[:, None]  # (B, 1)
            onehot = F.one_hot(labels, self.num_classes).float()  # (B, C)
            targets = torch.where(clean, w * onehot + (1 - w) * probs, probs)  # (B, C) refurbished labels
            targets = sharpen(targets, self.temperature)
            lam = mixup_weight(self.mixup_alpha)
            perm = torch.randperm(labels.numel(), device=labels.device)
        mixed = {k: lam * v + (1 - lam) * v[perm] for k, v in batch.items() if k in _INPUT_KEYS}
        logits = self.logits(mixed).float()  # (B, C)
        mixed_targets = lam * targets + (1 - lam) * targets[perm]  # (B, C)
        soft_ce = -(mixed_targets * logits.log_softmax(dim=-1)).sum(-1).mean()
        prior = torch.full((self.num_classes,), 1.0 / self.num_classes, device=logits.device)  # (C,)
        mean_p = logits.softmax(dim=-1).mean(0)  # (C,)
        penalty = (prior * (prior / mean_p.clamp_min(1e-12)).log()).sum()
        return {"loss": soft_ce + self.prior_weight * penalty, "loss_mix": float(soft_ce.detach()), "mixup_lambda": lam}

    def _warmup_step(self, batch: Batch) -> dict[str, Any]:
        logits = self.logits(batch).float()  # (B, C)
        ce = F.cross_entropy(logits, batch["labels"])
        probs = logits.softmax(dim=-1)
        neg_entropy = (probs * logits.log_softmax(dim=-1)).sum(-1).mean()
        return {"loss": ce + self.entropy_weight * neg_entropy, "loss_clean": float(ce.detach())}


@register_method(
    "joapr",
    recipe={"method.selection.kind": "gmm", "method.selection.gmm_threshold": 0.5, "method.loss.clean": "ce",
            "method.loss.noisy": "ce", "method.loss.alpha": 0.5, "method.loss.schedule": "joint",
            "method.mixup_alpha": 0.001},  # the authors' released setting: Beta(0.001, 0.001) mixes little
    summary="JoAPR (Guo et al., 2024): a GMM split on per-sample losses, label refurbishment and mixup",
    # its loss is its own (CE on refurbished labels, mixup, entropy): the recipe's loss fields are for display only
    reads=("prompt.n_ctx", "prompt.ctx_init", "prompt.csc", "prompt.class_token_position",
           "method.selection.gmm_threshold"),
)  # fmt: skip
def joapr(clip: FrozenCLIP, classnames: tuple[str, ...], spec: MethodSpec) -> JoAPRMethod:
    """JoAPR on a CoOp prompt; GMM threshold and mixup from the spec, the rest at the authors' defaults."""
    from visprompt.models.classifier import PromptClassifier
    from visprompt.models.coop import CoOpPromptLearner

    classifier = PromptClassifier(clip, CoOpPromptLearner(clip, classnames, **asdict(spec.coop)))
    return JoAPRMethod(classifier, len(classnames), threshold=spec.gmm_threshold, mixup_alpha=spec.mixup_alpha)
