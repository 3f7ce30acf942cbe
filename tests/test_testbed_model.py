"""The testbed CLIP: contrastive loss, pretraining (smoke, resume), export, and loading the shipped assets."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from visprompt.errors import DataError, WeightsError
from visprompt.testbed import card, model
from visprompt.testbed.pretrain import PretrainConfig, contrastive_loss, pretrain
from visprompt.testbed.tasks import TASKS_BY_NAME, vocabulary_phrases
from visprompt.testbed.vocab import build_vocabulary


def test_contrastive_loss_shares_targets_between_identical_captions() -> None:
    feats = torch.eye(4)  # (B, E) orthonormal: image i matches text i only...
    feats[1] = feats[0]  # ...except that captions 0 and 1 are the same text (so the same feature)
    tokens = torch.tensor([[5, 6], [5, 6], [7, 8], [9, 9]])
    scale = torch.tensor(math.log(1e4))  # logit scale so high that softmax is hard
    loss, acc = contrastive_loss(feats, feats, scale, tokens)
    assert acc.item() == 1.0
    # rows 0 and 1 put mass 1 on one of two targets of 1/2 each: cross-entropy ln 2 each, in both directions
    assert loss.item() == pytest.approx(2 * math.log(2) / 4, abs=1e-3)
    shuffled, _ = contrastive_loss(feats, feats[[2, 3, 0, 1]], scale, tokens)
    assert shuffled.item() > 10 * loss.item()  # mismatched pairs are punished


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain")
    tok = build_vocabulary(vocabulary_phrases())
    arch = model.TinyClipConfig(vocab_size=tok.vocab_size, vision_layers=1, text_layers=1, embed_dim=32)
    cfg = PretrainConfig(batch_size=8, max_steps=2, warmup_steps=1, threads=1, workers=0)
    meta = pretrain(out, tok, cfg, arch)
    return out, tok, cfg, arch, meta


def test_pretrain_writes_a_loadable_checkpoint_and_resumes(tiny_run) -> None:
    out, tok, cfg, arch, meta = tiny_run
    assert meta["steps"] == 2 and meta["samples"] == 16 and math.isfinite(meta["loss"])
    for name in (model.CHECKPOINT_NAME, model.CONFIG_NAME, model.VOCAB_NAME, "state.pt", "train_log.jsonl"):
        assert (out / name).is_file()
    clip = model.load_testbed_clip(directory=out)
    assert clip.arch == model.ARCH_NAME and clip.context_length == arch.context_length
    assert not any(p.requires_grad for p in clip.parameters())
    assert torch.load(out / "state.pt", weights_only=True)["meta"]["steps"] == 2  # data only, never code
    meta2 = pretrain(out, tok, dataclasses.replace(cfg, max_steps=3), arch)  # resumes from state.pt
    assert meta2["steps"] == 3 and meta2["samples"] == 24
    assert [seg["start_step"] for seg in meta2["segments"]] == [0, 2]


def test_pretrain_refuses_a_state_that_is_not_plain_data(tiny_run, tmp_path) -> None:
    _, tok, cfg, arch, _ = tiny_run
    torch.save({"meta": cfg}, tmp_path / "state.pt")  # a pickled object: weights_only refuses
    with pytest.raises(DataError, match=r"state\.pt: not a pretraining state visprompt wrote") as info:
        pretrain(tmp_path, tok, cfg, arch)
    assert "weights_only" not in str(info.value) and "\n" not in str(info.value)


def test_export_and_model_card(tiny_run, tmp_path) -> None:
    out, *_ = tiny_run
    assets = card.export_assets(out, tmp_path)
    direct, _ = model.load_testbed_model(out)
    exported, _ = model.load_testbed_model(assets)
    for (k, a), b in zip(direct.state_dict().items(), exported.state_dict().values(), strict=True):
        assert torch.equal(a, b), k  # fp16 on disk both times: the export is lossless
    evaluation = {n: {"zero_shot": 0.5, "zero_shot_in_domain": 0.9, "linear_probe": 0.6} for n in TASKS_BY_NAME}
    coop = {"testbed-colours": {"coop_clean": 0.7, "coop_noise75": 0.4}}
    text = card.write_model_card(assets, {**evaluation, "test_per_class": 3}, "cmd", coop, coop_source="q").read_text()
    assert "| testbed-colours | 50.0 | 90.0 | 60.0 | 70.0 | 40.0 |" in text
    assert "| testbed-shapes (extra) | 50.0 | 90.0 | 60.0 | n/a | n/a |" in text
    assert "colour cast, RGB gain 1/0.8/0.5" in text and "hue rotated 75 deg" in text


def test_loading_errors_name_the_file(tiny_run, tmp_path) -> None:
    out, *_ = tiny_run
    with pytest.raises(WeightsError, match="not found"):
        model.load_testbed_model(tmp_path)
    wrong = json.loads((out / model.CONFIG_NAME).read_text())
    wrong["model_cfg"]["embed_dim"] = 16
    (tmp_path / model.CONFIG_NAME).write_text(json.dumps(wrong))
    with pytest.raises(WeightsError, match="do not match"):
        model.load_weights(model.build_clip(wrong), out / model.CHECKPOINT_NAME)


@pytest.mark.skipif(not (model.ASSETS / model.CHECKPOINT_NAME).is_file(), reason="no shipped checkpoint yet")
def test_shipped_checkpoint() -> None:
    path = model.ASSETS / model.CHECKPOINT_NAME
    assert path.stat().st_size < 30 * 2**20
    clip = model.load_testbed_clip()
    assert next(clip.parameters()).dtype == torch.float32  # fp16 on disk, upcast on load
    tok = clip.tokenizer
    for task in TASKS_BY_NAME.values():
        assert all(tok.unknown_words(task.template.format(c)) == [] for c in task.classnames)
    pooled, tokens = clip.encode_image(torch.zeros(2, 3, clip.image_size, clip.image_size))
    assert pooled.shape == (2, clip.embed_dim) and tokens.shape[0] == 2
    assert (model.ASSETS / card.CARD_NAME).is_file()
