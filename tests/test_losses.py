"""Losses: formulas against direct references, numerics under extreme and low-precision logits, the split loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from visprompt.errors import UnknownNameError
from visprompt.losses import (
    LOSSES,
    cross_entropy,
    gce,
    mae,
    per_sample_loss,
    sce,
    split_loss_terms,
)
from visprompt.methods.objective import SplitLoss


def _batch(b: int = 12, c: int = 7, scale: float = 3.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(b, c, generator=g), torch.randint(0, c, (b,), generator=g)


def _p_label(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return logits.double().softmax(1).gather(1, labels[:, None]).squeeze(1)  # (B,) reference in float64


def test_registry_holds_the_losses() -> None:
    assert LOSSES.names() == ["ce", "gce", "mae", "sce"]
    assert LOSSES.get("gce") is gce
    with pytest.raises(UnknownNameError, match="did you mean 'gce'"):
        LOSSES.get("gcee")


def test_cross_entropy_matches_torch() -> None:
    logits, labels = _batch()
    torch.testing.assert_close(
        cross_entropy(logits, labels, reduction="none"), F.cross_entropy(logits, labels, reduction="none")
    )
    torch.testing.assert_close(cross_entropy(logits, labels), F.cross_entropy(logits, labels))
    torch.testing.assert_close(
        cross_entropy(logits, labels, reduction="sum"), F.cross_entropy(logits, labels, reduction="sum")
    )


@pytest.mark.parametrize("q", [0.1, 0.5, 0.7, 1.0])
def test_gce_formula(q: float) -> None:
    logits, labels = _batch()
    expected = (1 - _p_label(logits, labels) ** q) / q
    torch.testing.assert_close(gce(logits, labels, q=q, reduction="none").double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gce(logits, labels, q=q).double(), expected.mean(), rtol=1e-5, atol=1e-6)


def test_gce_limits_and_mae_convention() -> None:
    logits, labels = _batch()
    # q -> 0 recovers CE; q = 1 is MAE = 1 - p_y, half the L1 distance |e_y - p|_1.
    torch.testing.assert_close(
        gce(logits, labels, q=1e-4, reduction="none"),
        cross_entropy(logits, labels, reduction="none"),
        rtol=1e-3,
        atol=1e-3,
    )
    torch.testing.assert_close(gce(logits, labels, q=1.0, reduction="none"), mae(logits, labels, reduction="none"))
    l1 = (F.one_hot(labels, logits.shape[1]).double() - logits.double().softmax(1)).abs().sum(1)
    torch.testing.assert_close(mae(logits, labels, reduction="none").double(), l1 / 2, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="q in"):
        gce(logits, labels, q=0.0)


def test_sce_matches_the_clamped_reverse_cross_entropy() -> None:
    logits, labels = _batch()
    p = logits.double().softmax(1)
    log_onehot = torch.log(F.one_hot(labels, logits.shape[1]).double()).clamp_min(-4.0)  # log 0 -> A = -4
    rce = -(p * log_onehot).sum(1)
    ce = F.cross_entropy(logits.double(), labels, reduction="none")
    for alpha, beta in ((0.1, 1.0), (6.0, 0.1)):
        got = sce(logits, labels, alpha=alpha, beta=beta, reduction="none").double()
        torch.testing.assert_close(got, alpha * ce + beta * rce, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["ce", "gce", "mae", "sce"])
def test_every_loss_is_safe_at_extreme_logits(name: str) -> None:
    """p_y underflows to 0 (and to 1): finite values, finite gradients, float32 output."""
    logits = torch.tensor([[0.0, 300.0, -50.0], [1e4, -1e4, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 2])
    loss = LOSSES.get(name)(logits, labels, reduction="none")
    assert loss.dtype == torch.float32 and torch.isfinite(loss).all() and (loss >= 0).all()
    loss.sum().backward()
    assert torch.isfinite(logits.grad).all()
    assert loss[1] < 1e-6  # p_y = 1: every loss vanishes


@pytest.mark.parametrize("name", ["ce", "gce", "mae", "sce"])
def test_every_loss_computes_in_float32_from_low_precision(name: str) -> None:
    fn = LOSSES.get(name)
    logits, labels = _batch(scale=20.0)
    half = logits.half()  # fp16 logits large enough that an fp16 softmax would overflow its exp
    out = fn(half, labels, reduction="none")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, fn(half.float(), labels, reduction="none"))
    layer = torch.nn.Linear(5, 7)
    x = torch.randn(12, 5)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        bf16_logits = layer(x)
        loss = fn(bf16_logits, labels)
    assert bf16_logits.dtype == torch.bfloat16 and loss.dtype == torch.float32 and torch.isfinite(loss)
    torch.testing.assert_close(loss, fn(bf16_logits.float(), labels))
    loss.backward()
    assert layer.weight.grad is not None and torch.isfinite(layer.weight.grad).all()


def test_bad_arguments_raise() -> None:
    logits, labels = _batch()
    with pytest.raises(ValueError, match="reduction"):
        cross_entropy(logits, labels, reduction="avg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected logits"):
        cross_entropy(logits, labels[:3])


def test_split_loss_is_the_batch_normalised_weighted_sum() -> None:
    logits, labels = _batch(b=10)
    clean = torch.tensor([True, False] * 5)
    ce = F.cross_entropy(logits, labels, reduction="none")
    g = gce(logits, labels, q=0.5, reduction="none")
    loss, parts = SplitLoss(clean="ce", noisy="gce", alpha=0.3, q=0.5)(logits, labels, clean)
    torch.testing.assert_close(loss, (0.3 * ce[clean].sum() + 0.7 * g[~clean].sum()) / 10)
    assert parts["loss_clean"] == pytest.approx(float(ce[clean].mean()), abs=1e-6)
    # split_loss_terms's subset-mean reading of the equation
    c, n = split_loss_terms(ce, g, clean, weights=(0.3, 0.7), normalize="subset")
    torch.testing.assert_close(c + n, 0.3 * ce[clean].mean() + 0.7 * g[~clean].mean())


def test_split_loss_with_an_empty_subset() -> None:
    logits, labels = _batch(b=8)
    logits.requires_grad_(True)
    ce = F.cross_entropy(logits, labels)
    all_clean = torch.ones(8, dtype=torch.bool)
    torch.testing.assert_close(SplitLoss(noisy="none", alpha=1.0)(logits, labels, all_clean)[0], ce)  # CoOp exactly
    torch.testing.assert_close(SplitLoss(alpha=0.5)(logits, labels, all_clean)[0], 0.5 * ce)
    loss, _ = SplitLoss(alpha=0.5)(logits, labels, ~all_clean)
    torch.testing.assert_close(loss, 0.5 * gce(logits, labels, q=0.5))
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.isfinite(grad).all()


def test_split_loss_options() -> None:
    logits, labels = _batch(b=6)
    clean = torch.tensor([True, True, False, False, False, True])
    with_mae, _ = SplitLoss(noisy="mae")(logits, labels, clean)
    expected = (
        0.5 * cross_entropy(logits, labels, reduction="none")[clean].sum()
        + 0.5 * mae(logits, labels, reduction="none")[~clean].sum()
    ) / 6
    torch.testing.assert_close(with_mae, expected)
    with pytest.raises(UnknownNameError):
        per_sample_loss("focal", logits, labels)


def test_per_sample_loss_looks_up_the_registry() -> None:
    logits, labels = _batch(b=6)
    torch.testing.assert_close(
        per_sample_loss("gce", logits, labels, q=0.3), gce(logits, labels, q=0.3, reduction="none")
    )
    torch.testing.assert_close(per_sample_loss("mae", logits, labels, q=0.3), mae(logits, labels, reduction="none"))
    sce_kwargs = {"alpha": 0.2, "beta": 2.0}
    expected = sce(logits, labels, reduction="none", **sce_kwargs)
    torch.testing.assert_close(per_sample_loss("sce", logits, labels, **sce_kwargs), expected)
    with pytest.raises(UnknownNameError):
        per_sample_loss("focal", logits, labels)


def test_split_loss_terms_weights_normalisation_and_absent_terms() -> None:
    per_clean, per_noisy = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([10.0, 20.0, 30.0, 40.0])
    mask = torch.tensor([True, False, True, False])
    clean, noisy = split_loss_terms(per_clean, per_noisy, mask, weights=(0.5, 2.0))
    assert float(clean) == pytest.approx(0.5 * 4 / 4) and float(noisy) == pytest.approx(2.0 * 60 / 4)
    clean, noisy = split_loss_terms(per_clean, per_noisy, mask, weights=(1.0, 1.0), normalize="subset")
    assert float(clean) == pytest.approx(2.0) and float(noisy) == pytest.approx(30.0)
    leaf = per_clean.clone().requires_grad_(True)
    clean, noisy = split_loss_terms(leaf, None, mask, weights=(1.0, 1.0))
    assert clean.requires_grad and not noisy.requires_grad and float(noisy) == 0.0
