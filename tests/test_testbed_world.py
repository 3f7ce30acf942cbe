"""The testbed world: seeded scenes, captions, vocabulary coverage and the vectorised renderer."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
import torch

from visprompt.testbed import render, world
from visprompt.testbed.tasks import COOP_INIT, TASKS, vocabulary_phrases
from visprompt.testbed.vocab import UNK_ID, CompactTokenizer, build_vocabulary


@pytest.fixture(scope="module")
def tok() -> CompactTokenizer:
    return build_vocabulary(vocabulary_phrases())


def test_scenes_and_captions_are_seeded() -> None:
    a = world.sample_scenes(np.random.default_rng(3), 40, hard_negative_frac=0.5)
    b = world.sample_scenes(np.random.default_rng(3), 40, hard_negative_frac=0.5)
    c = world.sample_scenes(np.random.default_rng(4), 40, hard_negative_frac=0.5)
    assert all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("shape", "rgb", "centre", "seed"))
    assert not np.array_equal(a.centre, c.centre)
    assert world.captions(np.random.default_rng(0), a) == world.captions(np.random.default_rng(0), b)


def test_fixed_attributes_and_geometry() -> None:
    labels = np.arange(90) % len(world.POSITIONS)
    s = world.sample_scenes(np.random.default_rng(0), 90, fixed={"position": labels, "size": 0})
    assert np.array_equal(s.position, labels) and (s.size == 0).all()
    assert (s.radius >= 8.0).all() and (s.radius <= 9.0).all()  # radius >= 8 px: smaller is unreadable
    col, row = np.floor(s.centre / (32 / 3)).astype(int).T  # the centre lies in its 3x3 grid cell
    assert np.array_equal(row * 3 + col, labels)
    assert (np.abs(np.rad2deg(s.angle)) <= 30).all()


def test_hard_negatives_use_two_colours() -> None:
    s = world.sample_scenes(np.random.default_rng(1), 200, hard_negative_frac=0.5)
    assert len(np.unique(s.colour[100:])) == 2
    assert len(np.unique(s.colour[:100])) > 2


def test_captions_name_attributes_at_their_rates(tok: CompactTokenizer) -> None:
    rng = np.random.default_rng(0)
    s = world.sample_scenes(rng, 3000)
    caps = world.captions(rng, s)
    shape_named = np.mean([world.SHAPES[k] in c for k, c in zip(s.shape, caps, strict=True)])
    assert 0.42 < shape_named < 0.58  # MENTION_PROB["shape"] = 0.5
    bg = [world.BACKGROUNDS[k] in c for k, c in zip(s.background, caps, strict=True) if k < len(world.BACKGROUNDS)]
    assert 0.28 < np.mean(bg) < 0.42  # 0.35
    assert all(c.endswith(".") for c in caps)
    assert (tok(caps) != UNK_ID).all()  # every caption word is in the vocabulary


def test_vocabulary_covers_class_names_templates_and_coop_init(tok: CompactTokenizer) -> None:
    for task in TASKS:
        for c in task.classnames:
            assert tok.unknown_words(task.template.format(c)) == []
    assert tok.unknown_words(COOP_INIT + " .") == []
    assert tok.unknown_words("a photo of a zebra") == ["zebra"]


def test_tokenizer_matches_clip_bpe_and_keeps_eot_the_max(tok: CompactTokenizer, tmp_path) -> None:
    from open_clip.tokenizer import SimpleTokenizer

    texts = ["a photo of a heart.", "there is a big red striped star in the top left on grass."]
    ids = tok(texts)  # (2, 32)
    assert ids.shape == (2, 32) and ids.dtype == torch.long
    assert (ids[:, 0] == tok.sot_token_id).all()
    assert (ids.argmax(1) == (ids > 0).sum(1) - 1).all()  # EOT is the last non-pad token and the row's max
    assert ids.max() == tok.eot_token_id == tok.vocab_size - 1
    bpe = torch.tensor(tok.bpe_ids)[ids] * (ids > 0)  # map back to BPE ids, padding stays 0
    assert torch.equal(bpe, SimpleTokenizer(context_length=32)(texts))  # parity with the real CLIP tokenizer
    assert np.all(np.diff(tok.bpe_ids[2:]) > 0)  # BPE order kept
    assert tok.decode(ids[0]) == "a photo of a heart ."
    tok.save(tmp_path / "v.json")
    assert torch.equal(CompactTokenizer.load(tmp_path / "v.json")(texts), ids)


def test_tokenizer_truncates_with_eot_last(tok: CompactTokenizer) -> None:
    ids = tok(["a red " * 30], context_length=8)
    assert ids.shape == (1, 8) and ids[0, -1] == tok.eot_token_id


def test_render_is_per_scene_deterministic() -> None:
    s = world.sample_scenes(np.random.default_rng(0), 12)
    full = render.render(s, render.PRETRAIN)
    assert full.shape == (12, 32, 32, 3) and full.dtype == np.uint8
    assert np.array_equal(full[[3, 7]], render.render(s.take(np.array([3, 7])), render.PRETRAIN))
    assert not np.array_equal(full, render.render(s, render.CLEAN))


@pytest.mark.parametrize("name", world.SHAPES)
def test_shapes_cover_a_plausible_area(name: str) -> None:
    """Each shape's mask covers 30-80% of its bounding disc and differs from every other shape's."""
    r = 200
    u, v = np.meshgrid(np.linspace(-1, 1, r), np.linspace(1, -1, r))
    masks = {k: f(u, v) for k, f in render.SHAPE_FNS.items()}
    area = masks[name].mean() / (np.pi / 4)
    assert 0.3 < area < 1.0
    for other, m in masks.items():
        if other != name:
            assert (masks[name] ^ m).mean() > 0.05, other


def test_hue_rotation_keeps_grey_and_is_a_rotation() -> None:
    theta = np.array([0.0, 0.7, -2.0, 2 * np.pi / 3])
    rot = render._hue_rotation(theta)  # (4, 3, 3)
    assert np.allclose(rot[0], np.eye(3), atol=1e-6)
    assert np.allclose(rot @ np.ones(3), 1.0, atol=1e-6)  # grey stays grey
    assert np.allclose(rot @ rot.transpose(0, 2, 1), np.eye(3), atol=1e-5)  # orthogonal
    assert np.allclose(rot[3] @ np.array([1.0, 0, 0]), [0, 1, 0], atol=1e-6)  # 120 degrees: red -> green


def test_pretraining_data_is_pinned() -> None:
    """The shipped checkpoint was trained on this stream: captions are pinned exactly, renders by their mean
    (new style options must default to off; an intended change of the world means retraining)."""
    rng = np.random.default_rng([0, 7])  # the pretraining's step-7 batch seed with seed 0
    s = world.sample_scenes(rng, 64, hard_negative_frac=0.5)
    caps = world.captions(rng, s)
    assert hashlib.sha256("|".join(caps).encode()).hexdigest()[:16] == "4a530fd8df5fe59b"
    assert render.render(s, render.PRETRAIN).astype(np.float64).mean() == pytest.approx(129.3767, abs=0.01)
    shifted = dataclasses.replace(render.PRETRAIN, hue=(-90.0, 90.0), grey_prob=0.5)
    assert not np.array_equal(
        render.render(s.take(np.arange(4)), render.PRETRAIN), render.render(s.take(np.arange(4)), shifted)
    )
