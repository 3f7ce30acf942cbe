"""Prompt learners and classifiers: reductions that must hold exactly (VisPrompt with g = 0 is CoOp, CoOp from
"a photo of a" is zero-shot CLIP), the FiLM options, and forward/backward on both towers for every learner."""

from __future__ import annotations

import pytest
import torch

from visprompt.errors import ConfigError
from visprompt.models.classifier import PromptClassifier, ZeroShotClassifier
from visprompt.models.cocoop import CoCoOpPromptLearner
from visprompt.models.coop import CoOpPromptLearner
from visprompt.models.templates import templates_for
from visprompt.models.tiny import tiny_clip, tiny_image_batch
from visprompt.models.visprompt import VisPromptLearner

NAMES = ["dog", "golden_retriever", "cat", "sea turtle"]


@pytest.fixture(scope="module", params=["vit", "resnet"])
def clip(request: pytest.FixtureRequest):
    return tiny_clip(request.param, seed=5)


@pytest.fixture(scope="module")
def images(clip):
    return tiny_image_batch(clip, 3, seed=1)


@pytest.mark.parametrize(
    ("position", "sentence"),
    [("end", "a photo of a {}."), ("middle", "a photo {} of a."), ("front", "{} a photo of a.")],
)
def test_coop_from_a_phrase_is_zero_shot_clip(clip, images, position: str, sentence: str) -> None:
    learner = CoOpPromptLearner(clip, NAMES, ctx_init="a photo of a", class_token_position=position)
    assert learner.context.n_ctx == 4
    coop = PromptClassifier(clip, learner).eval()
    zero_shot = ZeroShotClassifier(clip, NAMES, [sentence])
    assert (coop(images) - zero_shot(images)).abs().max() < 1e-4  # logits scaled by exp(logit_scale) = 14.3


@pytest.mark.parametrize("csc", [False, True])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_visprompt_with_zero_gate_and_no_ffn_is_coop(clip, images, csc: bool, mode: str) -> None:
    torch.manual_seed(0)
    coop = CoOpPromptLearner(clip, NAMES, csc=csc)
    vis = VisPromptLearner(clip, NAMES, csc=csc, gate="zero", use_ffn=False)
    with torch.no_grad():
        vis.context.ctx.copy_(coop.context.ctx)
    a, b = PromptClassifier(clip, coop), PromptClassifier(clip, vis)
    a.train(mode == "train")
    b.train(mode == "train")
    pooled, tokens = clip.encode_image(images)
    ctx_b = vis.conditioned_context(pooled, tokens)
    assert torch.equal(ctx_b, coop.context.ctx.expand_as(ctx_b))  # the block is exactly the identity
    assert (a(images) - b(images)).abs().max() < 1e-5


@pytest.mark.parametrize("film_mode", ["tokenwise", "global"])
def test_identity_init_starts_as_the_exact_identity_and_still_learns(clip, images, film_mode: str) -> None:
    torch.manual_seed(0)
    vis = VisPromptLearner(clip, NAMES, init="identity", film_mode=film_mode)
    pooled, tokens = clip.encode_image(images)
    ctx_b = vis.conditioned_context(pooled, tokens)
    assert torch.equal(ctx_b, vis.context.ctx.expand_as(ctx_b))  # ctx_b = ctx, not merely close to it
    ctx_b.square().sum().backward()
    assert vis.film.film_gamma.weight.grad.abs().max() > 0 and vis.film.film_beta.weight.grad.abs().max() > 0


def test_global_visual_token_gets_all_the_attention(clip, images) -> None:
    vis = VisPromptLearner(clip, NAMES, vis_tokens="global")
    pooled, tokens = clip.encode_image(images)
    weights = vis.film.attention_weights(vis.context.ctx, vis.visual_input(pooled, tokens))
    assert weights.shape == (3, 8, 16, 1)
    assert torch.equal(weights, torch.ones_like(weights))
    patch = VisPromptLearner(clip, NAMES, vis_tokens="patch")
    weights = patch.film.attention_weights(patch.context.ctx, patch.visual_input(pooled, tokens))
    assert weights.shape == (3, 8, 16, tokens.shape[1])
    assert torch.allclose(weights.sum(-1), torch.ones(()))
    assert not torch.allclose(weights, weights[..., :1].expand_as(weights))


LEARNERS = {
    "coop": lambda c: CoOpPromptLearner(c, NAMES, n_ctx=4),
    "coop-csc-middle": lambda c: CoOpPromptLearner(c, NAMES, n_ctx=4, csc=True, class_token_position="middle"),
    "coop-front": lambda c: CoOpPromptLearner(c, NAMES, n_ctx=4, class_token_position="front"),
    "cocoop": lambda c: CoCoOpPromptLearner(c, NAMES),
    "visprompt": lambda c: VisPromptLearner(c, NAMES),
    "visprompt-global-globalfilm": lambda c: VisPromptLearner(c, NAMES, vis_tokens="global", film_mode="global"),
    "visprompt-noffn-gateoff": lambda c: VisPromptLearner(c, NAMES, use_ffn=False, gate="off"),
    "visprompt-identity-csc-front": lambda c: VisPromptLearner(
        c, NAMES, init="identity", csc=True, class_token_position="front"
    ),
    "visprompt-noguidance": lambda c: VisPromptLearner(c, NAMES, visual_guidance=False),
}


@pytest.mark.parametrize("name", list(LEARNERS))
def test_every_learner_runs_forward_and_backward(clip, images, name: str) -> None:
    torch.manual_seed(0)
    clf = PromptClassifier(clip, LEARNERS[name](clip)).train()
    logits = clf(images)
    assert logits.shape == (3, len(NAMES)) and torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    params = clf.trainable_parameters()
    assert params and all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
    assert clf.learner.context.ctx.grad.abs().max() > 0
    assert all(p.grad is None for p in clip.parameters())
    assert clf.uses_tokens == (name in ("visprompt", "visprompt-noffn-gateoff", "visprompt-identity-csc-front"))
    summary = clf.summary()
    assert summary["trainable_total"] == sum(p.numel() for p in clf.learner.parameters())
    assert sum(summary["trainable"].values()) == summary["trainable_total"]
    pooled, tokens = clip.encode_image(images)
    clf.eval()
    with torch.no_grad():
        cached = clf.logits_from_features(pooled, tokens if clf.uses_tokens else None)  # what the engine caches
        assert torch.allclose(cached, clf(images), atol=1e-5)


def test_gate_modes_and_logged_statistics(clip, images) -> None:
    learned = PromptClassifier(clip, VisPromptLearner(clip, NAMES))
    assert learned.last_stats() == {}
    learned(images)
    gate = learned.learner.film.last_gate
    assert gate.shape == (3, 16) and ((gate > 0) & (gate < 1)).all()
    assert set(learned.last_stats()) == {"gate_mean", "gate_std"}
    off = PromptClassifier(clip, VisPromptLearner(clip, NAMES, gate="off"))
    off(images)
    assert torch.equal(off.learner.film.last_gate, torch.ones(3, 16))
    assert PromptClassifier(clip, CoOpPromptLearner(clip, NAMES)).last_stats() == {}


def test_identity_initialisation_gate_starts_small(clip, images) -> None:
    vis = VisPromptLearner(clip, NAMES, init="identity", dropout=0.0)
    pooled, tokens = clip.encode_image(images)
    vis.conditioned_context(pooled, tokens)
    gate = vis.film.last_gate
    assert torch.allclose(gate, torch.full_like(gate, torch.sigmoid(torch.tensor(-4.0)).item()))


def test_film_modes_differ(clip, images) -> None:
    pooled, tokens = clip.encode_image(images)
    torch.manual_seed(1)
    token = VisPromptLearner(clip, NAMES, dropout=0.0)
    torch.manual_seed(1)
    glob = VisPromptLearner(clip, NAMES, dropout=0.0, film_mode="global")
    assert not torch.allclose(token.conditioned_context(pooled, tokens), glob.conditioned_context(pooled, tokens))


def test_class_specific_context_only_moves_its_own_class(clip, images) -> None:
    clf = PromptClassifier(clip, CoOpPromptLearner(clip, NAMES, csc=True, class_token_position="middle")).eval()
    with torch.no_grad():
        before = clf(images)
        clf.learner.context.ctx[2] += torch.randn_like(clf.learner.context.ctx[2])  # (not a constant: LN removes it)
        after = clf(images)
    changed = (after - before).abs().amax(dim=0) > 1e-4
    assert changed.tolist() == [False, False, True, False]


def test_cocoop_without_shift_is_coop(clip, images) -> None:
    cocoop = CoCoOpPromptLearner(clip, NAMES, n_ctx=4, ctx_init="")
    coop = CoOpPromptLearner(clip, NAMES, n_ctx=4)
    with torch.no_grad():
        cocoop.meta_net.linear2.weight.zero_()
        cocoop.meta_net.linear2.bias.zero_()
        coop.context.ctx.copy_(cocoop.context.ctx)
    a = PromptClassifier(clip, cocoop).eval()
    b = PromptClassifier(clip, coop).eval()
    assert (a(images) - b(images)).abs().max() < 1e-5


def test_cocoops_recipe_records_the_context_length_its_phrase_trains(clip) -> None:
    from visprompt.config import load_config

    prompt = load_config(method="cocoop").prompt  # config.yaml's n_ctx is what trains: the phrase's token count
    learner = CoCoOpPromptLearner(clip, NAMES, n_ctx=prompt.n_ctx, ctx_init=prompt.ctx_init)
    assert learner.context.n_ctx == prompt.n_ctx == 4 and learner.context.ctx.shape[0] == 4


def test_text_features_are_cached_until_the_context_changes(clip, images) -> None:
    clf = PromptClassifier(clip, CoOpPromptLearner(clip, NAMES)).eval()
    with torch.no_grad():
        first = clf.text_features()
        assert clf.text_features() is first
        clf.learner.context.ctx.add_(0.1)  # an in-place optimiser step
        second = clf.text_features()
    assert second is not first and not torch.allclose(first, second)
    assert clf.text_features() is not clf.text_features()  # grad enabled: never cached


def test_prompt_too_long_and_bad_options_raise(clip) -> None:
    with pytest.raises(ConfigError, match="limit is 77"):
        CoOpPromptLearner(clip, ["word " * 70], n_ctx=16)
    with pytest.raises(ConfigError, match="class_token_position"):
        CoOpPromptLearner(clip, NAMES, class_token_position="side")
    for kwargs in ({"gate": "half"}, {"film_mode": "local"}, {"init": "zeros"}, {"vis_tokens": "all"}):
        with pytest.raises(ConfigError):
            VisPromptLearner(clip, NAMES, **kwargs)


def test_zero_shot_templates_and_ensembles(clip, images) -> None:
    assert templates_for("OxfordPets") == ["a photo of a {}, a type of pet."]
    assert templates_for("dtd") == templates_for("DescribableTextures") == ["{} texture."]
    assert templates_for("my_own_data") == ["a photo of a {}."]
    assert len(templates_for("ImageNet", ensemble="select")) == 7
    assert len(templates_for("ImageNet", ensemble="openai")) == 80
    single = ZeroShotClassifier(clip, NAMES, ["a photo of a {}."])
    doubled = ZeroShotClassifier(clip, NAMES, ["a photo of a {}.", "a photo of a {}."])
    assert torch.allclose(single(images), doubled(images), atol=1e-5)
    mixed = ZeroShotClassifier(clip, NAMES, templates_for("ImageNet", ensemble="select"))
    assert mixed(images).shape == (3, len(NAMES)) and mixed.trainable_parameters() == []


def test_learners_and_classifiers_meet_the_protocols(clip) -> None:
    from visprompt.models.protocols import Classifier, PromptLearner

    for learner in (CoOpPromptLearner(clip, NAMES, n_ctx=2), VisPromptLearner(clip, NAMES, n_ctx=2)):
        assert isinstance(learner, PromptLearner)
        assert isinstance(PromptClassifier(clip, learner), Classifier)
    assert isinstance(ZeroShotClassifier(clip, NAMES), Classifier)
    assert not isinstance(object(), Classifier)


@pytest.mark.parametrize("method", ["coop", "visprompt", "visprompt-plus"])
def test_run_class_chunk_reaches_the_text_encoder_and_keeps_the_logits(clip, images, method: str) -> None:
    from visprompt.config import load_config
    from visprompt.methods import build_method, method_spec
    from visprompt.models.classifier import PromptClassifier

    logits = []
    for chunk in (None, 3):
        cfg = load_config(overrides=["prompt.n_ctx=4", f"run.class_chunk={'null' if chunk is None else chunk}"],
                          method=method)  # fmt: skip
        torch.manual_seed(0)
        built = build_method(method_spec(cfg), clip, NAMES).eval()
        classifiers = [m for m in built.modules() if isinstance(m, PromptClassifier)]
        assert classifiers and all(m.text_encoder.class_chunk == chunk for m in classifiers)
        with torch.no_grad():
            logits.append(classifiers[0](images))
    assert (logits[0] - logits[1]).abs().max() < 1e-4  # the same model; only the passes' rounding differs


def test_a_context_phrase_without_tokens_is_refused(clip) -> None:
    with pytest.raises(ConfigError, match="has no tokens"):
        CoOpPromptLearner(clip, NAMES, ctx_init=" _ ")
