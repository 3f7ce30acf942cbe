"""TextEncoder's per-run plan (class groups and pool layouts computed once) gives the same bits as before.

``reference_text_call`` is ``TextEncoder.__call__`` as it was (groups, checks and class indexing redone at every call);
the encoder must return the same features and the same gradients, bit for bit, on every path the learners use,
on repeated calls (the plan reused) and when the class list changes (the plan recomputed).
"""

from __future__ import annotations

import pytest
import torch

from reference_paths import reference_text_call
from visprompt.models.classifier import PromptClassifier
from visprompt.models.text import TextEncoder
from visprompt.models.tiny import tiny_clip, tiny_image_batch

ONE_LENGTH = ("dog", "cat", "ox", "fox")  # one token each: one group holding every class
MIXED = ("dog", "golden retriever", "cat", "sweet pepper", "a rather long class name with many words", "ox")


@pytest.fixture(scope="module")
def clip():
    return tiny_clip("vit", seed=4)


def _learner(kind: str, clip, names):
    from visprompt.models.cocoop import CoCoOpPromptLearner
    from visprompt.models.coop import CoOpPromptLearner
    from visprompt.models.visprompt import VisPromptLearner

    torch.manual_seed(3)
    if kind == "coop":
        return CoOpPromptLearner(clip, names, n_ctx=4)
    if kind == "coop-middle":
        return CoOpPromptLearner(clip, names, n_ctx=4, class_token_position="middle")
    if kind == "cocoop":
        return CoCoOpPromptLearner(clip, names)
    return VisPromptLearner(clip, names, n_ctx=4)


def _run(model: PromptClassifier, pooled, tokens, call) -> tuple[torch.Tensor, list[torch.Tensor]]:
    learner = model.learner
    learner.zero_grad(set_to_none=True)
    length = model.text_encoder.required_length(learner.pool_index)
    feats = call(learner(pooled, tokens, length))
    (feats * torch.linspace(-1, 1, feats.numel()).reshape(feats.shape)).sum().backward()
    return feats.detach(), [p.grad.clone() for p in learner.parameters() if p.requires_grad]


@pytest.mark.parametrize("names", [ONE_LENGTH, MIXED], ids=["one-length", "mixed"])
@pytest.mark.parametrize(("kind", "chunk"), [("coop", None), ("coop-middle", None), ("cocoop", None),
                                             ("visprompt", None), ("visprompt", 2)])  # fmt: skip
def test_the_plan_gives_the_same_bits(clip, kind: str, chunk: int | None, names: tuple[str, ...]) -> None:
    learner = _learner(kind, clip, names)
    learner.eval()
    model = PromptClassifier(clip, learner, class_chunk=chunk)
    enc = model.text_encoder
    pooled, tokens = clip.encode_image(tiny_image_batch(clip, batch=3, seed=1))
    pooled = pooled[:1] if kind == "cocoop" else pooled
    for _ in range(2):  # the second call reuses the plan
        feats, grads = _run(model, pooled, tokens[: pooled.shape[0]], enc)
        ref_feats, ref_grads = _run(model, pooled, tokens[: pooled.shape[0]], lambda p: reference_text_call(enc, p))
        assert feats.std() > 0
        assert torch.equal(feats, ref_feats)
        for g, r in zip(grads, ref_grads, strict=True):
            assert torch.equal(g, r)
    assert enc._plan is not None and enc._plan[1].whole == (names is ONE_LENGTH and chunk is None)


def test_the_plan_follows_the_pool_indices(clip) -> None:
    """Another set of pool indices (another class list) gets its own plan, never the previous one."""
    enc = None
    for names in (MIXED, ONE_LENGTH, MIXED[::-1]):
        learner = _learner("coop", clip, names)
        enc = enc or TextEncoder(clip, "auto", learner.prefix_len)
        with torch.no_grad():
            prompts = learner(None, None, enc.required_length(learner.pool_index))
            assert torch.equal(enc(prompts), reference_text_call(enc, prompts))
        assert enc._plan[0][4:] == tuple(learner.pool_index.tolist())
