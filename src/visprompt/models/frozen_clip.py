"""The frozen CLIP wrapper: the text-tower pieces prompt learners need, and joint-space visual tokens.

Notation: B images, E joint embedding width, D text width, T visual tokens, L text tokens.

:class:`FrozenCLIP` wraps an open_clip model: every parameter has ``requires_grad=False`` and the model stays
in eval mode whatever ``.train()`` is called with. Its :meth:`FrozenCLIP.encode_image` returns the pooled image
embedding and the visual tokens in the joint space (docs/method.md):

* ViT: ``ln_post(x) @ proj`` on the CLS and patch tokens, T = 1 + (H/p)(W/p); the CLS token is the pooled one.
* ModifiedResNet: the attention pool's value and output projections applied to each cell of the final grid
  (plus its positional embedding), ``c_proj(v_proj(x_hw + pos_hw))``, after the pooled embedding: T = 1 + HW.
  Since the pool's output is ``c_proj`` of an attention-weighted mean of ``v_proj`` values (the softmax
  weights sum to one and ``c_proj`` is affine), the grid tokens are exactly the per-cell terms of that mean.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from visprompt.errors import ConfigError

logger = logging.getLogger(__name__)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

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
