"""The frozen CLIP backbone: loading open_clip models offline and encoding images into joint-space tokens.

Notation: B images, E joint embedding width, D text width, T visual tokens, L text tokens.

:func:`load_backbone` builds an open_clip architecture (a name such as ``RN50``, ``ViT-B/16``,
``ViT-B-16-quickgelu``, or a model-config JSON in open_clip's format) and fills it from a weights file or from
open_clip's cache, never from the network. The activation is settled before the model is built, because
OpenAI's weights need QuickGELU and a GELU model loads them without complaint but computes wrong features:

* the weights may declare it (an OpenAI TorchScript archive or a file with the published OpenAI checksum is
  QuickGELU; a safetensors file may carry ``quick_gelu`` in its metadata; a pretrained tag says it);
* the request may state it (a ``-quickgelu`` name, a config JSON's ``quick_gelu`` key, or ``quick_gelu=``);
* a bare name (``RN50``) follows the weights; a stated request that contradicts the weights is a
  :class:`~visprompt.errors.WeightsError`.

:class:`FrozenCLIP` wraps the model: every parameter has ``requires_grad=False`` and the model stays in eval
mode whatever ``.train()`` is called with. Its :meth:`FrozenCLIP.encode_image` returns the pooled image
embedding and the visual tokens in the joint space (DESIGN.md section 2):

* ViT: ``ln_post(x) @ proj`` on the CLS and patch tokens, T = 1 + (H/p)(W/p); the CLS token is the pooled one.
* ModifiedResNet: the attention pool's value and output projections applied to each cell of the final grid
  (plus its positional embedding), ``c_proj(v_proj(x_hw + pos_hw))``, after the pooled embedding: T = 1 + HW.
  Since the pool's output is ``c_proj`` of an attention-weighted mean of ``v_proj`` values, the grid tokens
  are exactly the per-cell terms of that mean.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from visprompt.errors import ConfigError, UnknownNameError, WeightsError
from visprompt.models.weights import (
    WeightsFile,
    find_cached_pretrained,
    is_torchscript_archive,
    openai_sha256,
    read_weights,
)

logger = logging.getLogger(__name__)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

# The paper's backbones, spelled as CLIP/CoOp spell them, mapped to open_clip's architecture names.
PAPER_ARCHS = {
    "RN50": "RN50",
    "RN101": "RN101",
    "RN50x4": "RN50x4",
    "RN50x16": "RN50x16",
    "ViT-B/32": "ViT-B-32",
    "ViT-B/16": "ViT-B-16",
}

Tokenizer = Callable[[list[str]], torch.Tensor]


@functools.lru_cache(maxsize=4)
def clip_tokenizer(context_length: int = 77) -> Tokenizer:
    """open_clip's byte-pair CLIP tokenizer (its vocabulary ships inside the package: no download)."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length)


def _uses_quick_gelu(model: nn.Module) -> bool:
    from open_clip.transformer import QuickGELU

    return any(isinstance(m, QuickGELU) for m in model.modules())


class FrozenCLIP(nn.Module):
    """A frozen open_clip CLIP with the pieces prompt learners need.

    Build with :func:`load_backbone` or :meth:`from_model`. Attributes: ``arch`` (a label), ``embed_dim`` (E),
    ``width`` (text width D), ``context_length``, ``image_size``, ``mean``/``std`` (input normalisation),
    ``logit_scale`` (the model's *log* temperature, a 0-dim tensor; logits use ``logit_scale.exp()``),
    ``quick_gelu`` and ``tokenizer``.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Tokenizer,
        *,
        arch: str,
        mean: Sequence[float] = OPENAI_MEAN,
        std: Sequence[float] = OPENAI_STD,
        model_cfg: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.arch = arch
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.model_cfg = model_cfg
        self.quick_gelu = _uses_quick_gelu(model)
        self.model.requires_grad_(False)  # explicit freezing: the backbone contributes no trainable parameter
        self.model.eval()
        self._warned_tokens = False

    @classmethod
    def from_model(
        cls, model: nn.Module, tokenizer: Tokenizer | None = None, *, arch: str, **kwargs: Any
    ) -> FrozenCLIP:
        """Wrap an already built open_clip model (``CLIP`` or ``CustomTextCLIP``) and its tokenizer.

        The tokenizer must be callable like open_clip's, ``tok(list[str]) -> LongTensor (N, context_length)``,
        with the EOT id the largest id of each row (CLIP's convention). Defaults to the CLIP BPE tokenizer.
        """
        if tokenizer is None:
            tokenizer = clip_tokenizer(int(getattr(model, "context_length", 77)))
        return cls(model, tokenizer, arch=arch, **kwargs)

    def train(self, mode: bool = True) -> FrozenCLIP:
        """Set the wrapper's flag only: the CLIP itself always stays in eval mode (BatchNorm, dropout)."""
        self.training = mode
        self.model.eval()
        return self

    # -- text tower pieces ---------------------------------------------------------------------------------

    @property
    def text_tower(self) -> nn.Module:
        """The module holding the text transformer (the CLIP itself, or ``model.text`` for CustomTextCLIP)."""
        return getattr(self.model, "text", self.model)

    @property
    def token_embedding(self) -> nn.Embedding:
        return self.text_tower.token_embedding

    @property
    def positional_embedding(self) -> torch.Tensor:
        return self.text_tower.positional_embedding

    @property
    def transformer(self) -> nn.Module:
        return self.text_tower.transformer

    @property
    def ln_final(self) -> nn.Module:
        return self.text_tower.ln_final

    @property
    def text_projection(self) -> nn.Module | torch.Tensor | None:
        return self.text_tower.text_projection

    @property
    def text_pool_type(self) -> str:
        tower = self.text_tower
        return getattr(tower, "text_pool_type", getattr(tower, "pool_type", "argmax"))

    @property
    def causal(self) -> bool:
        """Whether the text transformer is causal (required by the truncated and prefix-shared paths)."""
        return getattr(self.text_tower, "attn_mask", None) is not None

    @property
    def attn_mask(self) -> torch.Tensor | None:
        """The text tower's additive causal mask (L, L) (-inf above the diagonal), or None if bidirectional."""
        return getattr(self.text_tower, "attn_mask", None)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.detach().reshape(())

    @property
    def embed_dim(self) -> int:
        return int(self.model.visual.output_dim)

    @property
    def width(self) -> int:
        return int(self.transformer.width)

    @property
    def context_length(self) -> int:
        return int(self.positional_embedding.shape[0])

    @property
    def image_size(self) -> int | tuple[int, int]:
        size = self.model.visual.image_size
        if isinstance(size, (tuple, list)):
            return int(size[0]) if size[0] == size[1] else (int(size[0]), int(size[1]))
        return int(size)

    @property
    def device(self) -> torch.device:
        return self.positional_embedding.device

    @property
    def dtype(self) -> torch.dtype:
        return self.positional_embedding.dtype

    def text_unsupported_reason(self) -> str | None:
        """Why prompt learning cannot run on this text tower, or None when it can."""
        tower = self.text_tower
        if not hasattr(tower, "token_embedding") or not hasattr(tower, "transformer"):
            return f"{self.arch}: prompt learning needs open_clip's own text transformer (got {type(tower).__name__})"
        if getattr(tower, "cls_emb", None) is not None:
            return f"{self.arch}: text towers with an appended class token (CoCa) are not supported"
        return None

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Token ids (N, L) on the model's device."""
        return self.tokenizer(list(texts)).to(self.device)

    def pool_index(self, ids: torch.Tensor) -> torch.Tensor:
        """Position (N,) of the token each sequence's feature is read from, following the tower's pooling."""
        kind = self.text_pool_type
        if kind == "argmax":
            return ids.argmax(dim=-1)  # EOT has the largest id
        if kind == "eos":
            eos_id = getattr(self.text_tower, "text_eos_id", getattr(self.text_tower, "eos_id", None))
            return (ids == eos_id).int().argmax(dim=-1)
        if kind == "first":
            return torch.zeros(ids.shape[0], dtype=torch.long, device=ids.device)
        if kind == "last":
            return torch.full((ids.shape[0],), ids.shape[1] - 1, dtype=torch.long, device=ids.device)
        raise ConfigError(f"{self.arch}: text pooling {kind!r} has no token position; prompt learning needs one")

    def project_text(self, x: torch.Tensor) -> torch.Tensor:
        """Apply ``ln_final`` and the text projection to pooled hidden states (..., D) -> (..., E)."""
        x = self.ln_final(x)
        proj = self.text_projection
        if proj is None:
            return x
        if isinstance(proj, nn.Module):
            return proj(x)
        return x @ proj

    @torch.no_grad()
    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """open_clip's own text encoder on token ids (N, L) -> (N, E), unnormalised."""
        return self.model.encode_text(ids.to(self.device))

    # -- image side ----------------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled embedding (B, E) and visual tokens (B, T, E), both in the joint space, unnormalised."""
        from open_clip.modified_resnet import ModifiedResNet
        from open_clip.transformer import VisionTransformer

        visual = self.model.visual
        x = images.to(device=self.device, dtype=self.dtype)
        if isinstance(visual, VisionTransformer) and _plain_vit(visual):
            tokens = self._vit_tokens(visual, x)  # (B, T, E)
            pooled = tokens[:, 0] if visual.pool_type == "tok" else tokens[:, 1:].mean(dim=1)
            return pooled, tokens
        if isinstance(visual, ModifiedResNet):
            return self._resnet_tokens(visual, x)
        if not self._warned_tokens:
            logger.warning(
                "%s: no visual tokens for a %s tower; using the pooled embedding (T=1)",
                self.arch,
                type(visual).__name__,
            )
            self._warned_tokens = True
        pooled = self.model.encode_image(x)
        return pooled, pooled[:, None]  # (B, 1, E)

    @staticmethod
    def _vit_tokens(visual: nn.Module, x: torch.Tensor) -> torch.Tensor:
        x = visual.conv1(x)  # (B, W, h, w)
        x = x.flatten(2).transpose(1, 2)  # (B, hw, W)
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # (B, 1, W)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)  # (B, T, W)
        x = visual.ln_pre(visual.patch_dropout(x))
        x = visual.transformer(x)
        return visual.ln_post(x) @ visual.proj  # (B, T, E)

    @staticmethod
    def _resnet_tokens(visual: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = visual.stem(x)
        x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))  # (B, C', h, w)
        pool = visual.attnpool
        pooled = pool(x)  # (B, E)
        grid = x.flatten(2).transpose(1, 2)  # (B, hw, C')
        grid = grid + pool.positional_embedding[1:].to(grid.dtype)  # (B, hw, C')
        tokens = pool.c_proj(pool.v_proj(grid))  # (B, hw, E)
        return pooled, torch.cat([pooled[:, None], tokens], dim=1)  # (B, T, E)


def _plain_vit(visual: nn.Module) -> bool:
    return (
        visual.attn_pool is None
        and not visual.final_ln_after_pool
        and visual.pool_type in ("tok", "avg")
        and visual.proj is not None
    )


# -- loading -------------------------------------------------------------------------------------------------


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


def _build(name_or_cfg: str | dict[str, Any], quick_gelu: bool) -> nn.Module:
    import open_clip

    if isinstance(name_or_cfg, str):
        name = name_or_cfg
        if quick_gelu and not name.endswith("-quickgelu") and f"{name}-quickgelu" in open_clip.list_models():
            name = f"{name}-quickgelu"
        return open_clip.create_model(name, pretrained=None, force_quick_gelu=quick_gelu)
    cfg = dict(name_or_cfg, quick_gelu=quick_gelu)
    custom_text = cfg.pop("custom_text", False)
    try:
        return (open_clip.CustomTextCLIP if custom_text else open_clip.CLIP)(**cfg)
    except TypeError as err:
        raise ConfigError(f"model config not understood by open_clip.CLIP: {err}") from err


def load_state_dict_into(model: nn.Module, wf: WeightsFile, label: str) -> None:
    """Load a state dict strictly; a mismatch is one line counting missing, unexpected and reshaped keys."""
    sd = dict(wf.state_dict)
    own = model.state_dict()
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
        model = _build(spec, use_quick_gelu)
    if wf is not None:
        load_state_dict_into(model, wf, label)
        logger.info("loaded %s weights from %s", label, wf.path)
    model = model.to(device=device, dtype=dtype)
    if model_cfg is not None:
        model_cfg["quick_gelu"] = use_quick_gelu
    if tokenizer is None:
        tokenizer = open_clip.get_tokenizer(label) if isinstance(spec, str) else clip_tokenizer(model.context_length)
    mean = preprocess.get("mean", OPENAI_MEAN)
    std = preprocess.get("std", OPENAI_STD)
    return FrozenCLIP(model, tokenizer, arch=label, mean=mean, std=std, model_cfg=model_cfg)


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
