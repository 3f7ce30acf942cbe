"""The testbed's tiny CLIP: architecture, construction and loading of the shipped checkpoint.

An ``open_clip.CLIP`` with a small ViT (32 px images, 8 px patches, so T = 16 visual tokens plus CLS) and a
2-layer text transformer over the compact vocabulary of :mod:`visprompt.testbed.vocab`. The architecture is
written as an open_clip model-config JSON (``embed_dim``, ``vision_cfg``, ``text_cfg``, ``preprocess_cfg``)
next to the weights, so the checkpoint loads through the same path as any custom open_clip model.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from visprompt.errors import WeightsError

logger = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent / "assets"
ARCH_NAME = "testbed_tiny_clip"  # the backbone loader labels a config-file model by the file's stem
CHECKPOINT_NAME = f"{ARCH_NAME}.safetensors"
CONFIG_NAME = f"{ARCH_NAME}.json"
VOCAB_NAME = "testbed_vocab.json"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP normalisation, kept for the testbed
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class TinyClipConfig:
    """Architecture of the testbed CLIP (converted to open_clip's dicts by :meth:`to_open_clip`)."""

    vocab_size: int  # rows of the compact token embedding
    embed_dim: int = 128  # E, the joint image-text space
    image_size: int = 32  # input side in pixels
    patch_size: int = 8  # ViT patch side; T = (image_size / patch_size) ** 2
    vision_width: int = 128  # ViT width
    vision_layers: int = 4  # ViT depth
    vision_head_width: int = 32  # width per attention head (heads = width / head_width)
    context_length: int = 32  # L, text length
    text_width: int = 128  # D, text transformer width
    text_heads: int = 4  # text attention heads
    text_layers: int = 2  # text transformer depth

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.vocab_size < 4:
            raise ValueError(f"vocab_size {self.vocab_size} must hold pad, UNK, SOT and EOT")

    def to_open_clip(self) -> dict[str, Any]:
        """The open_clip config: ``{"model_cfg": ..., "preprocess_cfg": ...}`` (open_clip_config.json's format)."""
        model_cfg = {
            "embed_dim": self.embed_dim,
            "quick_gelu": False,
            "vision_cfg": {
                "image_size": self.image_size,
                "layers": self.vision_layers,
                "width": self.vision_width,
                "head_width": self.vision_head_width,
                "patch_size": self.patch_size,
            },
            "text_cfg": {
                "context_length": self.context_length,
                "vocab_size": self.vocab_size,
                "width": self.text_width,
                "heads": self.text_heads,
                "layers": self.text_layers,
            },
        }
        preprocess = {"mean": list(CLIP_MEAN), "std": list(CLIP_STD), "interpolation": "bicubic"}
        return {"model_cfg": model_cfg, "preprocess_cfg": preprocess}


def build_clip(config: dict[str, Any]) -> torch.nn.Module:
    """An ``open_clip.CLIP`` (random init) from an open_clip config (wrapped in ``model_cfg`` or bare)."""
    import open_clip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    model_cfg = config.get("model_cfg", config)
    return open_clip.CLIP(
        embed_dim=model_cfg["embed_dim"],
        vision_cfg=CLIPVisionCfg(**model_cfg["vision_cfg"]),
        text_cfg=CLIPTextCfg(**model_cfg["text_cfg"]),
        quick_gelu=model_cfg.get("quick_gelu", False),
    )


def save_weights(model: torch.nn.Module, path: Path, dtype: torch.dtype = torch.float16) -> None:
    """Write the model's state dict as safetensors in ``dtype`` (atomic: temp file, then rename)."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={"quick_gelu": "false", "arch": ARCH_NAME})
    tmp.chmod(0o644)  # a package asset: readable by everyone
    tmp.replace(path)


def load_weights(model: torch.nn.Module, path: Path) -> torch.nn.Module:
    """Load safetensors weights into ``model`` (upcast to the model's dtype); a mismatch is a WeightsError."""
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise WeightsError(f"{path}: testbed checkpoint not found (reinstall visprompt or rerun the pretraining)")
    state = load_file(str(path))
    ref = model.state_dict()
    if set(state) != set(ref) or any(state[k].shape != ref[k].shape for k in ref):
        raise WeightsError(f"{path}: tensors do not match the architecture in {CONFIG_NAME}")
    model.load_state_dict({k: v.to(ref[k].dtype) for k, v in state.items()})
    return model


def load_testbed_model(directory: str | Path | None = None, device: str | torch.device = "cpu"):
    """The pretrained tiny CLIP and its tokenizer, (open_clip.CLIP in eval mode, CompactTokenizer).

    ``directory`` holds the config JSON, vocabulary and checkpoint (default: the shipped assets).
    """
    from visprompt.testbed.vocab import CompactTokenizer

    directory = Path(directory) if directory is not None else ASSETS
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise WeightsError(f"{config_path}: testbed model config not found")
    model = build_clip(json.loads(config_path.read_text()))
    load_weights(model, directory / CHECKPOINT_NAME)
    tokenizer = CompactTokenizer.load(directory / VOCAB_NAME)
    return model.to(device).eval(), tokenizer


def load_testbed_clip(device: str | torch.device = "cpu", directory: str | Path | None = None):
    """The shipped testbed CLIP as a :class:`~visprompt.models.frozen_clip.FrozenCLIP`, through the same backbone
    loader as real weights (model-config JSON + safetensors), with its compact tokenizer."""
    from visprompt.models.backbone import load_backbone
    from visprompt.testbed.vocab import CompactTokenizer

    directory = Path(directory) if directory is not None else ASSETS
    tokenizer = CompactTokenizer.load(directory / VOCAB_NAME)
    return load_backbone(directory / CONFIG_NAME, directory / CHECKPOINT_NAME, device=device, tokenizer=tokenizer)
