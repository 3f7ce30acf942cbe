"""The authors' loop (``scope=epoch``), the alpha step-size normalisation and ``visprompt-plus``."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from visprompt.config import load_config
from visprompt.engine.loop import fit
from visprompt.engine.runtime import Precision
from visprompt.errors import ConfigError
from visprompt.methods import TrainView, build_method, method_spec
from visprompt.methods.objective import SplitLoss
from visprompt.methods.plus import RECIPE, PlusMethod
from visprompt.methods.prompt import PromptMethod
from visprompt.methods.selection import OTSelection, epoch_batches, rejection_concentration, split_per_batch


class DropoutProbe(nn.Module):
    """logits = dropout(pooled) @ W: its output depends on train/eval mode, as VisPrompt's block does."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.eye(classes))
        self.drop = nn.Dropout(0.5)

    def logits_from_features(self, pooled: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        return self.drop(pooled) @ self.weight

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [self.weight]

    def last_stats(self) -> dict[str, float]:
        return {}


def _planted(n: int = 32, classes: int = 4, flipped: int = 8) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    true = torch.arange(n) % classes
    pooled = F.one_hot(true, classes).float() * 8.0 + 0.1 * torch.randn(n, classes, generator=gen)
    labels = true.clone()
    labels[:flipped] = (true[:flipped] + 1) % classes
    return {"pooled": pooled, "labels": labels, "true_labels": true, "index": torch.arange(n)}


class _Data:
    """A TrainData over cached features whose view records the model's mode and weights when it is read."""

    def __init__(self, batch: dict[str, torch.Tensor]) -> None:
        self.batch = batch
        self.num_samples = int(batch["labels"].numel())
        self.encoding_s = 0.0
        self.reads: list[tuple[bool, torch.Tensor]] = []

    def batches(self, plan: list[torch.Tensor], seed: int) -> list[dict[str, torch.Tensor]]:
        return [{k: v[idx] for k, v in self.batch.items()} for idx in plan]

    def view(self, method: PromptMethod) -> TrainView:
        def logits() -> torch.Tensor:
            clf = method.classifier
            was = clf.training
            clf.eval()  # as engine.data's view does
            try:
                self.reads.append((clf.training, clf.weight.detach().clone()))
                with torch.no_grad():
                    return clf.logits_from_features(self.batch["pooled"])
            finally:
                clf.train(was)

        return TrainView(self.batch["labels"], self.batch["true_labels"], logits)


def test_epoch_batches_partition_every_sample_and_merge_a_single_leftover() -> None:
    batches = epoch_batches(33, 8, torch.Generator().manual_seed(0))
    assert [len(b) for b in batches] == [8, 8, 8, 9]
    assert sorted(torch.cat(batches).tolist()) == list(range(33))
    assert [len(b) for b in epoch_batches(34, 8, torch.Generator().manual_seed(0))] == [8, 8, 8, 8, 2]


def test_epoch_scope_splits_in_eval_mode_per_minibatch_before_the_epochs_updates() -> None:
    batch = _planted()
    probe = DropoutProbe(4)
    method = PromptMethod(probe, OTSelection(scope="epoch"), SplitLoss(schedule="sequential"))
    data = _Data(batch)
    seen: list[dict[str, torch.Tensor]] = []
    forward = method.forward

    def spy(part: dict[str, torch.Tensor]) -> dict[str, object]:
        seen.append(part)
        return forward(part)

    method.forward = spy  # type: ignore[method-assign]
    start = probe.weight.detach().clone()
    opt = torch.optim.SGD(probe.trainable_parameters(), lr=0.5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)
    records = fit(method, data, opt, sched, epochs=2, batch_size=8, precision=Precision("cpu", None), seed=3)
    # one read of the whole training set per epoch, in eval mode, the first before any update
    assert len(data.reads) == 2 and not any(training for training, _ in data.reads)
    assert torch.equal(data.reads[0][1], start) and not torch.equal(data.reads[1][1], start)
    # the split is one OT problem per mini-batch of a seeded shuffled pass (the loop's generator for the epoch)
    gen = torch.Generator().manual_seed((3 * 1_000_003 + 0 * 7919) % 2**63 + 2)
    expected = split_per_batch(
        torch.softmax(batch["pooled"] @ start, dim=-1), batch["labels"], epoch_batches(32, 8, gen)
    )
    n_clean = int(expected.clean.sum())
    assert records[0]["n_clean"] == n_clean and records[0]["sel_hits"] == int((expected.clean[8:]).sum())
    assert 16 <= n_clean < 24  # 8-sample batches of 4 classes are not balanced: the 1/C marginal rejects some
    # training batches are clean-only, then noisy-only: every clean batch before any noisy one
    epoch1 = seen[: len(seen) // 2]
    kinds = [bool(p["clean"].all()) for p in epoch1]
    assert all(bool(p["clean"].all()) or not bool(p["clean"].any()) for p in epoch1)
    assert kinds == sorted(kinds, reverse=True)
    assert kinds.count(True) == n_clean // 8 and kinds.count(False) == (32 - n_clean) // 8


def test_epoch_scope_differs_from_the_online_split_which_reads_train_mode_outputs() -> None:
    """The online split (scope minibatch) sees dropout; the epoch split does not (same weights, same batch)."""
    batch = _planted()
    torch.manual_seed(0)
    probe = DropoutProbe(4)
    online = PromptMethod(probe, OTSelection(scope="minibatch"), SplitLoss())
    online.train()
    assert online(batch)["sel_hits"] < 24  # dropout on the features corrupts some of the online split
    view = TrainView(
        batch["labels"],
        batch["true_labels"],
        lambda: batch["pooled"] @ probe.weight,
        32,
        torch.Generator().manual_seed(0),
    )  # fmt: skip  (one balanced batch: 8 per class)
    clean, _ = OTSelection(scope="epoch").select_full(view)
    assert int(clean.sum()) == 24 and not bool(clean[:8].any())


def test_epoch_scope_without_the_loops_batch_size_is_an_error() -> None:
    batch = _planted()
    view = TrainView(batch["labels"], batch["true_labels"], lambda: batch["pooled"])
    with pytest.raises(ValueError, match="batch_size and generator"):
        OTSelection(scope="epoch").epoch_split(view)


def test_alpha_halves_the_clean_step_and_normalize_alpha_restores_coops() -> None:
    logits = torch.randn(6, 3, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    clean = torch.ones(6, dtype=torch.bool)

    def grad(loss: SplitLoss) -> torch.Tensor:
        logits.grad = None
        loss(logits, labels, clean)[0].backward()
        return logits.grad.clone()

    coop = grad(SplitLoss(noisy="none", alpha=1.0))
    assert torch.allclose(grad(SplitLoss(alpha=0.5)), 0.5 * coop)
    assert torch.allclose(grad(SplitLoss(alpha=0.5, normalize_alpha=True)), coop)
    mixed = clean.clone()
    mixed[:2] = False  # the noisy part keeps its weight relative to the clean part: (1 - alpha) / alpha
    logits.grad = None
    SplitLoss(alpha=0.8, normalize_alpha=True)(logits, labels, mixed)[0].backward()
    g_norm = logits.grad.clone()
    logits.grad = None
    SplitLoss(alpha=0.8)(logits, labels, mixed)[0].backward()
    assert torch.allclose(g_norm, logits.grad / 0.8)
    with pytest.raises(ConfigError, match="normalize_alpha"):
        load_config([], ["method.loss.alpha=0", "method.loss.normalize_alpha=true"])


def _preset(name: str, *overrides: str):
    return load_config(overrides=list(overrides), method=name)


def test_visprompt_plus_preset_is_its_recipe() -> None:
    cfg = _preset("visprompt-plus")
    assert cfg.method.name == "visprompt-plus"
    for key, value in RECIPE.items():
        node: object = cfg
        for part in key.split("."):
            node = getattr(node, part)
        assert node == value, key
    faithful = method_spec(_preset("visprompt-faithful"))
    assert faithful.selector.scope == "epoch" and faithful.loss.schedule == "sequential"


def test_visprompt_plus_relabels_confident_noisy_samples_and_adds_the_zero_shot_prior() -> None:
    from visprompt.models.tiny import tiny_clip

    clip = tiny_clip("vit")
    names = ["red", "green", "blue"]
    plus = build_method(method_spec(_preset("visprompt-plus", "prompt.n_ctx=4")), clip, names)
    bare = build_method(method_spec(_preset("visprompt-plus", "prompt.n_ctx=4", "method.prior_weight=0")), clip, names)
    assert isinstance(plus, PlusMethod) and plus.noisy_weight == "kept-spread-classes"
    assert (plus.relabel, plus.relabel_by, plus.relabel_max_kept) == (True, "posterior", 0.3)
    assert plus.q_schedule == "noise"
    assert plus.prior_schedule == "noise" and plus.classifier.prior_weight == 0.25
    varied = build_method(
        method_spec(
            _preset(
                "visprompt-plus",
                "prompt.n_ctx=4",
                "method.noisy_weight=kept",
                "method.relabel=false",
                "method.prior_schedule=noise",
                "method.relabel_min_prob=0.7",
            )
        ),
        clip,
        names,
    )  # fmt: skip  (every field of the spec reaches the method)
    assert (varied.noisy_weight, varied.prior_schedule, varied.relabel, varied.relabel_min_prob) == (
        "kept", "noise", False, 0.7)  # fmt: skip
    gen = torch.Generator().manual_seed(1)
    pooled, tokens = torch.randn(6, clip.embed_dim, generator=gen), torch.randn(6, 17, clip.embed_dim, generator=gen)
    bare.load_state_dict(plus.state_dict(), strict=False)
    plus.eval()
    bare.eval()
    with torch.no_grad():
        zs = clip.logit_scale.exp() * F.normalize(pooled, dim=-1) @ plus.classifier.prior_embeddings.t()
        got = plus.classifier.logits_from_features(pooled, tokens)
        want = bare.classifier.logits_from_features(pooled, tokens) + 0.25 * zs  # the recipe's prior weight
    assert torch.allclose(got, want, atol=1e-4)

    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9],
                          [0.05, 0.9, 0.05], [0.4, 0.3, 0.3], [0.3, 0.4, 0.3]])  # fmt: skip
    view = TrainView(labels, labels.clone(), lambda: probs.log(), 6, torch.Generator().manual_seed(0))
    method = PlusMethod(plus.classifier, OTSelection(scope="full"), SplitLoss(noisy="ce"), relabel=True,
                        relabel_min_prob=0.5)  # fmt: skip
    stats = method.before_epoch(0, view)
    assert stats["n_clean"] == int(method._clean.sum())
    noisy = ~method._clean
    assert bool(noisy[3])  # sample 3 looks like class 1: the OT moves it there and it is relabelled
    assert int(method._target[3]) == 1 and bool(method._use[3])
    assert torch.equal(method._target[method._clean], labels[method._clean])
    unsure = noisy & (probs.gather(1, method._target[:, None]).squeeze(1) < 0.5)
    assert not bool(method._use[unsure].any())  # unsure re-assignments get no loss at all


def test_label_odds_and_the_relabelling_posterior_weigh_the_given_label_by_the_estimated_noise() -> None:
    from visprompt.methods.plus import label_odds, relabel_posterior

    assert label_odds(0.2, 0.0, 50) == pytest.approx(49 * 0.25)  # spread over 49 other classes: 12.25
    assert label_odds(0.2, 0.0, 10) == pytest.approx(9 * 0.25)
    assert label_odds(0.2, 0.5, 50) == pytest.approx(0.25) == label_odds(0.2, None, 50)  # a pair flip: k / (1 - k)
    assert label_odds(0.2, 0.175, 50) == pytest.approx(0.25 * (0.5 + 0.5 * 49))  # half way in SPREAD_RANGE
    assert label_odds(1.0, 0.0, 10) == float("inf")
    probs = torch.tensor([[0.02, 0.96, 0.02], [0.55, 0.4, 0.05], [0.9, 0.05, 0.05]])
    labels, pseudo = torch.tensor([0, 1, 0]), torch.tensor([1, 0, 0])
    post = relabel_posterior(probs, labels, pseudo, 3.0)
    assert post.tolist() == pytest.approx([0.96 / 1.04, 0.55 / 1.8, 0.0])  # p(pseudo) / (1 + 2 p(given)); agree: 0
    assert relabel_posterior(probs, labels, pseudo, 1.0)[:2].tolist() == pytest.approx([0.96, 0.55])  # odds 1: p


#: 8 samples of 3 classes; the full-set OT split rejects samples 3 and 4 (pseudo-labels 1 and 0)
_RELABEL_LABELS = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
_RELABEL_PROBS = torch.tensor([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9], [0.02, 0.96, 0.02],
                               [0.55, 0.4, 0.05], [0.3, 0.4, 0.3], [0.9, 0.05, 0.05], [0.05, 0.9, 0.05]])  # fmt: skip


def test_posterior_relabelling_moves_only_labels_the_noise_estimate_cannot_defend_and_keeps_the_rest() -> None:
    labels, probs = _RELABEL_LABELS, _RELABEL_PROBS
    got = {}
    for by in ("model", "posterior"):
        view = TrainView(labels, labels.clone(), lambda: probs.log(), 8, torch.Generator().manual_seed(0))
        method = PlusMethod(DropoutProbe(3), OTSelection(scope="full"), SplitLoss(noisy="ce"), relabel=True,
                            relabel_min_prob=0.5, relabel_by=by)  # fmt: skip
        got[by] = (method.before_epoch(0, view), method)
    stats, method = got["posterior"]
    assert (~method._clean).nonzero().flatten().tolist() == [3, 4]  # k = 6 / 8, two rejections: odds 3 (pair flip)
    assert stats["relabel_odds"] == pytest.approx(3.0)
    # sample 3: p(1) 0.96 against p(0) 0.02 -> 0.92, moved; sample 4: p(0) 0.55 against p(1) 0.4 -> 0.31, kept
    assert method._target.tolist() == [0, 1, 2, 1, 1, 2, 0, 1] and bool(method._use.all())
    assert stats["n_relabelled"] == 1
    stats, method = got["model"]  # the model's probability alone moves both
    assert method._target.tolist() == [0, 1, 2, 1, 0, 2, 0, 1] and stats["n_relabelled"] == 2
    cfg = _preset("visprompt-plus", "method.relabel=true", "method.relabel_by=posterior")
    assert (method_spec(cfg).relabel, method_spec(cfg).relabel_by) == (True, "posterior")
    with pytest.raises(ConfigError, match=r"method\.relabel_by.*needs method\.relabel=true.*leave it at 'model'"):
        _preset("visprompt-plus", "method.relabel=false", "method.relabel_by=posterior")
    with pytest.raises(ConfigError, match=r"method\.relabel_by"):
        _preset("visprompt-plus", "method.relabel=true", "method.relabel_by=bayes")


@pytest.mark.parametrize("by", ["model", "posterior"])
def test_relabel_max_kept_relabels_only_in_epochs_whose_split_rejects_enough_labels(by) -> None:
    labels, probs = _RELABEL_LABELS, _RELABEL_PROBS  # the split keeps 6 of 8: kept 0.75
    targets = {}
    for max_kept in (0.7, 0.75):
        view = TrainView(labels, labels.clone(), lambda: probs.log(), 8, torch.Generator().manual_seed(0))
        method = PlusMethod(DropoutProbe(3), OTSelection(scope="full"), SplitLoss(noisy="ce"), relabel=True,
                            relabel_min_prob=0.5, relabel_by=by, relabel_max_kept=max_kept)  # fmt: skip
        stats = method.before_epoch(0, view)
        targets[max_kept] = (method._target.tolist(), bool(method._use.all()), stats["n_relabelled"])
    assert targets[0.7] == (labels.tolist(), True, 0)  # kept 0.75 > 0.7: every sample on its given label
    assert targets[0.75][0][3] == 1 and targets[0.75][2] >= 1  # kept <= 0.75: sample 3 moves to its pseudo-label
    with pytest.raises(ValueError, match=r"relabel_max_kept must be a fraction in \[0, 1\], got 30"):
        PlusMethod(
            DropoutProbe(3),
            OTSelection(scope="full"),
            SplitLoss(),
            relabel=True,
            relabel_min_prob=0.5,
            relabel_max_kept=30,
        )  # fmt: skip  (a percentage where a fraction belongs)
    cfg = _preset("visprompt-plus", "method.relabel_max_kept=0.25")
    assert method_spec(cfg).relabel_max_kept == 0.25
    with pytest.raises(ConfigError, match=r"method\.relabel_max_kept.*needs method\.relabel=true.*leave it at 1.0"):
        _preset("visprompt-plus", "method.relabel=false", "method.relabel_max_kept=0.3")
    off = _preset("visprompt-plus", "method.relabel=false").method  # the recipe's relabelling fields go with it
    assert (off.relabel, off.relabel_by, off.relabel_min_prob, off.relabel_max_kept) == (False, "model", 0.5, 1.0)
    on = _preset("visprompt-plus", "method.relabel=true").method  # ... and stay where it is on
    assert (on.relabel_by, on.relabel_max_kept) == ("posterior", 0.3)
    with pytest.raises(ConfigError, match=r"method\.relabel_max_kept: expected a value in \[0, 1\], got 1.5"):
        _preset("visprompt-plus", "method.relabel=true", "method.relabel_max_kept=1.5")


class ZeroShotProbe(DropoutProbe):
    """A DropoutProbe with a frozen 'zero-shot' head: logits = pooled @ zs (no prior is added to its own logits)."""

    def __init__(self, zs: torch.Tensor) -> None:
        super().__init__(zs.shape[1])
        self.register_buffer("prior_embeddings", zs)

    def prior_logits(self, pooled: torch.Tensor) -> torch.Tensor:
        return pooled @ self.prior_embeddings


def test_zero_shot_agreement_moves_a_label_only_where_zero_shot_clip_names_the_pseudo_label_too() -> None:
    labels, probs = _RELABEL_LABELS, _RELABEL_PROBS
    pooled = torch.eye(3)[[0, 1, 2, 1, 0, 2, 0, 1]]  # zero-shot names class 1 for sample 3 ...
    moved = {}
    for zs_row in (1, 2):  # ... or, in the second case, class 2
        pooled[3] = torch.eye(3)[zs_row]
        view = TrainView(labels, labels.clone(), lambda: probs.log(), 8, torch.Generator().manual_seed(0),
                         pooled=lambda: pooled.clone())  # fmt: skip
        method = PlusMethod(ZeroShotProbe(torch.eye(3)), OTSelection(scope="full"), SplitLoss(noisy="ce"),
                            relabel=True, relabel_min_prob=0.5, relabel_by="posterior-zeroshot")  # fmt: skip
        stats = method.before_epoch(0, view)
        moved[zs_row] = (method._target.tolist(), stats["n_relabelled"])
    assert moved[1] == ([0, 1, 2, 1, 1, 2, 0, 1], 1)  # the posterior alone moves sample 3 to 1; zero-shot agrees
    assert moved[2] == (labels.tolist(), 0)  # zero-shot says 2: the label stays
    with pytest.raises(ValueError, match="needs zero-shot logits"):
        PlusMethod(DropoutProbe(3), OTSelection(scope="full"), SplitLoss(), relabel=True, relabel_min_prob=0.5,
                   relabel_by="posterior-zeroshot")  # fmt: skip


@pytest.mark.parametrize(
    ("by", "min_prob", "max_kept"),
    [("posterior", 1.0, 1.0), ("model", 0.5, 0.0)],  # nothing is sure enough / the epoch keeps too many labels
)
def test_relabelling_that_moves_nothing_trains_exactly_as_no_relabelling(by, min_prob, max_kept) -> None:
    batch = _planted()
    view = TrainView(batch["labels"], batch["true_labels"], lambda: batch["pooled"] @ torch.eye(4))
    losses = []
    for relabel in (False, True):
        torch.manual_seed(0)
        probe = DropoutProbe(4)
        method = PlusMethod(probe, OTSelection(scope="full"), SplitLoss(normalize_alpha=True), relabel=relabel,
                            relabel_min_prob=min_prob, relabel_by=by,
                            relabel_max_kept=max_kept if relabel else 1.0)  # fmt: skip
        stats = method.before_epoch(0, view)
        assert stats.get("n_relabelled", 0) == 0
        (parts,) = method.split({**batch, "index": torch.arange(32)})[0]
        torch.manual_seed(1)
        losses.append(method.forward(parts)["loss"])
    assert torch.equal(losses[0], losses[1])


@pytest.mark.parametrize(
    ("weight", "factor"),
    [
        ("kept", 0.75),
        ("kept-squared", 0.75**2),
        ("kept-odds", 1.0),
        ("kept-spread", 0.75**2),  # planted: a pair flip
        ("kept-spread-classes", 0.75**2),
    ],
)
def test_kept_noisy_weight_scales_the_noisy_part_by_the_splits_kept_fraction(weight, factor) -> None:
    logits = torch.randn(6, 3, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    clean = torch.tensor([True, True, False, False, False, False])
    full, _ = SplitLoss(alpha=0.5, normalize_alpha=True)(logits, labels, clean)
    clean_only, _ = SplitLoss(alpha=0.5, normalize_alpha=True, noisy="none")(logits, labels, clean)
    scaled, _ = SplitLoss(alpha=0.5, normalize_alpha=True, noisy_scale=0.25)(logits, labels, clean)
    assert torch.allclose(scaled - clean_only, 0.25 * (full - clean_only))

    probe = DropoutProbe(4)
    batch = _planted()
    method = PlusMethod(probe, OTSelection(scope="full"), SplitLoss(normalize_alpha=True), relabel=False,
                        relabel_min_prob=0.5, noisy_weight=weight)  # fmt: skip
    view = TrainView(batch["labels"], batch["true_labels"], lambda: batch["pooled"] @ torch.eye(4))
    stats = method.before_epoch(0, view)
    assert stats["n_clean"] == 24  # the planted split keeps 24 of 32
    assert stats["noisy_scale"] == pytest.approx(factor) and method.loss.noisy_scale == pytest.approx(factor)
    assert method.base_loss.noisy_scale == 1.0  # the preset's loss is kept; each epoch sets its own scale


def test_kept_odds_weight_is_full_while_the_split_keeps_half_and_the_squared_odds_below() -> None:
    from visprompt.methods.plus import NOISY_WEIGHTS

    def odds(k: float) -> float:
        return NOISY_WEIGHTS["kept-odds"](k, None, 10)

    assert [odds(k) for k in (1.0, 0.9, 0.5)] == [1.0, 1.0, 1.0]
    assert odds(0.25) == pytest.approx((0.25 / 0.75) ** 2) and odds(0.0) == 0.0
    assert odds(0.25) > NOISY_WEIGHTS["kept-squared"](0.25, None, 10)  # below half it falls from 1, not from 0.25
    assert odds(0.499) == pytest.approx(1.0, abs=0.01)  # continuous at one half


@pytest.mark.parametrize(("schedule", "power"), [("noise", 1), ("noise-squared", 2)])
def test_noise_scheduled_prior_weight_follows_the_split_and_travels_with_the_checkpoint(schedule, power) -> None:
    from visprompt.models.tiny import tiny_clip

    clip = tiny_clip("vit")
    cfg = _preset("visprompt-plus", "prompt.n_ctx=4", f"method.prior_schedule={schedule}", "method.prior_weight=2.0")
    method = build_method(method_spec(cfg), clip, ["red", "green", "blue"])
    batch = _planted(n=12, classes=3, flipped=3)
    view = TrainView(batch["labels"], batch["true_labels"], lambda: batch["pooled"][:, :3] @ torch.eye(3))
    stats = method.before_epoch(0, view)
    kept = stats["n_clean"] / 12
    assert method.classifier.prior_weight == pytest.approx(2.0 * (1 - kept) ** power) and 0 < kept < 1
    saved = {k: v.detach().clone() for k, v in method.named_trainable_parameters().items()}
    assert "classifier.prior_scale" in saved
    fresh = build_method(method_spec(cfg), clip, ["red", "green", "blue"])
    assert fresh.classifier.prior_weight == 2.0
    with torch.no_grad():  # what engine.build.load_trainable does for eval and predict
        for name, p in fresh.named_trainable_parameters().items():
            p.copy_(saved[name])
    assert fresh.classifier.prior_weight == pytest.approx(method.classifier.prior_weight)
    assert "classifier.prior_scale" not in {n for n, _ in fresh.classifier.named_trainable_parameters()}


def test_the_gate_learning_rate_scale_puts_the_gate_in_its_own_group() -> None:
    from visprompt.models.tiny import tiny_clip

    clip = tiny_clip("vit")
    names = ["red", "green", "blue"]
    plain = build_method(method_spec(_preset("visprompt", "prompt.n_ctx=4")), clip, names)
    assert [g["lr_scale"] for g in plain.param_groups()] == [1.0]
    scaled = build_method(method_spec(_preset("visprompt-plus", "prompt.n_ctx=4", "prompt.gate_lr_scale=10")), clip,
                          names)  # fmt: skip
    groups = scaled.param_groups()
    assert [g["lr_scale"] for g in groups] == [1.0, 10.0]
    gate = scaled.classifier.learner.film.gate_proj
    assert {id(p) for p in groups[1]["params"]} == {id(gate.weight), id(gate.bias)}
    every = {id(p) for p in scaled.trainable_parameters()}
    assert {id(p) for g in groups for p in g["params"]} == every and sum(len(g["params"]) for g in groups) == len(every)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["method=coop", "prompt.gate_lr_scale=10"], "prompt.gate_lr_scale"),
        (["prompt.gate=off", "prompt.gate_lr_scale=10"], "prompt.gate_lr_scale"),
        (["prompt.visual_guidance=false", "prompt.gate_lr_scale=10"], "prompt.gate_lr_scale"),
        (["prompt.gate_lr_scale=0"], "prompt.gate_lr_scale"),
        (["method=visprompt-plus", "method.gate_schedule=kept", "prompt.gate=zero"], "method.gate_schedule"),
        (["method=visprompt-plus", "method.gate_schedule=kept", "prompt.visual_guidance=false"],
         "method.gate_schedule"),
        (["method=visprompt", "method.gate_schedule=kept"], "method.gate_schedule"),
    ],
)  # fmt: skip
def test_gate_options_are_refused_where_there_is_no_learned_gate(overrides: list[str], field: str) -> None:
    method = next((o.split("=")[1] for o in overrides if o.startswith("method=")), "visprompt")
    rest = [o for o in overrides if not o.startswith("method=")]
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(overrides=rest, method=method)


@pytest.mark.parametrize(("schedule", "power"), [("kept", 1), ("kept-squared", 2)])
def test_kept_scheduled_gate_scales_the_injection_and_travels_with_the_checkpoint(schedule, power) -> None:
    from visprompt.models.tiny import tiny_clip

    clip = tiny_clip("vit")
    names = ["red", "green", "blue"]
    cfg = _preset("visprompt-plus", "prompt.n_ctx=4", f"method.gate_schedule={schedule}")
    method = build_method(method_spec(cfg), clip, names)
    film = method.classifier.learner.film
    gen = torch.Generator().manual_seed(3)
    ctx, vis = torch.randn(4, clip.width, generator=gen), torch.randn(2, 5, clip.embed_dim, generator=gen)
    film.eval()
    with torch.no_grad():
        full = film(ctx, vis)
    batch = _planted(n=12, classes=3, flipped=3)
    view = TrainView(batch["labels"], batch["true_labels"], lambda: batch["pooled"][:, :3] @ torch.eye(3))
    stats = method.before_epoch(0, view)
    kept = stats["n_clean"] / 12
    assert 0 < kept < 1 and stats["gate_scale"] == pytest.approx(kept**power)
    with torch.no_grad():
        scaled = film(ctx, vis)
        film.ffn, ffn = None, film.ffn  # without the FFN the injection is exactly ctx + scale x g x delta
        try:
            film.gate_scale.fill_(1.0)
            one = film(ctx, vis) - ctx
            film.gate_scale.fill_(kept**power)
            assert torch.allclose(film(ctx, vis) - ctx, kept**power * one, atol=1e-5)
        finally:
            film.ffn = ffn
    assert not torch.allclose(scaled, full)
    saved = {k: v.detach().clone() for k, v in method.named_trainable_parameters().items()}
    assert float(saved["learner.film.gate_scale"]) == pytest.approx(kept**power)
    fresh = build_method(method_spec(cfg), clip, names)
    with torch.no_grad():  # what engine.build.load_trainable does for eval and predict
        for name, p in fresh.named_trainable_parameters().items():
            p.copy_(saved[name])
    assert float(fresh.classifier.learner.film.gate_scale) == pytest.approx(kept**power)
    recipe = build_method(method_spec(_preset("visprompt-plus", "prompt.n_ctx=4")), clip, names)
    assert "learner.film.gate_scale" not in recipe.named_trainable_parameters()  # old checkpoints still load
    assert "gate_scale" not in recipe.before_epoch(0, view)


def test_split_loss_trains_the_noisy_rows_towards_soft_targets_when_given() -> None:
    gen = torch.Generator().manual_seed(2)
    logits, labels = torch.randn(8, 5, generator=gen), torch.randint(5, (8,), generator=gen)
    clean = torch.tensor([True, False] * 4)
    loss = SplitLoss(noisy="ce", normalize_alpha=True, noisy_scale=0.5)
    given, _ = loss(logits, labels, clean)
    one_hot, _ = loss(logits, labels, clean, noisy_target=F.one_hot(labels, 5).float())
    assert torch.allclose(given, one_hot, atol=1e-6)  # a one-hot target is the given label's cross-entropy
    target = torch.softmax(torch.randn(8, 5, generator=gen), dim=-1)
    soft, parts = loss(logits, labels, clean, noisy_target=target)
    clean_only, _ = SplitLoss(noisy="none", normalize_alpha=True)(logits, labels, clean)
    per = -(target * logits.log_softmax(-1)).sum(-1)
    assert torch.allclose(soft - clean_only, 0.5 * per[~clean].sum() / 8, atol=1e-6)
    assert parts["loss_noisy"] == pytest.approx(float(per[~clean].mean()), rel=1e-5)


def test_zeroshot_noisy_target_trains_the_rejected_samples_towards_zero_shot_clip() -> None:
    from visprompt.models.tiny import tiny_clip

    clip = tiny_clip("vit")
    names = ["red", "green", "blue"]
    cfg = _preset(
        "visprompt-plus",
        "prompt.n_ctx=4",
        "method.noisy_target=zeroshot",
        "method.prior_weight=0",
        "method.relabel=false",
    )
    method = build_method(method_spec(cfg), clip, names)
    assert method.noisy_target == "zeroshot"  # the prior's embeddings are built even at prior weight 0
    gen = torch.Generator().manual_seed(3)
    n = 12
    pooled, tokens = torch.randn(n, clip.embed_dim, generator=gen), torch.randn(n, 17, clip.embed_dim, generator=gen)
    labels = torch.arange(n) % 3
    logits = torch.where(torch.arange(n)[:, None] < 4, -F.one_hot(labels, 3).float(), F.one_hot(labels, 3).float())
    view = TrainView(labels, labels.clone(), lambda: 5 * logits, pooled=lambda: pooled)
    method.before_epoch(0, view)
    assert not bool(method._clean[:4].any())  # samples 0-3 disagree with their labels: the split rejects them
    with torch.no_grad():
        zs = (clip.logit_scale.exp() * F.normalize(pooled, dim=-1) @ method.classifier.prior_embeddings.t()).softmax(-1)
    assert torch.allclose(method._zs_probs, zs, atol=1e-5)
    batch = {"pooled": pooled, "tokens": tokens, "labels": labels, "true_labels": labels, "index": torch.arange(n)}
    (part,), _ = method.split(batch)
    method.eval()
    out = method(part)
    with torch.no_grad():
        want, _ = method.loss(method.classifier.logits_from_features(pooled, tokens), labels, method._clean, zs)
        given, _ = method.loss(method.classifier.logits_from_features(pooled, tokens), labels, method._clean)
    assert torch.allclose(out["loss"], want, atol=1e-5) and not torch.allclose(want, given, atol=1e-3)
    with pytest.raises(ValueError, match="frozen features"):
        build_method(method_spec(cfg), clip, names).before_epoch(0, TrainView(labels, labels.clone(), lambda: logits))
    with pytest.raises(ConfigError, match=r"method\.noisy_target"):
        _preset("visprompt-plus", "method.noisy_target=zeroshot", "method.relabel=true")


def test_mixed_noisy_target_weighs_labels_by_kept_and_zero_shot_by_the_noise_estimate() -> None:
    gen = torch.Generator().manual_seed(4)
    logits, labels = torch.randn(8, 5, generator=gen), torch.randint(5, (8,), generator=gen)
    clean, target = torch.tensor([True, False] * 4), torch.softmax(torch.randn(8, 5, generator=gen), dim=-1)
    mixed, _ = SplitLoss(noisy="gce", normalize_alpha=True, noisy_mix=0.3)(logits, labels, clean, target)
    given, _ = SplitLoss(noisy="gce", normalize_alpha=True)(logits, labels, clean)
    soft, _ = SplitLoss(noisy="gce", normalize_alpha=True)(logits, labels, clean, target)
    clean_only, _ = SplitLoss(noisy="none", normalize_alpha=True)(logits, labels, clean)
    assert torch.allclose(mixed - clean_only, 0.7 * (given - clean_only) + 0.3 * (soft - clean_only), atol=1e-6)

    from visprompt.models.tiny import tiny_clip

    clip = tiny_clip("vit")
    cfg = _preset(
        "visprompt-plus",
        "prompt.n_ctx=4",
        "method.noisy_target=mixed",
        "method.noisy_weight=fixed",
        "method.relabel=false",
    )
    method = build_method(method_spec(cfg), clip, ["red", "green", "blue"])
    batch = _planted(n=12, classes=3, flipped=3)
    pooled = torch.randn(12, clip.embed_dim, generator=gen)
    view = TrainView(batch["labels"], batch["true_labels"], lambda: batch["pooled"][:, :3], pooled=lambda: pooled)
    stats = method.before_epoch(0, view)
    kept = stats["n_clean"] / 12
    assert 0 < kept < 1 and method.loss.noisy_mix == pytest.approx(1 - kept) and method.loss.noisy_scale == 1.0
    assert stats["noisy_mix"] == pytest.approx(1 - kept) and method.base_loss.noisy_mix == 1.0


def test_noise_q_schedule_sets_the_noisy_parts_gce_q_to_one_minus_kept() -> None:
    batch = _planted()
    method = PlusMethod(DropoutProbe(4), OTSelection(scope="full"), SplitLoss(normalize_alpha=True), relabel=False,
                        relabel_min_prob=0.5, q_schedule="noise")  # fmt: skip
    view = TrainView(batch["labels"], batch["true_labels"], lambda: batch["pooled"] @ torch.eye(4))
    stats = method.before_epoch(0, view)
    assert stats["n_clean"] == 24 and method.loss.q == pytest.approx(0.25) and stats["noisy_q"] == pytest.approx(0.25)
    assert method.base_loss.q == 0.5  # the preset's q is kept; each epoch sets its own
    logits, labels = torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1])
    clean = torch.tensor([True, False, False, True, False])
    at_quarter, at_half = (
        method.loss(logits, labels, clean)[0],
        SplitLoss(normalize_alpha=True)(logits, labels, clean)[0],
    )
    assert not torch.allclose(at_quarter, at_half)  # the epoch's q reaches the loss
    for loss in (SplitLoss(noisy="mae"), SplitLoss(clean="gce")):
        with pytest.raises(ValueError, match="q_schedule"):
            PlusMethod(DropoutProbe(4), OTSelection(scope="full"), loss, relabel=False, relabel_min_prob=0.5,
                       q_schedule="noise")  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["method=visprompt-plus", "method.q_schedule=noise", "method.loss.noisy=mae"], "method.q_schedule"),
        (["method=visprompt-plus", "method.q_schedule=noise", "method.loss.clean=gce"], "method.q_schedule"),
        (["method=visprompt", "method.q_schedule=noise"], "method.q_schedule"),
    ],
)
def test_q_schedule_is_refused_where_q_is_not_the_noisy_parts_alone(overrides: list[str], field: str) -> None:
    method = next(o.split("=")[1] for o in overrides if o.startswith("method="))
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(overrides=[o for o in overrides if not o.startswith("method=")], method=method)
    load_config(overrides=["method.q_schedule=noise"], method="visprompt-plus")  # the recipe's losses accept it


def test_rejection_concentration_is_zero_for_spread_given_labels_and_one_for_a_pair_flip() -> None:
    classes = 5
    pseudo = torch.arange(classes).repeat_interleave(classes - 1)  # every pseudo-label p, 4 rejections each
    others = torch.tensor([g for p in range(classes) for g in range(classes) if g != p])  # each other label once
    assert rejection_concentration(pseudo, others, classes) == pytest.approx(-1 / 3)  # spread, no repeats
    flipped = (pseudo + 1) % classes
    assert rejection_concentration(pseudo, flipped, classes) == pytest.approx(1.0)
    # a label equal to its pseudo-label is no rejection; with at most one rejection per pseudo-label, nothing to measure
    assert rejection_concentration(pseudo, pseudo, classes) is None
    one_each = torch.arange(pseudo.numel()) % (classes - 1) == 0
    assert rejection_concentration(pseudo, torch.where(one_each, flipped, pseudo), classes) is None
    # half the rejections of each pseudo-label on one label, the rest spread: strictly between the two
    mixed = torch.where(torch.arange(pseudo.numel()) % 2 == 0, flipped, others)
    assert 0.0 < rejection_concentration(pseudo, mixed, classes) < 1.0


def test_a_curriculum_budget_does_not_make_symmetric_noise_look_like_a_pair_flip() -> None:
    # the samples a budget < 1 leaves out of the clean set while their label is their pseudo-label point nowhere
    # else: counted as rejections, each added a repeat (label = pseudo-label), 0.34 here (was), near the 0.30 at
    # which visprompt-plus reads a pair flip
    classes, gen = 10, torch.Generator().manual_seed(0)
    true = torch.arange(classes).repeat_interleave(40)
    labels = true.clone()
    noisy = torch.randperm(true.numel(), generator=gen)[: true.numel() // 4]
    labels[noisy] = (true[noisy] + torch.randint(1, classes, (noisy.numel(),), generator=gen)) % classes  # 25% sym
    logits = F.one_hot(true, classes).float() * 3.0 + torch.randn(true.numel(), classes, generator=gen)
    view = TrainView(labels, true, lambda: logits)
    conc = {}
    for budget in (1.0, 0.5):
        method = PlusMethod(DropoutProbe(classes), OTSelection(scope="full", budget=budget), SplitLoss(),
                            relabel=False, relabel_min_prob=0.5)  # fmt: skip
        stats = method.before_epoch(0, view)
        conc[budget] = stats["reject_conc"]
        assert stats["n_clean"] <= budget * true.numel()
    assert abs(conc[1.0]) < 0.05 and conc[0.5] == conc[1.0]


def test_visprompt_plus_logs_how_concentrated_its_rejections_are() -> None:
    batch = _planted()  # 8 of 32 labels flipped y -> y + 1: the split rejects them, each on its pseudo-label's pair
    method = PlusMethod(DropoutProbe(4), OTSelection(scope="full"), SplitLoss(normalize_alpha=True), relabel=False,
                        relabel_min_prob=0.5)  # fmt: skip
    view = TrainView(batch["labels"], batch["true_labels"], lambda: batch["pooled"] @ torch.eye(4))
    stats = method.before_epoch(0, view)
    assert stats["n_clean"] == 24 and stats["reject_conc"] == pytest.approx(1.0)


def test_kept_spread_weight_is_kept_odds_for_spread_rejections_and_kept_squared_for_a_pair_flip() -> None:
    from visprompt.methods.plus import NOISY_WEIGHTS, SPREAD_RANGE

    names = ("kept-spread", "kept-odds", "kept-squared")
    spread, odds, squared = (partial(NOISY_WEIGHTS[name], c=10) for name in names)
    low, high = SPREAD_RANGE
    for k in (0.9, 0.6, 0.4, 0.2):
        assert spread(k, low) == pytest.approx(odds(k, None)) and spread(k, -0.2) == pytest.approx(odds(k, None))
        assert spread(k, high) == pytest.approx(squared(k, None)) and spread(k, 0.9) == pytest.approx(squared(k, None))
        assert spread(k, None) == pytest.approx(squared(k, None))  # unmeasured: the cautious weight
    middle = (low + high) / 2
    assert spread(0.4, middle) == pytest.approx((odds(0.4, None) + squared(0.4, None)) / 2)


def test_kept_spread_classes_weighs_spread_rejections_by_their_odds_against_one_other_class() -> None:
    from visprompt.methods.plus import NOISY_WEIGHTS

    classes, spread, squared = (NOISY_WEIGHTS[n] for n in ("kept-spread-classes", "kept-spread", "kept-squared"))
    for k in (0.0, 0.1, 0.2, 0.4, 0.5, 0.7, 1.0):
        for conc in (None, -0.1, 0.0, 0.1, 0.2, 0.5):
            assert classes(k, conc, 10) == spread(k, conc, 10)  # kept-spread at 10 classes, to the last bit
            assert classes(k, 0.5, 50) == squared(k, 0.5, 50)  # a pair flip: kept-squared at any class count
    # 75% symmetric noise (k ~ 0.2): each rejected label is 2.25x as likely right as one other class at C = 10,
    # 12.25x at C = 50, where the spread rejections get full weight; 9 classes weigh them a little less than 10
    assert classes(0.2, 0.0, 10) == pytest.approx((0.2 / 0.8) ** 2)
    assert classes(0.2, 0.0, 50) == 1.0 and classes(0.2, 0.0, 9) == pytest.approx((0.25 * 8 / 9) ** 2)
    assert classes(0.1, 0.0, 50) == pytest.approx((0.1 / 0.9 * 49 / 9) ** 2)  # below the ratio 9: the square
    assert classes(0.2, 0.3, 50) == pytest.approx(0.04)  # concentrated rejections: kept-squared
