"""Methods: the split loss, selection inside a step, batch plans, JoAPR's pieces, the config boundary."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from visprompt.config import load_config
from visprompt.errors import ConfigError, UnknownNameError
from visprompt.methods import METHODS, TrainView, build_method, method_spec
from visprompt.methods.base import shuffled_batches
from visprompt.methods.joapr import JoAPRMethod, _crossing, mixup_weight, sharpen
from visprompt.methods.objective import SplitLoss
from visprompt.methods.prompt import PromptMethod
from visprompt.methods.selection import NoSelection, OTSelection


class LinearProbe(nn.Module):
    """A stand-in classifier on cached features: logits = pooled @ W (what the methods need of a classifier)."""

    def __init__(self, dim: int, classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(dim, classes) * 0.1)

    def logits_from_features(self, pooled: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        return pooled @ self.weight  # (B, C)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [self.weight]

    def last_stats(self) -> dict[str, float]:
        return {}


def _planted(n: int = 24, classes: int = 4, flipped: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch whose features point at the true class (identity probe), with ``flipped`` wrong labels."""
    gen = torch.Generator().manual_seed(seed)
    true = torch.arange(n) % classes
    pooled = F.one_hot(true, classes).float() * 8.0 + 0.1 * torch.randn(n, classes, generator=gen)  # (N, C)
    labels = true.clone()
    labels[:flipped] = (true[:flipped] + 1) % classes
    return {"pooled": pooled, "labels": labels, "true_labels": true, "index": torch.arange(n)}


def _identity_probe(classes: int = 4) -> LinearProbe:
    probe = LinearProbe(classes, classes)
    with torch.no_grad():
        probe.weight.copy_(torch.eye(classes))
    return probe


# ---------------------------------------------------------------------------------------------- the split loss


def test_split_loss_all_clean_alpha_one_is_the_mean_loss() -> None:
    logits, labels = torch.randn(8, 5), torch.randint(0, 5, (8,))
    loss, parts = SplitLoss(clean="ce", noisy="none", alpha=1.0)(logits, labels, torch.ones(8, dtype=torch.bool))
    assert loss == pytest.approx(float(F.cross_entropy(logits, labels)), abs=1e-6)
    assert parts["loss_clean"] == pytest.approx(float(loss), abs=1e-6)


def test_split_loss_joint_normalises_by_the_batch() -> None:
    logits, labels = torch.randn(10, 3), torch.randint(0, 3, (10,))
    clean = torch.arange(10) < 7
    loss, _ = SplitLoss(clean="ce", noisy="gce", alpha=0.3, q=0.5)(logits, labels, clean)
    ce = F.cross_entropy(logits, labels, reduction="none")
    p_y = logits.softmax(-1).gather(1, labels[:, None]).squeeze(1)
    gce = (1 - p_y**0.5) / 0.5
    assert float(loss) == pytest.approx(float((0.3 * ce[clean].sum() + 0.7 * gce[~clean].sum()) / 10), abs=1e-6)


def test_split_loss_sequential_parts_are_plain_means_and_noisy_none_has_no_gradient() -> None:
    logits = torch.randn(4, 3, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 0])
    noisy_only = torch.zeros(4, dtype=torch.bool)
    loss, _ = SplitLoss(clean="ce", noisy="mae", alpha=0.5, schedule="sequential")(logits, labels, noisy_only)
    p_y = logits.softmax(-1).gather(1, labels[:, None]).squeeze(1)
    assert float(loss.detach()) == pytest.approx(float((1 - p_y.detach()).mean()), abs=1e-6)
    loss, _ = SplitLoss(clean="ce", noisy="none")(logits, labels, noisy_only)
    assert not loss.requires_grad and float(loss) == 0.0  # the loop skips such a step


# ------------------------------------------------------------------------------------- selection inside a step


def test_minibatch_ot_finds_the_planted_noisy_labels() -> None:
    batch = _planted()
    method = PromptMethod(_identity_probe(), OTSelection(scope="minibatch"), SplitLoss())
    out = method(batch)
    assert out["n_clean"] == 18 and out["sel_hits"] == 18  # exactly the 18 unflipped samples
    assert out["sel_selected"] == 18 and out["sel_true_clean"] == 18
    assert out["ot_converged"] == 1.0 and out["loss"].requires_grad


def test_no_selection_counts_everything_clean() -> None:
    out = PromptMethod(_identity_probe(), NoSelection(), SplitLoss(noisy="none", alpha=1.0))(_planted())
    assert out["n_clean"] == 24 and out["sel_hits"] == 18 and "loss_noisy" not in out


def test_full_scope_sequential_plans_clean_batches_before_noisy_ones() -> None:
    batch = _planted(n=24, flipped=6)
    method = PromptMethod(_identity_probe(), OTSelection(scope="full"), SplitLoss(schedule="sequential"))
    view = TrainView(batch["labels"], batch["true_labels"], lambda: batch["pooled"] @ torch.eye(4))
    stats = method.before_epoch(0, view)
    assert stats["n_clean"] == 18 and stats["sel_hits"] == 18
    plan = method.plan_epoch(0, 24, 4, torch.Generator().manual_seed(0))
    flat = torch.cat(plan)
    clean_rows = set(range(6, 24))
    kinds = [int(i) in clean_rows for i in flat]
    assert kinds == sorted(kinds, reverse=True)  # every clean sample comes before any noisy one
    assert len(flat) == len(set(flat.tolist())) and all(len(b) <= 4 for b in plan)
    parts, _ = method.split({k: v[plan[0]] for k, v in batch.items()})
    assert len(parts) == 1 and bool(parts[0]["clean"].all())


def test_minibatch_sequential_split_cuts_a_batch_into_pure_parts() -> None:
    batch = _planted()
    method = PromptMethod(_identity_probe(), OTSelection(scope="minibatch"), SplitLoss(schedule="sequential"))
    parts, stats = method.split(batch)
    assert [len(p["labels"]) for p in parts] == [18, 6]
    assert bool(parts[0]["clean"].all()) and not bool(parts[1]["clean"].any())
    assert stats["n_clean"] == 18 and stats["sel_hits"] == 18
    assert torch.equal(torch.sort(torch.cat([p["index"] for p in parts])).values, batch["index"])


def test_shuffled_batches_drop_only_a_short_last_batch() -> None:
    gen = torch.Generator().manual_seed(0)
    plan = shuffled_batches(10, 4, gen)
    assert [len(b) for b in plan] == [4, 4] and len(set(torch.cat(plan).tolist())) == 8
    assert [len(b) for b in shuffled_batches(3, 4, gen)] == [3]  # fewer samples than a batch: keep them


# ------------------------------------------------------------------------------------------------------ JoAPR


def test_sharpen_is_joapr_power_rule() -> None:
    p = torch.tensor([[0.6, 0.3, 0.1]])
    assert torch.allclose(sharpen(p, 2.0), p**2 / (p**2).sum())


def test_gaussian_crossing_is_where_the_densities_meet() -> None:
    stats = {"means": [0.2, 0.7], "variances": [0.01, 0.04]}
    x = _crossing(stats)
    assert 0.2 < x < 0.7

    def density(m: float, v: float) -> float:
        return math.exp(-((x - m) ** 2) / (2 * v)) / math.sqrt(2 * math.pi * v)

    assert density(0.2, 0.01) == pytest.approx(density(0.7, 0.04), rel=1e-9)
    assert _crossing({}) == float("-inf")


@pytest.mark.parametrize("alpha", [0.001, 0.4, 1.0, 4.0])
def test_joapr_mixup_weight_follows_the_folded_beta(alpha: float) -> None:
    # torch.distributions.Beta(0.001, 0.001) gave exactly 0.5 in ~24% of draws (its gammas underflow), so the
    # authors' barely-mixing mixup blended two samples half and half a quarter of the time
    from scipy import stats

    torch.manual_seed(0)
    draws = np.array([mixup_weight(alpha) for _ in range(2000)])
    assert ((draws >= 0.5) & (draws <= 1.0)).all()
    if alpha == 0.001:  # the mass sits within float rounding of 1: a KS test is moot, the tail is the check
        assert (draws == 0.5).mean() < 0.01 and (draws > 0.999).mean() > 0.98
    else:
        folded_cdf = lambda t: 2 * stats.beta.cdf(t, alpha, alpha) - 1  # noqa: E731  max(X, 1 - X), symmetric Beta
        assert stats.kstest(draws, folded_cdf).pvalue > 0.01


@pytest.mark.parametrize("alpha", ["0", "-0.5"])
def test_joapr_mixup_alpha_must_be_positive(alpha: str) -> None:
    with pytest.raises(ConfigError, match=r"method\.mixup_alpha.*expected a value > 0"):
        load_config(overrides=[f"method.mixup_alpha={alpha}"], method="joapr")


def test_joapr_warms_up_then_splits_and_its_state_roundtrips() -> None:
    batch = _planted(n=24, flipped=6)
    method = JoAPRMethod(_identity_probe(), 4, warmup_epochs=1, mixup_alpha=4.0)
    view = TrainView(batch["labels"], batch["true_labels"], lambda: batch["pooled"] @ torch.eye(4))
    assert method.before_epoch(0, view) == {}
    warm = method(batch)
    assert set(warm) == {"loss", "loss_clean"}
    stats = method.before_epoch(1, view)
    assert stats["sel_hits"] == stats["n_clean"] == 18  # the flipped labels have the high losses
    out = method(batch)
    assert out["loss"].requires_grad and 0.5 <= out["mixup_lambda"] <= 1.0
    state = method.extra_state()
    other = JoAPRMethod(_identity_probe(), 4)
    other.load_extra_state(state)
    assert other.threshold == method.threshold and all(
        torch.equal(a, b) for a, b in zip(other._losses, method._losses, strict=True)
    )


# ------------------------------------------------------------------------------------------ the config boundary


def _preset(method: str, *overrides: str):
    return load_config(overrides=list(overrides), method=method)


def test_method_spec_carries_the_visprompt_preset_and_ablation_overrides() -> None:
    spec = method_spec(_preset("visprompt", "prompt.gate=zero", "prompt.use_ffn=false", "method.loss.alpha=0.7"))
    assert spec.name == "visprompt" and isinstance(spec.selector, OTSelection)
    assert spec.selector.scope == "minibatch" and spec.selector.cost == "neglogp" and spec.selector.eps == 0.01
    assert spec.visprompt.gate == "zero" and spec.visprompt.use_ffn is False
    assert spec.loss == SplitLoss(clean="ce", noisy="gce", alpha=0.7, q=0.5)
    nl = method_spec(_preset("nlprompt"))
    assert nl.selector.scope == "full" and nl.selector.cost == "negp" and nl.loss.noisy == "mae"
    assert isinstance(method_spec(_preset("coop")).selector, NoSelection)


def test_registry_holds_every_method_of_the_paper() -> None:
    paper = {"zeroshot", "coop", "coop-gce", "cocoop", "nlprompt", "joapr", "visprompt"}
    assert set(METHODS.names()) == paper | {"visprompt-clean-only", "visprompt-faithful", "visprompt-plus"}


def test_visprompt_clean_only_differs_from_visprompt_only_in_the_noisy_loss() -> None:
    base, variant = method_spec(_preset("visprompt")), method_spec(_preset("visprompt-clean-only"))
    assert variant.loss == dataclasses.replace(base.loss, noisy="none")
    assert (variant.selector, variant.coop, variant.visprompt) == (base.selector, base.coop, base.visprompt)


def test_build_rejects_unknown_methods_and_misplaced_gmm() -> None:
    from visprompt.models.tiny import tiny_clip

    clip = tiny_clip("vit")
    with pytest.raises(UnknownNameError, match="did you mean 'coop'"):
        build_method(dataclasses.replace(method_spec(_preset("coop")), name="cop"), clip, ["a", "b"])
    with pytest.raises(ConfigError, match=r"^method.name: unknown method 'cop'; did you mean 'coop'"):
        _preset("coop", "method.name=cop")
    with pytest.raises(ConfigError, match="gmm"):
        build_method(method_spec(_preset("coop", "method.selection.kind=gmm")), clip, ["a", "b"])


def test_visprompt_with_the_gate_closed_trains_exactly_like_coop() -> None:
    """Gate 0 and no FFN: the cross-modal block adds nothing, so the steps equal CoOp's (same seed, same data)."""
    from visprompt.models.tiny import tiny_clip

    clip = tiny_clip("vit")
    gen = torch.Generator().manual_seed(1)
    batch = {
        "pooled": torch.randn(6, clip.embed_dim, generator=gen),
        "tokens": torch.randn(6, 17, clip.embed_dim, generator=gen),
        "labels": torch.tensor([0, 1, 2, 0, 1, 2]),
        "true_labels": torch.tensor([0, 1, 2, 0, 1, 2]),
        "index": torch.arange(6),
    }
    losses = {}
    for name, extra in (("coop", ()), ("visprompt", ("prompt.gate=zero", "prompt.use_ffn=false"))):
        cfg = _preset(name, "prompt.n_ctx=4", "method.selection.kind=none", "method.loss.noisy=none",
                      "method.loss.alpha=1.0", *extra)  # fmt: skip
        torch.manual_seed(0)
        method = build_method(method_spec(cfg), clip, ["red", "green", "blue"])
        opt = torch.optim.SGD(method.trainable_parameters(), lr=0.1)
        trace = []
        for _ in range(3):
            out = method(batch)
            opt.zero_grad()
            out["loss"].backward()
            opt.step()
            trace.append(float(out["loss"].detach()))
        losses[name] = trace
    assert losses["visprompt"] == pytest.approx(losses["coop"], abs=1e-5)
    assert losses["coop"][-1] < losses["coop"][0]
