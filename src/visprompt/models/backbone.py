"""Loading a frozen CLIP backbone offline: architecture names, activation checks, weights files.

:func:`load_backbone` builds an open_clip architecture (a name such as ``RN50``, ``ViT-B/16``,
``ViT-B-16-quickgelu``, or a model-config JSON in open_clip's format) and fills it from a weights file or from
open_clip's cache, never from the network. The activation is settled before the model is built, because
OpenAI's weights need QuickGELU and a GELU model loads them without complaint but computes wrong features:

* the weights may declare it (an OpenAI TorchScript archive is QuickGELU; a safetensors file may carry
  ``quick_gelu`` in its metadata; a pretrained tag says it);
* the request may state it (a ``-quickgelu`` name, a config JSON's ``quick_gelu`` key, or ``quick_gelu=``);
* a bare name (``RN50``) follows the weights; a stated request that contradicts the weights is a
  :class:`~visprompt.errors.WeightsError`.

:class:`~visprompt.models.frozen_clip.FrozenCLIP` is re-exported here.
"""

from __future__ import annotations

import copy
import difflib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from visprompt.errors import ConfigError, UnknownNameError, WeightsError
from visprompt.models.frozen_clip import OPENAI_MEAN, OPENAI_STD, FrozenCLIP, Tokenizer, clip_tokenizer
from visprompt.models.weights import (
    WeightsFile,
    find_cached_pretrained,
    is_torchscript_archive,
    openai_sha256,
    read_weights,
)
from visprompt.registry import BACKBONES

__all__ = ["PAPER_ARCHS", "FrozenCLIP", "clip_tokenizer", "load_backbone", "save_backbone"]

logger = logging.getLogger(__name__)

# The paper's backbones, spelled as CLIP/CoOp spell them, mapped to open_clip's architecture names.
PAPER_ARCHS = {
    "RN50": "RN50",
    "RN101": "RN101",
    "RN50x4": "RN50x4",
    "RN50x16": "RN50x16",
    "ViT-B/32": "ViT-B-32",
    "ViT-B/16": "ViT-B-16",
}

# Backbone presets (``--backbone rn50``): OpenAI weights need the QuickGELU architectures.
for _paper, _arch in PAPER_ARCHS.items():
    BACKBONES.register(_paper.lower().replace("/", "-"))(
        {"backbone.arch": f"{_arch}-quickgelu", "backbone.weights": "openai"}
    )
BACKBONES.register("testbed")({"backbone.arch": "testbed", "backbone.weights": None})  # the shipped tiny CLIP


def _resolve_name(arch: str) -> str:
    import open_clip

    name = PAPER_ARCHS.get(arch, arch.replace("/", "-"))
    known = open_clip.list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownNameError(f"unknown CLIP architecture {arch!r}{hint} (or pass a model-config JSON path)")
    return name


def _read_config(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise WeightsError(f"{path}: cannot read model config ({err})") from err
    model_cfg = raw.get("model_cfg", raw)  # open_clip_config.json wraps it; model_configs/*.json do not
    if not isinstance(model_cfg, dict) or "vision_cfg" not in model_cfg or "text_cfg" not in model_cfg:
        raise WeightsError(f"{path}: not an open_clip model config (needs embed_dim, vision_cfg and text_cfg)")
    return copy.deepcopy(model_cfg), raw.get("preprocess_cfg", {})


def _decide_quick_gelu(label: str, stated: bool | None, declared: bool | None, source: str) -> bool:
    if stated is not None and declared is not None and stated != declared:
        want, have = ("QuickGELU", "GELU") if stated else ("GELU", "QuickGELU")
        fix = label.removesuffix("-quickgelu") if declared is False else f"{label}-quickgelu or quick_gelu=True"
        raise WeightsError(f"{label} builds {want} but {source} was trained with {have}; use {fix}")
    return bool(stated if stated is not None else declared)


def build_open_clip_model(name_or_cfg: str | dict[str, Any], quick_gelu: bool) -> nn.Module:
    """An open_clip ``CLIP`` (or ``CustomTextCLIP``) with random weights, from a registered name or a config dict.

    Built directly rather than through ``open_clip.create_model``, which logs "initialized randomly" even when
    weights are loaded right after and may reach for the network for some towers.
    """
    import open_clip

    cfg = copy.deepcopy(open_clip.get_model_config(name_or_cfg)) if isinstance(name_or_cfg, str) else dict(name_or_cfg)
    cfg["quick_gelu"] = quick_gelu
    custom_text = cfg.pop("custom_text", False)
    if "multimodal_cfg" in cfg:
        raise ConfigError("CoCa models (a multimodal text decoder) are not supported as prompt-learning backbones")
    try:
        return (open_clip.CustomTextCLIP if custom_text else open_clip.CLIP)(**cfg)
    except TypeError as err:
        raise ConfigError(f"model config not understood by open_clip.CLIP: {err}") from err


def load_state_dict_into(model: nn.Module, wf: WeightsFile, label: str) -> None:
    """Load a state dict strictly; a mismatch is one line counting missing, unexpected and reshaped keys."""
    own = model.state_dict()
    derived = {name for name, _ in model.named_buffers()} - set(own)  # non-persistent buffers (attn_mask)
    sd = {k: v for k, v in wf.state_dict.items() if k not in derived}  # TorchScript archives keep them
    if "logit_scale" in sd and "logit_scale" in own:
        sd["logit_scale"] = sd["logit_scale"].reshape(own["logit_scale"].shape)
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    reshaped = sorted(k for k in set(own) & set(sd) if own[k].shape != sd[k].shape)
    if missing or unexpected or reshaped:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if reshaped:
            k = reshaped[0]
            parts.append(f"{len(reshaped)} of another shape (e.g. {k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)})")
        raise WeightsError(f"{wf.path} does not fit {label}: " + ", ".join(parts))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()}, strict=True)


def load_backbone(
    arch: str | Path,
    weights: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    cache_dir: str | Path | None = None,
    sha256: str | None = None,
    tokenizer: Tokenizer | None = None,
    quick_gelu: bool | None = None,
    seed: int | None = None,
) -> FrozenCLIP:
    """Build a frozen CLIP, offline.

    Args:
        arch: an open_clip architecture (``RN50``, ``ViT-B-16-quickgelu``, ...), one of the paper's spellings
            (``ViT-B/16``), or the path of a model-config JSON in open_clip's format.
        weights: ``None`` for random initialisation (tests, parameter counts); a file (OpenAI TorchScript
            archive, state dict, safetensors); or an open_clip pretrained tag (``"openai"``) looked up in
            open_clip's cache without network access.
        device, dtype: where and in which precision the model lives (OpenAI's fp16 archives are cast).
        cache_dir: open_clip's cache folder (default: ``~/.cache/clip`` and the Hugging Face hub cache).
        sha256: the digest the weights file must have; default: the published one for OpenAI archives; ``""``
            disables the check.
        tokenizer: a callable like open_clip's; default: the CLIP BPE tokenizer.
        quick_gelu: force the activation; default: from the name, the config JSON or the weights.
        seed: seed of the random initialisation (before weights are loaded).

    Raises:
        WeightsError: missing file, wrong checksum, activation mismatch, or weights that do not fit ``arch``.
        UnknownNameError: ``arch`` is neither an open_clip architecture nor a config file.
    """
    import open_clip

    preprocess: dict[str, Any] = {}
    if str(arch).endswith(".json"):
        cfg_path = Path(arch).expanduser()
        if not cfg_path.is_file():
            raise WeightsError(f"model config {cfg_path} does not exist")
        model_cfg, preprocess = _read_config(cfg_path)
        label, spec = cfg_path.stem, model_cfg
        stated = quick_gelu if quick_gelu is not None else model_cfg.get("quick_gelu")
    else:
        label = _resolve_name(str(arch))
        spec, model_cfg = label, copy.deepcopy(open_clip.get_model_config(label))
        stated = quick_gelu if quick_gelu is not None else (True if label.endswith("-quickgelu") else None)

    wf, declared, source = None, None, "the weights"
    if weights is not None:
        path = Path(weights).expanduser()
        is_file_like = path.is_file() or path.suffix in (".pt", ".pth", ".bin", ".safetensors") or "/" in str(weights)
        if not is_file_like:
            if isinstance(spec, dict):
                raise WeightsError(f"pretrained tag {weights!r} needs an open_clip architecture name, not {arch}")
            tag = str(weights)
            base = label.removesuffix("-quickgelu")
            path, expected = find_cached_pretrained(base, tag, cache_dir)
            declared = bool(open_clip.get_pretrained_cfg(base, tag).get("quick_gelu", False))
            preprocess = {k: v for k, v in open_clip.get_pretrained_cfg(base, tag).items() if k in ("mean", "std")}
            source = f"pretrained tag {tag!r}"
            wf = read_weights(path, expected_sha256=sha256 if sha256 is not None else expected)
        else:
            if not path.is_file():
                sha = openai_sha256(label) if isinstance(spec, str) else None
                hint = f": put the OpenAI file (sha256 {sha[:12]}...) there, or pass weights='openai'" if sha else ""
                raise WeightsError(f"weights file {path} does not exist{hint}")
            expected = sha256
            if expected is None and isinstance(spec, str):
                expected = openai_sha256(label) if is_torchscript_archive(path) else None
            wf = read_weights(path, expected_sha256=expected or None)
            declared = wf.quick_gelu
            if declared is None and isinstance(spec, str) and openai_sha256(label):
                logger.warning(
                    "%s: %s does not declare its activation; building %s",
                    label,
                    path.name,
                    "QuickGELU" if stated else "GELU (use the -quickgelu name for OpenAI weights)",
                )
            source = f"{path.name} ({wf.fmt})"

    use_quick_gelu = _decide_quick_gelu(label, stated, declared, source)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = build_open_clip_model(spec, use_quick_gelu)
    if wf is not None:
        load_state_dict_into(model, wf, label)
        logger.info("loaded %s weights from %s", label, wf.path)
    model = model.to(device=device, dtype=dtype)
    if model_cfg is not None:
        model_cfg["quick_gelu"] = use_quick_gelu
    if tokenizer is None:
        tokenizer = _default_tokenizer(label, spec, model)
    mean = preprocess.get("mean", OPENAI_MEAN)
    std = preprocess.get("std", OPENAI_STD)
    return FrozenCLIP(model, tokenizer, arch=label, mean=mean, std=std, model_cfg=model_cfg)


def _default_tokenizer(label: str, spec: str | dict[str, Any], model: nn.Module) -> Tokenizer:
    """The CLIP BPE tokenizer for config files; open_clip's tokenizer of a registered name (offline)."""
    import open_clip

    if isinstance(spec, dict):
        if spec.get("text_cfg", {}).get("hf_tokenizer_name"):
            raise ConfigError(f"{label}: the config names a Hugging Face tokenizer; pass tokenizer= explicitly")
        return clip_tokenizer(int(model.context_length))
    try:
        return open_clip.get_tokenizer(label)
    except Exception as err:  # a Hugging Face tokenizer that is not in the local cache
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(f"{label}: its tokenizer is not available offline ({first}); pass tokenizer=") from err


def save_backbone(clip: FrozenCLIP, weights_path: str | Path, config_path: str | Path | None = None) -> None:
    """Write a backbone as safetensors (activation in the metadata) and, optionally, its model-config JSON.

    The pair loads back with ``load_backbone(config_path, weights_path)``.
    """
    from safetensors.torch import save_file

    sd = {k: v.detach().contiguous().cpu() for k, v in clip.model.state_dict().items()}
    save_file(sd, str(weights_path), metadata={"arch": clip.arch, "quick_gelu": str(clip.quick_gelu).lower()})
    if config_path is not None:
        if clip.model_cfg is None:
            raise ConfigError(f"{clip.arch}: no model config recorded; build it with load_backbone or pass model_cfg")
        cfg = dict(clip.model_cfg, quick_gelu=clip.quick_gelu)
        Path(config_path).write_text(
            json.dumps({"model_cfg": cfg, "preprocess_cfg": {"mean": clip.mean, "std": clip.std}}, indent=2)
        )
