"""Benchmark: one VisPrompt training step against the authors' 77-token forward and a CoOp step; the OT share.

Notation: B images, C classes, M context tokens, K = 1 + M prefix tokens, S class-name suffix tokens, L = 77.

Model: open_clip's RN50 (ModifiedResNet image tower at 224 px, T = 50 visual tokens of width E = 1024; text
transformer of 12 layers, width D = 512, 8 heads), random weights, QuickGELU, float32, C = 100 CIFAR-100 class
names, M = 16 context tokens. Steps compared, each side by side in one process:

* ``naive``: the same VisPrompt model (the same learner object, so the same parameters and FiLM block) with the
  authors' forward pass (the CoCoOp code VisPrompt builds on): for each image, all C prompts
  ``[SOS] [ctx_b] [name] [.] [EOT] [pad]`` through all L = 77 tokens of open_clip's text transformer, then the
  logits of that image. B x C x 77 token positions.
* ``visprompt``: the library's step, :class:`~visprompt.models.PromptClassifier` on the exact prefix-shared text
  path (docs/performance.md), classes grouped by name length: B x K + B x sum_c S_c token positions.
* ``coop``: the library's CoOp step (one context for every image: K + C x S positions); ``coop-77`` (with
  ``--coop77``): CoOp as its authors run it, C x 77 positions.

Columns ``naive/x`` (speed-up), ``mem/naive`` and the parity columns compare a step with its own 77-token
counterpart (visprompt with naive, coop with coop-77); ``x coop`` is the CPU-time ratio to the library's CoOp step.

What a step holds: from the frozen image encoder's cached outputs (pooled (B, E), tokens (B, T, E); shared by
every side and cached by the engine when augmentation is off) to the prompt learner, the text encoder, the
logits, VisPrompt's split loss (alpha CE on a fixed clean mask + (1 - alpha) GCE; CE for CoOp), backward and an
SGD step. The OT split is excluded (measured on its own below). The frozen image encoder's forward (no grad) is
timed separately: with augmentation on, every method adds it to every step (column ``+enc``).

The naive step keeps ~2.6 GB of activations per image at C = 100, so it runs at ``--naive-batch`` images
(default 2); the library's steps also run at ``--batch`` (16, the paper's), where the naive one (~43 GB) does
not fit in this machine's memory. Parity: logits (and their cosines, logits / exp(logit_scale)) and the
gradients of every learner parameter, from the same weights and the same dropout masks (same seed).

OT share (the paper's settings: N = 1600 = 16 shots x 100 classes, B = 16, eps = 0.01, tol 1e-6): the library's
``OTSelection`` split of one mini-batch (on CLIP-like probabilities with 50% symmetric label noise, and on the
model's own probabilities) against the training step at B = 16; one epoch = N / B steps; and one full-set split
(N = 1600) against that epoch.

    PYTHONPATH=src python benchmarks/train_step.py             # naive at B=2, 2 repeats (~4-5 min here)
    PYTHONPATH=src python benchmarks/train_step.py --quick     # naive at B=1, 1 repeat
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from _common import class_names, header, markdown_table, peak_memory_mb, random_clip, timed
from torch import nn

from visprompt.engine.optim import build_optimizer
from visprompt.methods.objective import SplitLoss
from visprompt.methods.selection import OTSelection
from visprompt.models import CoOpPromptLearner, FrozenCLIP, PromptClassifier, VisPromptLearner
from visprompt.models.text import TextEncoder
from visprompt.selection.ot import ot_split

N_CTX = 16
VISPROMPT_LOSS = SplitLoss(clean="ce", noisy="gce", alpha=0.5, q=0.5)  # the visprompt preset
COOP_LOSS = SplitLoss(clean="ce", noisy="none", alpha=1.0)  # the coop preset
REFERENCE = {"visprompt": "naive", "coop": "coop-77"}  # each fast step's 77-token counterpart


class NaivePrompts(nn.Module):
    """A prompt learner's model run as its authors' code does: every prompt through all L tokens, per context.

    CoOp/CoCoOp-style assembly from token ids of ``"X X ... X <name>."``: the SOS embedding, the (per-image)
    context, then the embeddings of the name, the full stop, EOT and padding. Written independently of
    :mod:`visprompt.models.text` and :mod:`visprompt.models.context`.
    """

    def __init__(self, clip: FrozenCLIP, learner: nn.Module, classnames: list[str]) -> None:
        super().__init__()
        self.clip, self.learner = clip, learner
        n_ctx = learner.context.n_ctx
        texts = [" ".join(["X"] * n_ctx) + " " + name.replace("_", " ") + "." for name in classnames]
        ids = clip.tokenize(texts)  # (C, L)
        with torch.no_grad():
            embeds = clip.token_embedding(ids)  # (C, L, D)
        self.register_buffer("sos", embeds[:, :1], persistent=False)  # (C, 1, D)
        self.register_buffer("suffix", embeds[:, 1 + n_ctx :], persistent=False)  # (C, L - 1 - M, D)
        self.register_buffer("eot", ids.argmax(dim=-1), persistent=False)  # (C,)

    def contexts(self, pooled: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """One context per image (B, M, D) for VisPrompt; the shared one (1, M, D) for CoOp."""
        if getattr(self.learner, "per_image", False):
            return self.learner.conditioned_context(pooled, tokens)
        return self.learner.context.ctx[None]

    def text_features(self, ctx: torch.Tensor) -> torch.Tensor:
        """Features (C, E) of the C prompts around one context (M, D), all L tokens."""
        clip, n_cls = self.clip, self.sos.shape[0]
        x = torch.cat([self.sos, ctx.expand(n_cls, -1, -1), self.suffix], dim=1)  # (C, L, D)
        x = clip.transformer(x + clip.positional_embedding, attn_mask=clip.attn_mask)  # (C, L, D)
        return clip.project_text(x[torch.arange(n_cls), self.eot])  # (C, E) at the EOT tokens

    def forward(self, pooled: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        scale = self.clip.logit_scale.exp()
        images = F.normalize(pooled, dim=-1)  # (B, E)
        ctxs = self.contexts(pooled, tokens)
        if ctxs.shape[0] == 1:
            return scale * images @ F.normalize(self.text_features(ctxs[0]), dim=-1).T  # (B, C)
        rows = [scale * f @ F.normalize(self.text_features(c), dim=-1).T for f, c in zip(images, ctxs, strict=True)]
        return torch.stack(rows)  # (B, C)


def token_positions(name: str, learner: nn.Module, batch: int, n_cls: int, clip: FrozenCLIP) -> int:
    """Token positions the text transformer runs per step (the library's steps: as its text encoder counts them)."""
    contexts = batch if name.startswith("visprompt") or name == "naive" else 1
    if name in ("naive", "coop-77"):
        return contexts * n_cls * clip.context_length
    enc = TextEncoder(clip, "auto", learner.prefix_len)
    return enc.positions(learner.pool_index, contexts, learner.prefix_len)


def make_step(model, loss: SplitLoss, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor]):
    """One training step on cached features: logits, split loss, backward, SGD update."""

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        logits = model(batch["pooled"], batch["tokens"])  # (B, C)
        loss(logits, batch["labels"], batch["clean"])[0].backward()
        optimizer.step()

    return step


def logits_and_grads(model, params: list[nn.Parameter], loss: SplitLoss, batch: dict, seed: int):
    """Logits (B, C) and parameter gradients of one forward/backward (no update) under a fixed dropout seed."""
    for p in params:
        p.grad = None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        logits = model(batch["pooled"], batch["tokens"])
        loss(logits, batch["labels"], batch["clean"])[0].backward()
    grads = [p.grad.detach().clone() for p in params]
    for p in params:
        p.grad = None
    return logits.detach(), grads


def parity(a: tuple, b: tuple, scale: float) -> dict[str, float]:
    (la, ga), (lb, gb) = a, b
    g_max = max(float(g.abs().max()) for g in ga)
    return {
        "max|dlogit|": float((la - lb).abs().max()),
        "max|dcos|": float((la - lb).abs().max()) / scale,
        "grad rel": max(float((x - y).abs().max()) for x, y in zip(ga, gb, strict=True)) / g_max,
    }


def clip_like_probs(n: int, c: int, seed: int, noise: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) probabilities softmax(z), z ~ N(0, 1.5^2) + 3 on the true class; labels with symmetric noise."""
    g = torch.Generator().manual_seed(seed)
    true = torch.arange(c).repeat(n // c + 1)[:n]  # (N,) balanced classes, like a K-shot set
    z = 1.5 * torch.randn(n, c, generator=g)  # (N, C)
    z[torch.arange(n), true] += 3.0
    flip = torch.rand(n, generator=g) < noise
    labels = torch.where(flip, torch.randint(0, c, (n,), generator=g), true)
    return z.softmax(dim=1), labels


def bench_steps(
    args: argparse.Namespace, clip: FrozenCLIP, feats: dict[str, torch.Tensor], enc: dict[int, tuple[float, float]]
) -> list[dict]:
    names = class_names(args.classes)
    torch.manual_seed(0)
    vis = VisPromptLearner(clip, names, n_ctx=N_CTX)
    coop = CoOpPromptLearner(clip, names, n_ctx=N_CTX)
    models = {
        "visprompt": (PromptClassifier(clip, vis).logits_from_features, vis, VISPROMPT_LOSS),
        "naive": (NaivePrompts(clip, vis, names), vis, VISPROMPT_LOSS),
        "coop": (PromptClassifier(clip, coop).logits_from_features, coop, COOP_LOSS),
        "coop-77": (NaivePrompts(clip, coop, names), coop, COOP_LOSS),
    }
    for _, learner, _ in models.values():
        learner.train()
    scale = float(clip.logit_scale.exp())
    plan = [(args.naive_batch, ["naive", "visprompt", "coop"] + (["coop-77"] if args.coop77 else []))]
    if args.batch != args.naive_batch:
        plan.append((args.batch, ["visprompt", "coop"]))
    rows = []
    for batch_size, sides in plan:
        batch = {k: v[:batch_size] for k, v in feats.items()}
        enc_cpu = enc[batch_size][1]
        outs = {}  # logits and gradients of every side from the same weights, before any update
        compared = {n for n in sides if REFERENCE.get(n) in sides}  # sides with their reference in this batch
        for name in compared | {REFERENCE[n] for n in compared}:
            model, learner, loss = models[name]
            outs[name] = logits_and_grads(model, [p for p in learner.parameters() if p.requires_grad], loss, batch, 1)
        for name in sides:
            model, learner, loss = models[name]
            params = [p for p in learner.parameters() if p.requires_grad]
            ref_name = REFERENCE.get(name)
            step = make_step(model, loss, build_optimizer(params, lr=2e-3), batch)
            mb = peak_memory_mb(step)  # also the warm-up
            wall, cpu = timed(step, args.repeats)
            row = {
                "B": batch_size,
                "step": name,
                "tokens": token_positions(name, learner, batch_size, args.classes, clip),
                "wall s": wall,
                "cpu s": cpu,
                "peak MB": mb,
                "+enc cpu s": cpu + enc_cpu,
            }
            if ref_name in outs:
                row.update(parity(outs[name], outs[ref_name], scale))
            rows.append(row)
            print(f"  B={batch_size} {name}: cpu {cpu:.2f} s, wall {wall:.2f} s, {mb:.0f} MB", flush=True)
        base = {r["step"]: r for r in rows if r["B"] == batch_size}
        for row in rows:
            if row["B"] != batch_size:
                continue
            ref = base.get(REFERENCE.get(row["step"], row["step"]))  # its own 77-token counterpart (or itself)
            if ref is not None and ref["step"] in REFERENCE.values():
                row["naive/x"] = ref["cpu s"] / row["cpu s"]
                row["naive/x wall"] = ref["wall s"] / row["wall s"]
                row["mem/naive"] = row["peak MB"] / ref["peak MB"]
            row["x coop"] = row["cpu s"] / base["coop"]["cpu s"]
            row["x coop +enc"] = row["+enc cpu s"] / base["coop"]["+enc cpu s"]
    return rows


def bench_ot(args: argparse.Namespace, step_cpu: float, model_probs: torch.Tensor) -> list[dict]:
    """OT split cost at the paper's settings against the training step (CPU seconds) at B = 16."""
    selector = OTSelection()  # the visprompt preset: mini-batch scope, -log p, eps 0.01, tol 1e-6
    n_cls, batch, n = args.classes, args.batch, args.shots * args.classes
    steps_per_epoch = n // batch
    epoch_cpu = steps_per_epoch * step_cpu
    rows = []
    problems = {
        "mini-batch, CLIP-like p": [clip_like_probs(batch, n_cls, seed) for seed in range(args.ot_problems)],
        "mini-batch, model p": [(model_probs, torch.randint(0, n_cls, (model_probs.shape[0],)))],
    }
    for kind, items in problems.items():
        cpus, iters = [], []
        for probs, labels in items:
            selector.select(probs, labels)  # warm-up
            cpus.append(timed(lambda p=probs, y=labels: selector.select(p, y), args.repeats)[1])
            iters.append(ot_split(probs, labels).stats["iterations"])
        med, worst = statistics.median(cpus), max(cpus)
        rows.append(
            {
                "OT problem": kind,
                "N": items[0][0].shape[0],
                "problems": len(items),
                "iters (median)": statistics.median(iters),
                "OT cpu s": med,
                "max cpu s": worst,
                "vs step": med / step_cpu,
                "share of epoch": med / (step_cpu + med),
                "share (worst)": worst / (step_cpu + worst),
            }
        )
    probs, labels = clip_like_probs(n, n_cls, seed=100)
    selector.select(probs, labels)
    full_cpu = timed(lambda: selector.select(probs, labels), args.repeats)[1]
    rows.append(
        {
            "OT problem": "full set, CLIP-like p",
            "N": n,
            "problems": 1,
            "iters (median)": ot_split(probs, labels).stats["iterations"],
            "OT cpu s": full_cpu,
            "max cpu s": full_cpu,
            "vs step": full_cpu / step_cpu,
            "share of epoch": full_cpu / (epoch_cpu + full_cpu),
        }
    )
    return rows


STEP_COLUMNS = [
    "B",
    "step",
    "tokens",
    "wall s",
    "cpu s",
    "naive/x",
    "naive/x wall",
    "x coop",
    "+enc cpu s",
    "x coop +enc",
    "peak MB",
    "mem/naive",
    "max|dlogit|",
    "max|dcos|",
    "grad rel",
]
STEP_FORMATS = {
    "wall s": "{:.3f}",
    "cpu s": "{:.3f}",
    "naive/x": "{:.1f}x",
    "naive/x wall": "{:.1f}x",
    "x coop": "{:.2f}",
    "+enc cpu s": "{:.3f}",
    "x coop +enc": "{:.2f}",
    "peak MB": "{:.0f}",
    "mem/naive": "{:.3f}",
    "max|dlogit|": "{:.1e}",
    "max|dcos|": "{:.1e}",
    "grad rel": "{:.1e}",
}
OT_COLUMNS = [
    "OT problem",
    "N",
    "problems",
    "iters (median)",
    "OT cpu s",
    "max cpu s",
    "vs step",
    "share of epoch",
    "share (worst)",
]
OT_FORMATS = {
    "OT cpu s": "{:.4f}",
    "max cpu s": "{:.4f}",
    "vs step": "{:.1%}",
    "share of epoch": "{:.2%}",
    "share (worst)": "{:.2%}",
    "iters (median)": "{:g}",
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="naive at B=1, one repeat, 5 OT problems")
    parser.add_argument("--arch", default="RN50", help="open_clip architecture (random weights)")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=16, help="batch of the library's steps and of the OT split")
    parser.add_argument("--naive-batch", type=int, default=2, help="batch at which the naive step is compared")
    parser.add_argument("--shots", type=int, default=16, help="N = shots x classes for the epoch and full-set OT")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls after the warm-up (median)")
    parser.add_argument("--ot-problems", type=int, default=20, help="mini-batch OT problems timed")
    parser.add_argument("--coop77", action="store_true", help="also time CoOp's 77-token step (as slow as B=1 naive)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steady timings on a shared host)")
    args = parser.parse_args(argv)
    if args.quick:
        args.naive_batch, args.repeats, args.ot_problems = 1, 1, 5
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    print(header(f"float32, median of {args.repeats} after a warm-up; memory: torch.profiler CPU events"))
    clip = random_clip(args.arch)
    size = clip.image_size if isinstance(clip.image_size, int) else clip.image_size[0]
    images = torch.randn(max(args.batch, args.naive_batch), 3, size, size, generator=torch.Generator().manual_seed(0))
    pooled, tokens = clip.encode_image(images)  # (B, E), (B, T, E): the cache every step reads
    g = torch.Generator().manual_seed(1)
    n = images.shape[0]
    feats = {
        "pooled": pooled,
        "tokens": tokens,
        "labels": torch.randint(0, args.classes, (n,), generator=g),
        "clean": torch.rand(n, generator=g) < 0.6,
    }
    enc = {}
    for b in {args.batch, args.naive_batch}:
        clip.encode_image(images[:b])  # warm-up
        enc[b] = timed(lambda b=b: clip.encode_image(images[:b]), args.repeats)
    print(
        f"{args.arch}, C={args.classes}, M={N_CTX}, T={tokens.shape[1]}; frozen image encoder (no grad) cpu s: "
        + ", ".join(f"B={b}: {w[1]:.3f} (wall {w[0]:.3f})" for b, w in sorted(enc.items())),
        flush=True,
    )
    rows = bench_steps(args, clip, feats, enc)
    print("\nTraining step on cached image features (x: CPU-time ratios)\n")
    print(markdown_table(rows, STEP_COLUMNS, STEP_FORMATS))
    naive = next(r for r in rows if r["step"] == "naive")
    big = next((r for r in rows if r["B"] == args.batch and r["step"] == "visprompt"), None)
    if big is not None and args.batch != args.naive_batch:
        per_image = args.batch / args.naive_batch  # the naive step is a loop over images: linear in B
        cpu, mb = naive["cpu s"] * per_image, naive["peak MB"] * per_image
        print(
            f"\nnaive at B={args.batch}, extrapolated linearly from B={args.naive_batch} (not run): ~{cpu:.0f} cpu s, "
            f"~{mb / 1024:.0f} GiB; visprompt at B={args.batch} is ~{cpu / big['cpu s']:.0f}x faster with "
            f"~{big['peak MB'] / mb:.3f} of its memory"
        )

    step_cpu = next(r["cpu s"] for r in rows if r["B"] == args.batch and r["step"] == "visprompt")
    vis = VisPromptLearner(clip, class_names(args.classes), n_ctx=N_CTX)
    with torch.no_grad():
        model_probs = PromptClassifier(clip, vis).logits_from_features(pooled[: args.batch], tokens[: args.batch])
    ot_rows = bench_ot(args, step_cpu, model_probs.softmax(dim=-1))
    n_total = args.shots * args.classes
    print(
        f"\nOT split vs the VisPrompt step at B={args.batch} ({step_cpu:.3f} cpu s); epoch = {n_total // args.batch} "
        f"steps of N={n_total} ({n_total // args.batch * step_cpu:.1f} cpu s, OT excluded)\n"
    )
    print(markdown_table(ot_rows, OT_COLUMNS, OT_FORMATS))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
