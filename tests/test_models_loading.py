"""Loading weights offline: every supported file format round-trips a tiny model; missing files, wrong
checksums and GELU/QuickGELU mismatches give one-line WeightsErrors."""

from __future__ import annotations

import copy
import json
import time
import warnings
from pathlib import Path

import pytest
import torch

from visprompt.errors import UnknownNameError, WeightsError
from visprompt.models.backbone import load_backbone, save_backbone
from visprompt.models.tiny import tiny_clip, tiny_config, tiny_image_batch
from visprompt.models.weights import OPENAI_SHA256, file_sha256, is_torchscript_archive


def _write_config(path: Path, tower: str, quick_gelu: bool | None) -> Path:
    cfg = tiny_config(tower)
    if quick_gelu is None:
        cfg.pop("quick_gelu")
    else:
        cfg["quick_gelu"] = quick_gelu
    path.write_text(json.dumps(cfg))
    return path


def _write_torchscript(clip, path: Path) -> Path:
    """An archive shaped like OpenAI's: a scripted model whose state dict has the three extra attributes."""
    model = copy.deepcopy(clip.model)
    for key in ("input_resolution", "context_length", "vocab_size"):
        if hasattr(model, key):
            delattr(model, key)
        model.register_buffer(key, torch.tensor(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated, and still what OpenAI shipped
        torch.jit.save(torch.jit.script(model), str(path))
    return path


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


@pytest.fixture(scope="module", params=["vit", "resnet"])
def source(request: pytest.FixtureRequest):
    return tiny_clip(request.param, seed=3)


@pytest.mark.parametrize("fmt", ["safetensors", "state_dict", "wrapped_ddp", "torchscript"])
def test_each_format_loads_back_identically(source, tmp_path: Path, fmt: str) -> None:
    tower = source.arch.removeprefix("tiny-")
    config = _write_config(tmp_path / "config.json", tower, None if fmt == "torchscript" else True)
    sd = source.model.state_dict()
    if fmt == "safetensors":
        weights = tmp_path / "w.safetensors"
        save_backbone(source, weights)
    elif fmt == "state_dict":
        weights = tmp_path / "w.pt"
        torch.save(sd, weights)
    elif fmt == "wrapped_ddp":
        weights = tmp_path / "w.pth"
        torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, weights)
    else:
        weights = _write_torchscript(source, tmp_path / "w.pt")
        assert is_torchscript_archive(weights)
    loaded = load_backbone(config, weights, seed=123)
    assert loaded.quick_gelu  # torchscript: from the archive, the config leaves it open
    own = loaded.model.state_dict()
    assert own.keys() == sd.keys()
    assert all(torch.equal(own[k], sd[k]) for k in sd)
    images = tiny_image_batch(source, 2)
    for a, b in zip(loaded.encode_image(images), source.encode_image(images), strict=True):
        assert torch.equal(a, b)


def test_save_backbone_writes_a_config_that_loads_back(tmp_path: Path) -> None:
    clip = tiny_clip("vit", seed=4)
    save_backbone(clip, tmp_path / "m.safetensors", tmp_path / "open_clip_config.json")
    loaded = load_backbone(tmp_path / "open_clip_config.json", tmp_path / "m.safetensors")
    ids = clip.tokenize(["a photo of a dog."])
    assert torch.equal(loaded.encode_text(ids), clip.encode_text(ids))
    assert loaded.mean == clip.mean and loaded.arch == "open_clip_config"


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    config = _write_config(tmp_path / "c.json", "vit", True)
    with pytest.raises(WeightsError) as err:
        load_backbone(config, tmp_path / "absent.safetensors")
    assert str(tmp_path / "absent.safetensors") in _one_line(err)
    with pytest.raises(WeightsError) as err:
        load_backbone("RN50", tmp_path / "RN50.pt")
    assert "RN50.pt does not exist" in _one_line(err) and OPENAI_SHA256["RN50"][:12] in str(err.value)


def test_openai_tag_missing_from_cache_says_where_to_put_it_and_fails_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    with pytest.raises(WeightsError) as err:
        load_backbone("RN50", "openai", cache_dir=tmp_path)
    assert time.perf_counter() - start < 5  # no hub retry loop
    msg = _one_line(err)
    assert "RN50.pt" in msg and str(tmp_path) in msg and OPENAI_SHA256["RN50"][:12] in msg


def test_wrong_checksum(source, tmp_path: Path) -> None:
    weights = tmp_path / "w.safetensors"
    save_backbone(source, weights)
    config = _write_config(tmp_path / "c.json", source.arch.removeprefix("tiny-"), True)
    with pytest.raises(WeightsError, match="wrong SHA-256") as err:
        load_backbone(config, weights, sha256="0" * 64)
    _one_line(err)
    assert load_backbone(config, weights, sha256=file_sha256(weights)).quick_gelu


def test_published_openai_checksums_are_checked(tmp_path: Path) -> None:
    # a corrupt RN50.pt in open_clip's URL cache, and a TorchScript archive passed as RN50 weights
    (tmp_path / "RN50.pt").write_bytes(b"not the OpenAI file")
    with pytest.raises(WeightsError, match="wrong SHA-256") as err:
        load_backbone("RN50", "openai", cache_dir=tmp_path)
    _one_line(err)
    archive = _write_torchscript(tiny_clip("resnet"), tmp_path / "archive.pt")
    with pytest.raises(WeightsError, match="wrong SHA-256"):
        load_backbone("RN50", archive)


def test_gelu_quickgelu_mismatch(tmp_path: Path) -> None:
    quick = tiny_clip("vit", quick_gelu=True)
    weights = tmp_path / "quick.safetensors"
    save_backbone(quick, weights)  # metadata: quick_gelu=true
    gelu_config = _write_config(tmp_path / "gelu.json", "vit", False)
    with pytest.raises(WeightsError, match=r"builds GELU but .* QuickGELU") as err:
        load_backbone(gelu_config, weights)
    _one_line(err)
    with pytest.raises(WeightsError, match="builds GELU"):
        load_backbone(_write_config(tmp_path / "open.json", "vit", None), weights, quick_gelu=False)
    archive = _write_torchscript(quick, tmp_path / "openai_like.pt")
    with pytest.raises(WeightsError, match="QuickGELU"):
        load_backbone(gelu_config, archive)
    gelu = tiny_clip("vit", quick_gelu=False)
    save_backbone(gelu, tmp_path / "gelu.safetensors")
    with pytest.raises(WeightsError, match=r"builds QuickGELU but .* GELU"):
        load_backbone(_write_config(tmp_path / "quick.json", "vit", True), tmp_path / "gelu.safetensors")


def test_weights_of_another_architecture(tmp_path: Path) -> None:
    save_backbone(tiny_clip("vit"), tmp_path / "vit.safetensors")
    with pytest.raises(WeightsError, match="does not fit") as err:
        load_backbone(_write_config(tmp_path / "rn.json", "resnet", True), tmp_path / "vit.safetensors")
    assert "missing" in _one_line(err)


def test_not_a_weights_file(tmp_path: Path) -> None:
    bad = tmp_path / "w.pt"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(WeightsError, match="cannot read weights") as err:
        load_backbone(_write_config(tmp_path / "c.json", "vit", True), bad)
    _one_line(err)
    import os

    import torch

    torch.save({"w": torch.zeros(2), "code": os.getcwd}, tmp_path / "pickled.pt")  # an object, not a tensor
    for path in (bad, tmp_path / "pickled.pt"):
        (tmp_path / "r.pt").write_bytes(os.urandom(4096) if path is bad else path.read_bytes())
        with pytest.raises(WeightsError, match="not a weights file") as err:
            load_backbone(_write_config(tmp_path / "c.json", "vit", True), tmp_path / "r.pt")
        assert "weights_only" not in str(err.value)  # torch's advice to unpickle anyway is never ours


def test_unknown_architecture_suggests_close_names() -> None:
    with pytest.raises(UnknownNameError, match="RN50"):
        load_backbone("RN05")
