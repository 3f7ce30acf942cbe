"""Contrastive pretraining of the testbed's tiny CLIP on the procedural world (CPU, wall-clock bounded).

Each step draws B fresh scenes (seeded by ``(seed, step)``, so a resumed run sees the same data), renders them
with light corruption (:data:`~visprompt.testbed.render.PRETRAIN`) and captions them. With image features
x_i and caption features t_j (unit norm) and scale s = exp(logit_scale), the loss is the symmetric InfoNCE

    L = 1/2 [ CE(s X T^T, Y) + CE(s T X^T, Y) ],   Y_ij = [caption_i == caption_j] / #{k: caption_k == caption_i}

where Y spreads the target over identical captions in the batch (short captions such as "a red object." repeat;
treating them as negatives of each other would be label noise). Half of each batch uses only two colours
(hard negatives). AdamW with linear warm-up and a cosine decay over the training progress, which is the larger of
step / max_steps and elapsed / time budget, so the schedule ends when either runs out.

Every few minutes the run writes, atomically, a usable checkpoint (fp16 safetensors + open_clip config JSON +
vocabulary) and a resumable state; ``train_log.jsonl`` holds one line per logging interval.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from visprompt.errors import DataError
from visprompt.testbed.model import (
    CHECKPOINT_NAME,
    CLIP_MEAN,
    CLIP_STD,
    CONFIG_NAME,
    VOCAB_NAME,
    TinyClipConfig,
    build_clip,
    save_weights,
)
from visprompt.testbed.render import PRETRAIN, render
from visprompt.testbed.vocab import CompactTokenizer
from visprompt.testbed.world import captions, sample_scenes

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainConfig:
    """Pretraining hyperparameters (the model architecture is :class:`TinyClipConfig`)."""

    seed: int = 0  # data and initialisation seed
    batch_size: int = 128  # B
    lr: float = 1e-3  # peak AdamW learning rate
    weight_decay: float = 0.1  # on matrices only (not on norms, biases, embeddings, logit scale)
    warmup_steps: int = 300
    max_steps: int = 3500  # length of the schedule
    time_budget_min: float = 180.0  # hard wall-clock cap for the whole run (resumes included)
    save_every_min: float = 4.0  # checkpoint interval
    log_every: int = 25  # steps between log lines
    hard_negative_frac: float = 0.5  # fraction of each batch drawn from two colours
    threads: int = 1  # torch intra-op threads (one is far cheaper than two on a shared, oversubscribed CPU)
    workers: int = 1  # rendering processes (0: render in the training process)

    def __post_init__(self) -> None:
        if self.batch_size < 2 or self.max_steps < 1 or self.time_budget_min <= 0:
            raise ValueError("batch_size >= 2, max_steps >= 1 and time_budget_min > 0 are required")


class WorldBatches(torch.utils.data.IterableDataset):
    """Infinite stream of (images uint8 (B, 3, H, W), tokens (B, L)) batches, one per step from ``start``."""

    def __init__(self, tokenizer: CompactTokenizer, cfg: PretrainConfig, image_size: int, start: int = 0) -> None:
        self.tokenizer, self.cfg, self.image_size, self.start = tokenizer, cfg, image_size, start

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.cfg.seed, step])
        scenes = sample_scenes(
            rng, self.cfg.batch_size, image_size=self.image_size, hard_negative_frac=self.cfg.hard_negative_frac
        )
        images = torch.from_numpy(render(scenes, PRETRAIN, image_size=self.image_size)).permute(0, 3, 1, 2)
        return images, self.tokenizer(captions(rng, scenes))  # (B, 3, H, W), (B, L)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if torch.utils.data.get_worker_info() is not None:
            torch.set_num_threads(1)
        step = self.start
        while True:
            yield self.batch(step)
            step += 1


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float normalised with CLIP's mean and std."""
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)  # (1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor, tokens: torch.Tensor):
    """Symmetric InfoNCE with identical captions as shared positives; returns (loss, image->text accuracy)."""
    image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    logits = logit_scale.exp() * image @ text.t()  # (B, B)
    same = (tokens[:, None, :] == tokens[None, :, :]).all(-1).float()  # (B, B) identical captions
    target = same / same.sum(1, keepdim=True)
    loss = 0.5 * (
        torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
        + torch.sum(-target * F.log_softmax(logits.t(), 1), 1).mean()
    )
    acc = same[torch.arange(len(same)), logits.argmax(1)].mean()
    return loss, acc


def encode_text_trimmed(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(tokens)`` computed on the first L' = (longest text in the batch) positions only.

    Exact: under the causal mask no position attends to a later one, so the padding after the last EOT never
    reaches the pooled (EOT) position. Saves the text tower's work on padding.
    """
    length = int((tokens > 0).sum(1).max())  # L'
    x = model.token_embedding(tokens[:, :length]) + model.positional_embedding[:length]  # (B, L', D)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = x[torch.arange(len(x)), tokens[:, :length].argmax(-1)]  # (B, D) at the EOT (the max id)
    return x @ model.text_projection  # (B, E)


def _lr(cfg: PretrainConfig, step: int, progress: float) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _optimizer(model: torch.nn.Module, cfg: PretrainConfig) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)


def _save(out: Path, model, opt, tokenizer, arch: TinyClipConfig, cfg: PretrainConfig, meta: dict) -> None:
    """Write a usable checkpoint (fp16 weights, config, vocabulary, meta) and a resumable state, atomically."""
    save_weights(model, out / CHECKPOINT_NAME)
    (out / CONFIG_NAME).write_text(json.dumps(arch.to_open_clip(), indent=2) + "\n")
    tokenizer.save(out / VOCAB_NAME)
    meta = {**meta, "pretrain_config": asdict(cfg), "architecture": asdict(arch)}
    tmp = out / "pretrain_meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    tmp.replace(out / "pretrain_meta.json")
    tmp = out / "state.pt.tmp"
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "meta": meta}, tmp)
    tmp.replace(out / "state.pt")
    logger.info("checkpoint at step %d (%.1f min, %d samples)", meta["steps"], meta["minutes"], meta["samples"])


def pretrain(out: Path, tokenizer: CompactTokenizer, cfg: PretrainConfig, arch: TinyClipConfig) -> dict:
    """Train (or resume from ``out/state.pt``) until the step or time budget runs out; returns the final meta."""
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = build_clip(arch.to_open_clip())
    opt = _optimizer(model, cfg)
    meta = {"steps": 0, "samples": 0, "minutes": 0.0, "loss": None, "acc": None, "segments": []}
    if (out / "state.pt").is_file():
        try:  # tensors and plain values only, as the engine's resume state
            state = torch.load(out / "state.pt", map_location="cpu", weights_only=True)
        except Exception as exc:  # torch's advice to retry with weights_only=False is never ours
            raise DataError(
                f"{out / 'state.pt'}: not a pretraining state visprompt wrote ({type(exc).__name__}); delete it "
                "to start afresh"
            ) from None
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        meta.update({k: state["meta"].get(k, meta[k]) for k in meta})
        logger.info("resuming at step %d (%.1f min used)", meta["steps"], meta["minutes"])
    # each start or resume, with the settings it ran under (a resumed run may change batch size, budget, ...)
    meta["segments"] = [
        *meta["segments"],
        {"start_step": meta["steps"], "start_minutes": meta["minutes"], **asdict(cfg)},
    ]
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("tiny CLIP: %d parameters; config %s", n_params, asdict(cfg))
    meta["parameters"] = n_params
    loader = torch.utils.data.DataLoader(
        WorldBatches(tokenizer, cfg, arch.image_size, start=meta["steps"]),
        batch_size=None,
        num_workers=1,
        prefetch_factor=4,
    )
    budget_s, used_s = cfg.time_budget_min * 60, meta["minutes"] * 60
    t0 = last_save = time.time()
    log = (out / "train_log.jsonl").open("a")
    model.train()
    for images, tokens in loader:
        step, elapsed = meta["steps"], used_s + time.time() - t0
        if step >= cfg.max_steps or elapsed >= budget_s:
            break
        lr = _lr(cfg, step, max(step / cfg.max_steps, elapsed / budget_s))
        for group in opt.param_groups:
            group["lr"] = lr
        image_features = model.encode_image(normalise(images))  # (B, E)
        text_features = encode_text_trimmed(model, tokens)  # (B, E)
        loss, acc = contrastive_loss(image_features, text_features, model.logit_scale, tokens)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        meta.update(steps=step + 1, samples=meta["samples"] + len(tokens), loss=loss.item(), acc=acc.item())
        meta["minutes"] = (used_s + time.time() - t0) / 60
        if step % cfg.log_every == 0:
            line = {k: meta[k] for k in ("steps", "samples", "minutes", "loss", "acc")}
            line.update(lr=lr, logit_scale=model.logit_scale.exp().item())
            log.write(json.dumps(line) + "\n")
            log.flush()
            logger.info(
                "step %d loss %.3f acc %.3f lr %.2e (%.1f min)", step, loss.item(), acc.item(), lr, meta["minutes"]
            )
        if time.time() - last_save >= cfg.save_every_min * 60:
            _save(out, model, opt, tokenizer, arch, cfg, meta)
            last_save = time.time()
    model.eval()
    _save(out, model, opt, tokenizer, arch, cfg, meta)
    log.close()
    return meta
