"""The cross-modal FiLM block of VisPrompt (docs/method.md): the context reads the image.

Notation: B images, Q query tokens (M context tokens, or C x M with class-specific context), T visual tokens,
D text width, d_v visual token width.

    c  = LN_c(ctx)                      # (B, Q, D)   queries: the context tokens (the same for every image)
    v  = LN_v(W_p vis_b)                # (B, T, D)   keys/values: the image's visual tokens
    A  = MHA(q=c, k=v, v=v)             # (B, Q, D)   num_heads heads, attention dropout
    gamma, beta = W_g A, W_b A          # (B, Q, D)   FiLM parameters read from the attended evidence
    delta = (1 + gamma) * c + beta      # (B, Q, D)   modulated context
    g  = sigmoid(w_s A + b_s)           # (B, Q, 1)   per-sample, per-token injection strength
    ctx_b = ctx + g * delta             # gated residual
    ctx_b = ctx_b + FFN(LN_f(ctx_b))    # optional (use_ffn), hidden 4D, GELU

Options (each an ablation of the paper):

* ``film_mode="global"``: gamma, beta from the mean visual token v_bar and applied to the attended evidence,
  ``delta = (1 + W_g v_bar) * A + W_b v_bar``.
* ``gate="learned"`` (above), ``"off"`` (g = 1) or ``"zero"`` (g = 0: with ``use_ffn=False`` the block is the
  identity and VisPrompt reduces to CoOp exactly).
* ``gate_lr_scale``: the learned gate's (w_s, b_s) learning rate as a multiple of the others' (its ``lr_scale``
  attribute, which :meth:`visprompt.methods.base.MethodBase.param_groups` reads).
* ``gate_scale`` (a 0-dim buffer, 1 unless a method schedules it): ``ctx_b = ctx + gate_scale * g * delta``.
  ``visprompt-plus``'s ``method.gate_schedule`` sets it from its split's kept fraction each epoch.
* ``init="default"`` (PyTorch's initialisation) or ``"identity"``: the block starts as the exact identity,
  ctx_b = ctx. W_g and W_b start at zero with W_g's bias at -1, so gamma = -1, beta = 0 and delta = 0; the FFN's
  output layer starts at zero; the gate at w_s = 0, b_s = -4 (g = sigmoid(-4) ~ 0.018). Gradients still reach
  W_g, W_b and the attention (through delta); the gate starts learning once delta moves away from 0. (Zeroing
  W_g's bias instead would leave delta = LN(ctx), whose norm is ~30x the raw context's at N(0, 0.02^2): a 0.018
  gate then still changes the context by about half its norm.)
"""

from __future__ import annotations

import torch
from torch import nn

from visprompt.errors import ConfigError

FILM_MODES = ("tokenwise", "global")
GATES = ("learned", "off", "zero")
INITS = ("default", "identity")
IDENTITY_GATE_BIAS = -4.0


def _check(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


class CrossModalFiLM(nn.Module):
    """Gated FiLM modulation of context tokens by cross-attention over an image's visual tokens.

    Args:
        width: D, the context (text) width.
        vis_dim: d_v, the visual token width.
        num_heads: attention heads (D must be divisible by it).
        dropout: attention dropout.
        film_mode: ``"tokenwise"`` or ``"global"``.
        use_ffn: add the residual feed-forward layer.
        gate: ``"learned"``, ``"off"`` (g = 1) or ``"zero"`` (g = 0).
        init: ``"default"`` or ``"identity"``.
        gate_lr_scale: the learned gate's learning-rate multiple (1: the same rate as the rest).
    """

    def __init__(
        self,
        width: int,
        vis_dim: int,
        *,
        num_heads: int = 8,
        dropout: float = 0.1,
        film_mode: str = "tokenwise",
        use_ffn: bool = True,
        gate: str = "learned",
        init: str = "default",
        gate_lr_scale: float = 1.0,
    ) -> None:
        super().__init__()
        _check("film_mode", film_mode, FILM_MODES)
        if gate_lr_scale <= 0 or (gate_lr_scale != 1.0 and gate != "learned"):
            raise ConfigError(f"gate_lr_scale must be > 0, and 1 without a learned gate; got {gate_lr_scale} "
                              f"with gate {gate!r}")  # fmt: skip
        _check("gate", gate, GATES)
        _check("init", init, INITS)
        if width % num_heads:
            raise ConfigError(f"num_heads={num_heads} must divide the text width {width}")
        self.film_mode, self.gate = film_mode, gate
        self.proj_v = nn.Linear(vis_dim, width)  # W_p
        self.ln_c = nn.LayerNorm(width)
        self.ln_v = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, num_heads, dropout=dropout, batch_first=True)
        self.film_gamma = nn.Linear(width, width)  # W_g
        self.film_beta = nn.Linear(width, width)  # W_b
        self.gate_proj = nn.Linear(width, 1) if gate == "learned" else None  # w_s, b_s
        if self.gate_proj is not None and gate_lr_scale != 1.0:
            self.gate_proj.lr_scale = float(gate_lr_scale)  # read by MethodBase.param_groups
        # a multiplier of g set by a method's schedule (not a parameter; a checkpoint carries it when scheduled)
        self.register_buffer("gate_scale", torch.tensor(1.0), persistent=False)
        self.ffn = (
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
            if use_ffn
            else None
        )
        self.last_gate: torch.Tensor | None = None  # (B, Q), detached, from the last forward
        if init == "identity":
            self._init_identity()

    def _init_identity(self) -> None:
        with torch.no_grad():
            for lin in (self.film_gamma, self.film_beta):
                lin.weight.zero_()
                lin.bias.zero_()
            self.film_gamma.bias.fill_(-1.0)  # 1 + gamma = 0: delta = 0, the block is the identity
            if self.gate_proj is not None:
                self.gate_proj.weight.zero_()
                self.gate_proj.bias.fill_(IDENTITY_GATE_BIAS)
            if self.ffn is not None:
                self.ffn[-1].weight.zero_()
                self.ffn[-1].bias.zero_()

    def _attend(self, ctx: torch.Tensor, vis: torch.Tensor, need_weights: bool) -> tuple[torch.Tensor, ...]:
        c = self.ln_c(ctx).expand(vis.shape[0], -1, -1)  # (B, Q, D)
        v = self.ln_v(self.proj_v(vis.to(ctx.dtype)))  # (B, T, D)
        a, w = self.attn(c, v, v, need_weights=need_weights, average_attn_weights=False)  # (B, Q, D), (B, H, Q, T)
        return c, v, a, w

    def forward(self, ctx: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """Image-conditioned context (B, Q, D) from the context (Q, D) and visual tokens (B, T, d_v)."""
        c, v, a, _ = self._attend(ctx, vis, need_weights=False)
        if self.film_mode == "tokenwise":
            delta = (1 + self.film_gamma(a)) * c + self.film_beta(a)  # (B, Q, D)
        else:
            v_bar = v.mean(dim=1, keepdim=True)  # (B, 1, D)
            delta = (1 + self.film_gamma(v_bar)) * a + self.film_beta(v_bar)  # (B, Q, D)
        if self.gate_proj is not None:
            g = torch.sigmoid(self.gate_proj(a))  # (B, Q, 1)
        else:
            g = a.new_full((*a.shape[:2], 1), 1.0 if self.gate == "off" else 0.0)  # (B, Q, 1)
        out = ctx + (self.gate_scale.to(g.dtype) * g) * delta  # (B, Q, D); gate_scale = 1 leaves g exactly
        if self.ffn is not None:
            out = out + self.ffn(out)
        self.last_gate = g.detach().squeeze(-1)  # (B, Q)
        return out

    @torch.no_grad()
    def attention_weights(self, ctx: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """Per-head attention of the context over the visual tokens (B, H, Q, T), for inspection (no dropout)."""
        was_training = self.attn.training
        self.attn.eval()
        try:
            return self._attend(ctx, vis, need_weights=True)[3]
        finally:
            self.attn.train(was_training)
