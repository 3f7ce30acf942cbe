"""Parity of the three text paths: against open_clip's encode_text on sentences, and against each other on
learned prompts, forward and gradients, in float32 and float64, on a ViT and a ModifiedResNet tower.

Tolerances: 1e-5 (float32) and 1e-10 (float64), absolute on unit-norm features, relative to the largest entry
for gradients (whose scale depends on the loss)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from visprompt.errors import ConfigError
from visprompt.models.coop import CoOpPromptLearner
from visprompt.models.text import PromptEmbeddings, TextEncoder, resolve_text_path
from visprompt.models.tiny import tiny_clip

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
PATHS = ("reference", "truncated", "prefix")
NAMES = ("dog", "golden retriever", "cat", "a rather long class name with many words")
K = 5  # SOS + "a photo of a"


@pytest.fixture(scope="module", params=["vit", "resnet"])
def tower(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def clips(tower: str) -> dict[torch.dtype, object]:
    return {dt: tiny_clip(tower, seed=1, dtype=dt) for dt in TOL}


def _sentences(clip):
    ids = clip.tokenize([f"a photo of a {n}." for n in NAMES])
    assert (ids[:, :K] == ids[:1, :K]).all()  # the shared prefix the prefix path relies on
    return ids


@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("path", PATHS)
def test_paths_equal_open_clip_encode_text(clips, dtype: torch.dtype, path: str) -> None:
    clip = clips[dtype]
    ids = _sentences(clip)
    emb = clip.token_embedding(ids).detach()  # (C, L, D)
    prompts = PromptEmbeddings(emb[:1, :K], emb[None, :, K:], clip.pool_index(ids))
    ours = TextEncoder(clip, path, prefix_len=K)(prompts)[0]  # (C, E)
    ref = clip.encode_text(ids)
    assert ours.dtype == dtype
    err = (F.normalize(ours, dim=-1) - F.normalize(ref, dim=-1)).abs().max().item()
    assert err < TOL[dtype], f"{path}: {err}"


@pytest.mark.parametrize("path", PATHS)
def test_paths_match_open_clip_gradients_on_the_embedding_table(tower: str, path: str) -> None:
    clip = tiny_clip(tower, seed=2, dtype=torch.float64)
    ids = _sentences(clip)
    weight = clip.token_embedding.weight
    w = torch.randn(len(NAMES), clip.embed_dim, dtype=torch.float64)
    grads = []
    weight.requires_grad_(True)
    try:
        for run in ("open_clip", path):
            weight.grad = None
            if run == "open_clip":
                feats = clip.model.encode_text(ids)
            else:
                emb = clip.token_embedding(ids)
                prompts = PromptEmbeddings(emb[:1, :K], emb[None, :, K:], clip.pool_index(ids))
                feats = TextEncoder(clip, path, prefix_len=K)(prompts)[0]
            (F.normalize(feats, dim=-1) * w).sum().backward()
            grads.append(weight.grad.clone())
    finally:
        weight.requires_grad_(False)
        weight.grad = None
    assert grads[0].abs().max() > 0
    assert ((grads[0] - grads[1]).abs().max() / grads[0].abs().max()).item() < TOL[torch.float64]


def _learned(clip, n_contexts: int, per_context_body: bool, seed: int = 0):
    """Random prompts of learned-context shape: P prefixes of K tokens, class bodies from real names."""
    gen = torch.Generator().manual_seed(seed)
    ids = _sentences(clip)
    dtype = clip.dtype
    prefix = (0.02 * torch.randn(n_contexts, K, clip.width, generator=gen)).to(dtype).requires_grad_(True)
    body = clip.token_embedding(ids)[None, :, K:].detach()  # (1, C, S, D)
    if per_context_body:
        body = body + 0.02 * torch.randn(n_contexts, *body.shape[1:], generator=gen).to(dtype)
    body = body.clone().requires_grad_(True)
    return prefix, body, clip.pool_index(ids)


@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize(("n_contexts", "per_context_body"), [(1, False), (3, False), (3, True)])
def test_fast_paths_equal_reference_on_learned_prompts(clips, dtype, n_contexts, per_context_body) -> None:
    clip = clips[dtype]
    results = {}
    for path in PATHS:
        prefix, body, idx = _learned(clip, n_contexts, per_context_body)
        feats = TextEncoder(clip, path, prefix_len=K)(PromptEmbeddings(prefix, body, idx))
        assert feats.shape == (n_contexts, len(NAMES), clip.embed_dim)
        unit = F.normalize(feats, dim=-1)
        w = torch.randn(unit.shape, generator=torch.Generator().manual_seed(9)).to(dtype)
        (unit * w).sum().backward()
        results[path] = (unit.detach(), prefix.grad, body.grad)
    ref = results["reference"]
    for path in ("truncated", "prefix"):
        feats, *grads = results[path]
        assert (feats - ref[0]).abs().max().item() < TOL[dtype], path  # unit-norm features: absolute
        for g, g_ref in zip(grads, ref[1:], strict=True):  # gradients: relative to their largest entry
            assert ((g - g_ref).abs().max() / g_ref.abs().max()).item() < TOL[dtype], path
    assert ref[1].abs().max() > 0 and ref[2].abs().max() > 0


@pytest.mark.parametrize("path", PATHS)
def test_class_chunks_equal_one_pass(clips, path: str) -> None:
    clip = clips[torch.float64]
    prefix, body, idx = _learned(clip, 2, False)
    prompts = PromptEmbeddings(prefix.detach(), body.detach(), idx)
    whole = TextEncoder(clip, path, prefix_len=K)(prompts)
    chunked = TextEncoder(clip, path, prefix_len=K, class_chunk=3)(prompts)
    assert (whole - chunked).abs().max().item() < 1e-12


def test_auto_picks_the_fastest_valid_path() -> None:
    clip = tiny_clip("vit")
    assert resolve_text_path(clip, "auto", prefix_len=17) == "prefix"
    assert resolve_text_path(clip, "auto", prefix_len=1) == "truncated"
    assert TextEncoder(clip, "auto", CoOpPromptLearner(clip, NAMES).prefix_len).path == "prefix"
    middle = CoOpPromptLearner(clip, NAMES, class_token_position="middle")
    csc = CoOpPromptLearner(clip, NAMES, csc=True)
    assert TextEncoder(clip, "auto", middle.prefix_len).path == "truncated"
    assert TextEncoder(clip, "auto", csc.prefix_len).path == "truncated"
    with pytest.raises(ConfigError, match="prefix"):
        resolve_text_path(clip, "prefix", prefix_len=1)
    with pytest.raises(ConfigError, match="unknown text path"):
        resolve_text_path(clip, "fast", prefix_len=17)


def test_bidirectional_tower_falls_back_to_reference() -> None:
    clip = tiny_clip("vit")
    clip.model.attn_mask = None  # as open_clip builds towers with no_causal_mask
    assert resolve_text_path(clip, "auto", prefix_len=17) == "reference"
    with pytest.raises(ConfigError, match="not causal"):
        resolve_text_path(clip, "truncated", prefix_len=17)


# -- the distinct-token floor: classes grouped by length, the last layer at the pooled token -------------------

FLOOR_NAMES = ("dog", "golden retriever", "cat", "sweet pepper", "a rather long class name with many words", "ox")


def _learner(kind: str, clip):
    from visprompt.models.cocoop import CoCoOpPromptLearner
    from visprompt.models.visprompt import VisPromptLearner

    torch.manual_seed(3)
    if kind == "coop":
        return CoOpPromptLearner(clip, FLOOR_NAMES, n_ctx=4)
    if kind == "coop-csc":
        return CoOpPromptLearner(clip, FLOOR_NAMES, n_ctx=4, csc=True)
    if kind == "coop-middle":
        return CoOpPromptLearner(clip, FLOOR_NAMES, n_ctx=4, class_token_position="middle")
    if kind == "cocoop":
        return CoCoOpPromptLearner(clip, FLOOR_NAMES)
    return VisPromptLearner(clip, FLOOR_NAMES, n_ctx=4, vis_tokens="global" if kind == "visprompt-global" else "patch")


@pytest.fixture(scope="module")
def floor_clip():
    return tiny_clip("vit", seed=4)


@pytest.mark.parametrize(
    ("kind", "chunk"),
    [(k, None) for k in ("coop", "coop-csc", "coop-middle", "cocoop", "visprompt", "visprompt-global")]
    + [("visprompt", 2), ("coop-csc", 2)],
)
def test_length_groups_give_the_padded_logits_and_gradients(floor_clip, kind: str, chunk: int | None) -> None:
    """Grouped by length (and last layer at EOT) vs padded to the longest vs all 77 tokens: logits to 1e-5."""
    from visprompt.models.classifier import PromptClassifier
    from visprompt.models.tiny import tiny_image_batch

    clip = floor_clip
    learner = _learner(kind, clip)
    learner.eval()  # no dropout: the three runs see the same function
    pooled, tokens = clip.encode_image(tiny_image_batch(clip, batch=3, seed=1))
    results = {}
    for name, path, bucket in (("floor", "auto", True), ("padded", "auto", False), ("reference", "reference", True)):
        model = PromptClassifier(clip, learner, text_path=path, class_chunk=chunk)
        model.text_encoder.bucket = bucket
        learner.zero_grad(set_to_none=True)
        logits = model.logits_from_features(pooled, tokens)
        (logits * torch.linspace(-1, 1, logits.numel()).reshape(logits.shape)).sum().backward()
        grads = [p.grad.clone() for p in learner.parameters() if p.requires_grad]
        results[name] = (logits.detach(), grads)
    ref_logits, ref_grads = results["reference"]
    assert ref_logits.std() > 0
    for name in ("floor", "padded"):
        logits, grads = results[name]
        assert (logits - ref_logits).abs().max().item() < 1e-5, name
        for g, g_ref in zip(grads, ref_grads, strict=True):
            assert ((g - g_ref).abs().max() / g_ref.abs().max().clamp_min(1e-30)).item() < 1e-4, (
                name
            )  # float32 rounding


def test_the_prefix_path_runs_the_distinct_positions_only() -> None:
    from visprompt.models.text import distinct_positions, length_groups
    from visprompt.models.visprompt import VisPromptLearner

    clip = tiny_clip("vit")
    learner = VisPromptLearner(clip, FLOOR_NAMES, n_ctx=4)
    idx, k = learner.pool_index, learner.prefix_len
    assert len(length_groups(idx)) >= 3  # the names really differ in length
    floor = TextEncoder(clip, "prefix", k)
    padded = TextEncoder(clip, "prefix", k, bucket=False)
    distinct = distinct_positions(idx, 8, k)
    assert floor.positions(idx, 8, k) == distinct
    assert padded.positions(idx, 8, k) == 8 * (k + len(FLOOR_NAMES) * (int(idx.max()) + 1 - k)) > distinct
    assert TextEncoder(clip, "prefix", k, class_chunk=1).positions(idx, 8, k) == distinct


def test_a_mixed_length_call_still_pools_each_class_at_its_own_token(clips) -> None:
    """encode_prefix_shared called directly on unequal lengths keeps the full last layer and gathers per class."""
    from visprompt.models.text import encode_prefix_shared

    clip = clips[torch.float64]
    prefix, body, idx = _learned(clip, 2, False)
    prompts = PromptEmbeddings(prefix.detach(), body.detach(), idx)
    assert len(set(idx.tolist())) > 1
    direct = encode_prefix_shared(clip, prompts)
    ref = TextEncoder(clip, "reference", prefix_len=K)(prompts)
    assert (F.normalize(direct, dim=-1) - F.normalize(ref, dim=-1)).abs().max().item() < 1e-10
