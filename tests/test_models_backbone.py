"""The frozen CLIP wrapper: image outputs against open_clip, the ResNet value tokens, freezing and eval mode."""

from __future__ import annotations

import pytest
import torch

from visprompt.models.backbone import PAPER_ARCHS, load_backbone
from visprompt.models.classifier import PromptClassifier
from visprompt.models.coop import CoOpPromptLearner
from visprompt.models.tiny import tiny_clip, tiny_image_batch
from visprompt.models.visprompt import VisPromptLearner


@pytest.mark.parametrize(("tower", "n_tokens"), [("vit", 1 + 4 * 4), ("resnet", 1 + 2 * 2)])
def test_pooled_equals_open_clip_and_tokens_have_the_documented_shape(tower: str, n_tokens: int) -> None:
    clip = tiny_clip(tower)
    images = tiny_image_batch(clip, 3)
    pooled, tokens = clip.encode_image(images)
    assert pooled.shape == (3, clip.embed_dim)
    assert tokens.shape == (3, n_tokens, clip.embed_dim)
    assert (pooled - clip.model.encode_image(images)).abs().max() < 1e-5
    assert torch.equal(tokens[:, 0], pooled)  # the pooled token leads (ViT: CLS; ResNet: the attention pool)
    assert not pooled.requires_grad and not tokens.requires_grad


def test_resnet_grid_tokens_are_the_terms_of_the_attention_pool() -> None:
    """With uniform attention (q, k zeroed) the pool is the plain mean of the value tokens, the mean-token's
    value included; the grid tokens must be exactly those terms."""
    clip = tiny_clip("resnet")
    pool = clip.model.visual.attnpool
    with torch.no_grad():
        for lin in (pool.q_proj, pool.k_proj):
            lin.weight.zero_()
            lin.bias.zero_()
    images = tiny_image_batch(clip, 2)
    pooled, tokens = clip.encode_image(images)
    with torch.no_grad():
        visual = clip.model.visual
        x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(images)))))
        mean_token = x.flatten(2).mean(dim=2) + pool.positional_embedding[0]  # (B, C')
        first = pool.c_proj(pool.v_proj(mean_token))  # (B, E)
    expected = (first + tokens[:, 1:].sum(dim=1)) / tokens.shape[1]
    assert (pooled - expected).abs().max() < 1e-5


def test_backbone_is_frozen_and_stays_in_eval_mode() -> None:
    clip = tiny_clip("resnet")
    clf = PromptClassifier(clip, CoOpPromptLearner(clip, ["a", "b"]))
    clf.train()
    assert clf.learner.training
    assert not any(m.training for m in clip.model.modules())  # BatchNorm statistics never move
    assert not any(p.requires_grad for p in clip.parameters())
    trainable = {id(p) for p in clf.trainable_parameters()}
    assert trainable == {id(p) for p in clf.learner.parameters()}
    assert clf.summary()["backbone_trainable"] == 0
    images = tiny_image_batch(clip, 2)
    before = clip.model.visual.bn1.running_mean.clone()
    clf(images).sum().backward()
    assert torch.equal(before, clip.model.visual.bn1.running_mean)
    assert all(p.grad is None for p in clip.parameters())


def test_attributes_transforms_need() -> None:
    clip = tiny_clip("vit")
    assert (clip.embed_dim, clip.width, clip.context_length, clip.image_size) == (32, 64, 77, 32)
    assert len(clip.mean) == len(clip.std) == 3
    assert clip.quick_gelu and clip.logit_scale.ndim == 0
    ids = clip.tokenize(["a photo of a dog.", "cat"])
    assert ids.shape == (2, 77) and clip.pool_index(ids).tolist() == [7, 2]


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "visprompt_params"), [("RN50", 4_212_225), ("ViT-B/16", 3_950_081)])
def test_paper_backbones_build_offline_and_count_parameters(arch: str, visprompt_params: int) -> None:
    import open_clip

    clip = load_backbone(arch, None)
    assert clip.arch == PAPER_ARCHS[arch]
    assert clip.width == 512 and clip.context_length == 77
    reference = open_clip.create_model(PAPER_ARCHS[arch], pretrained=None)
    assert sum(p.numel() for p in clip.parameters()) == sum(p.numel() for p in reference.parameters())
    images = torch.zeros(1, 3, clip.image_size, clip.image_size)
    _, tokens = clip.encode_image(images)
    assert tokens.shape == (1, 50 if arch == "RN50" else 197, clip.embed_dim)
    names = [f"class {i}" for i in range(10)]
    visprompt = PromptClassifier(clip, VisPromptLearner(clip, names)).summary()
    assert visprompt["trainable_total"] == visprompt_params  # the trainable parameter count each run reports
    assert PromptClassifier(clip, CoOpPromptLearner(clip, names)).summary()["trainable_total"] == 16 * 512
