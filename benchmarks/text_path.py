"""Benchmark of the text-encoder paths (docs/performance.md): reference (77 tokens) vs truncated vs prefix-shared.

Setting: VisPrompt-shaped prompts, ``[SOS] [16 context tokens] [class name] [.] [EOT]``, with one context per
image (P = B contexts x C classes, as the cross-modal block produces), class names from CIFAR-100. The text
towers are open_clip's RN50 and ViT-B-16 text towers (12 layers, width 512; projections to 1024 and 512), with
random weights; the image tower is replaced by a toy one because it is not measured.

For each tower, C in {10, 47, 100} and B in {1, 16}, each path runs side by side in one process:

* forward: text features under ``torch.no_grad()``;
* train step: forward + backward of a scalar loss to the (B, 16, 512) context (what a training step costs);
* time: median wall-clock and process CPU time (the speed-up x uses CPU time, which other processes on a
  shared host disturb less; with ``--threads 1`` CPU time is the single core's busy time);
* peak memory: the peak of live CPU tensor memory during the call, from ``torch.profiler`` memory events
  (allocations and frees in time order, at operator granularity; tracemalloc cannot see torch's allocator);
* max |diff|: the largest absolute difference of the unit-norm features from the reference path's, and the
  largest difference of the context gradient relative to its largest entry.

The profiled (memory) call doubles as the warm-up; the timed calls follow it (median of ``--repeats``).

    PYTHONPATH=src python benchmarks/text_path.py            # full grid
    PYTHONPATH=src python benchmarks/text_path.py --quick    # B=1 for C in {10, 47, 100}, and B=16 at C=10; 1 repeat

``--floor`` measures instead the distinct-token floor of a whole VisPrompt training step (the cross-modal block,
the prefix-shared text path, CE, backward, an SGD update, on cached image features of RN50's shape) with the
text encoder as it was (``padded``: every class's body padded to the longest name, the full last layer) and as
it is (``floor``: classes grouped by name length, the last layer at EOT only), side by side in one process:
token positions per step against the distinct ones (the prefix once per image, each class's own suffix once
per (image, class)), CPU time, peak memory, and the logits and gradients of one against the other.

    PYTHONPATH=src python benchmarks/text_path.py --floor --threads 1    # C in {10, 47, 100}, B = 4
"""

from __future__ import annotations

import argparse
import os
import platform

import torch
import torch.nn.functional as F
from _common import ce_parity, ce_step, class_names, header, markdown_table, peak_memory_mb, timed

from visprompt.models.classifier import PromptClassifier
from visprompt.models.context import PromptContext
from visprompt.models.frozen_clip import FrozenCLIP
from visprompt.models.text import TextEncoder, distinct_positions
from visprompt.models.visprompt import VisPromptLearner

PATHS = ("reference", "truncated", "prefix")
N_CTX = 16
REF_MB_PER_TOKEN = 0.35  # activation memory of the 77-token training step, measured with this script


def text_tower(arch: str) -> FrozenCLIP:
    """open_clip's text tower of ``arch`` (random weights) with a toy image tower."""
    import open_clip

    cfg = open_clip.get_model_config(arch)
    toy_vision = {"image_size": 32, "patch_size": 32, "width": 64, "layers": 1, "head_width": 64}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = open_clip.CLIP(cfg["embed_dim"], toy_vision, cfg["text_cfg"], quick_gelu=True)
    return FrozenCLIP.from_model(model, arch=arch)


def _closures(clip: FrozenCLIP, context: PromptContext, path: str, ctx: torch.Tensor, weight: torch.Tensor):
    enc = TextEncoder(clip, path, prefix_len=context.prefix_len)
    length = enc.required_length(context.pool_index)

    def forward() -> torch.Tensor:
        with torch.no_grad():
            return F.normalize(enc(context.assemble(ctx, length)), dim=-1)  # (P, C, E)

    def train_step() -> None:
        ctx.grad = None
        loss = (F.normalize(enc(context.assemble(ctx, length)), dim=-1) * weight).sum()
        loss.backward()

    return forward, train_step, length


def bench_config(clip: FrozenCLIP, n_cls: int, batch: int, repeats: int, max_ref_gb: float) -> list[dict]:
    context = PromptContext(clip, class_names(n_cls), n_ctx=N_CTX)
    gen = torch.Generator().manual_seed(n_cls * 100 + batch)
    ctx = (0.02 * torch.randn(batch, N_CTX, clip.width, generator=gen)).requires_grad_(True)  # (B, M, D)
    weight = torch.randn(batch, n_cls, clip.embed_dim, generator=gen)  # a fixed linear loss on the features
    # the 77-token training step keeps ~0.35 MB of activations per token: too big ones are only run on context 0,
    # which gives the exact reference for the first context (contexts are independent), and are not timed
    ref_gb = REF_MB_PER_TOKEN * batch * n_cls * clip.context_length / 1024
    skip_ref = ref_gb > max_ref_gb
    rows, ref, nan = [], None, float("nan")
    for path in PATHS:
        if path == "reference" and skip_ref:
            ctx0 = ctx[:1].detach().requires_grad_(True)
            forward, train_step, length = _closures(clip, context, path, ctx0, weight[:1])
            feats, _ = forward(), train_step()
            ref = (feats, ctx0.grad.clone())
            rows.append({"C": n_cls, "B": batch, "path": f"{path}*", "tokens": length, "skipped_gb": ref_gb})
            continue
        forward, train_step, length = _closures(clip, context, path, ctx, weight)
        fwd_mb, train_mb = peak_memory_mb(forward), peak_memory_mb(train_step)  # also the warm-up
        feats, _ = forward(), train_step()
        grad = ctx.grad.clone()
        if ref is None:
            ref = (feats, grad)
        n = ref[0].shape[0]  # 1 when the reference ran on context 0 only
        fwd_wall, fwd_cpu = (1e3 * t for t in timed(forward, repeats))  # ms
        train_wall, train_cpu = (1e3 * t for t in timed(train_step, repeats))
        rows.append(
            {
                "C": n_cls,
                "B": batch,
                "path": path,
                "tokens": length,
                "fwd_wall": fwd_wall,
                "fwd_ms": fwd_cpu,
                "fwd_mb": fwd_mb,
                "train_wall": train_wall,
                "train_ms": train_cpu,
                "train_mb": train_mb,
                "feat_diff": (feats[:n] - ref[0]).abs().max().item(),
                "grad_diff": ((grad[:n] - ref[1]).abs().max() / ref[1].abs().max()).item(),
            }
        )
    for row in rows:
        row["fwd_x"] = rows[0].get("fwd_ms", nan) / row.get("fwd_ms", nan)
        row["train_x"] = rows[0].get("train_ms", nan) / row.get("train_ms", nan)
    return rows


HEADER = (
    f"{'C':>4} {'B':>3} {'path':<10} {'L':>3} {'fwd wall':>9} {'fwd cpu':>9} {'x':>5} {'fwd MB':>8} "
    f"{'train wall':>10} {'train cpu':>10} {'x':>5} {'train MB':>9} {'max|dfeat|':>10} {'max rel dgrad':>13}"
)


def print_row(r: dict) -> None:
    lead = f"{r['C']:>4} {r['B']:>3} {r['path']:<10} {r['tokens']:>3} "
    if "skipped_gb" in r:
        print(f"{lead}not timed: its training step needs ~{r['skipped_gb']:.0f} GB; run on context 0 for the diffs")
        return
    fwd_x, train_x = (f"{v:>5.1f}" if v == v else f"{'-':>5}" for v in (r["fwd_x"], r["train_x"]))  # NaN: no ref
    print(
        f"{lead}{r['fwd_wall']:>9.1f} {r['fwd_ms']:>9.1f} {fwd_x} {r['fwd_mb']:>8.1f} "
        f"{r['train_wall']:>10.1f} {r['train_ms']:>10.1f} {train_x} {r['train_mb']:>9.1f} "
        f"{r['feat_diff']:>10.1e} {r['grad_diff']:>13.1e}",
        flush=True,
    )


def floor_rows(clip: FrozenCLIP, n_cls: int, batch: int, repeats: int, n_tokens: int = 50) -> list[dict]:
    """The VisPrompt step with the padded text encoder and with the distinct-token floor, side by side."""
    torch.manual_seed(0)
    learner = VisPromptLearner(clip, class_names(n_cls), n_ctx=N_CTX)
    learner.train()
    gen = torch.Generator().manual_seed(n_cls)
    pooled = torch.randn(batch, clip.embed_dim, generator=gen)  # (B, E) cached image features
    tokens = torch.randn(batch, n_tokens, clip.embed_dim, generator=gen)  # (B, T, E)
    labels = torch.randint(0, n_cls, (batch,), generator=gen)
    params = [p for p in learner.parameters() if p.requires_grad]
    k, idx = learner.prefix_len, learner.pool_index
    distinct = distinct_positions(idx, batch, k)
    models = {}
    for name, bucket in (("padded", False), ("floor", True)):
        models[name] = PromptClassifier(clip, learner)
        models[name].text_encoder.bucket = bucket
    outs = ce_parity(models, params, pooled, tokens, labels)  # first: the timed steps update the parameters
    rows = []
    for name, model in models.items():
        step = ce_step(model, params, pooled, tokens, labels)
        mb = peak_memory_mb(step)  # also the warm-up
        wall, cpu = timed(step, repeats)
        positions = model.text_encoder.positions(idx, batch, k)
        rows.append({"C": n_cls, "B": batch, "text path": name, "positions": positions, "distinct": distinct,
                     "x distinct": positions / distinct, "wall s": wall, "cpu s": cpu, "peak MB": mb})  # fmt: skip
    (la, ga), (lb, gb) = outs["padded"], outs["floor"]
    g_max = max(float(g.abs().max()) for g in ga)
    rows[1]["max|dlogit|"] = float((la - lb).abs().max())
    rows[1]["grad rel"] = max(float((x - y).abs().max()) for x, y in zip(ga, gb, strict=True)) / g_max
    for row in rows:
        row["speed-up (cpu)"] = rows[0]["cpu s"] / row["cpu s"]
        row["speed-up (wall)"] = rows[0]["wall s"] / row["wall s"]
    return rows


FLOOR_COLUMNS = ["C", "B", "text path", "positions", "distinct", "x distinct", "wall s", "cpu s", "speed-up (cpu)",
                 "speed-up (wall)", "peak MB", "max|dlogit|", "grad rel"]  # fmt: skip
FLOOR_FORMATS = {"x distinct": "{:.2f}", "wall s": "{:.2f}", "cpu s": "{:.2f}", "speed-up (cpu)": "{:.2f}x",
                 "speed-up (wall)": "{:.2f}x", "peak MB": "{:.0f}", "max|dlogit|": "{:.1e}",
                 "grad rel": "{:.1e}"}  # fmt: skip


def main_floor(args: argparse.Namespace) -> None:
    print(header(f"float32, median of {args.repeats} after a warm-up; memory: torch.profiler CPU events"))
    rows = []
    for arch in args.towers:
        clip = text_tower(arch)
        print(f"\n{arch} text tower, VisPrompt step on cached features (M = {N_CTX}, T = 50, CIFAR-100 names)")
        for n_cls in args.classes:
            for batch in args.batch:
                rows += floor_rows(clip, n_cls, batch, args.repeats)
                print(markdown_table(rows[-2:], FLOOR_COLUMNS, FLOOR_FORMATS), flush=True)
    print("\nAll rows\n" + markdown_table(rows, FLOOR_COLUMNS, FLOOR_FORMATS))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="B=1 for every C plus B=16 at C=10, one repeat")
    parser.add_argument("--towers", nargs="+", default=None, help="default RN50 ViT-B-16 (--floor: RN50)")
    parser.add_argument("--classes", nargs="+", type=int, default=[10, 47, 100])
    parser.add_argument("--batch", nargs="+", type=int, default=None, help="default 1 16 (--floor: 4)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steady timings on a shared host)")
    parser.add_argument("--max-ref-gb", type=float, default=8.0, help="skip timing the reference above this estimate")
    parser.add_argument("--floor", action="store_true", help="the padded vs the floor text encoder in a VisPrompt step")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.floor:
        args.towers, args.batch = args.towers or ["RN50"], args.batch or [4]
        main_floor(args)
        return
    args.towers, args.batch = args.towers or ["RN50", "ViT-B-16"], args.batch or [1, 16]
    grid = [(c, b) for b in args.batch for c in args.classes]
    if args.quick:
        grid = [(c, 1) for c in args.classes] + [(min(args.classes), max(args.batch))]
        args.repeats = 1
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} threads, float32, median of {args.repeats}; memory: torch.profiler CPU events; "
        f"load average at start {os.getloadavg()[0]:.1f}"
    )
    for arch in args.towers:
        clip = text_tower(arch)
        print(f"\n{arch} text tower (ms; x: CPU-time speed-up over the reference path)\n{HEADER}\n{'-' * len(HEADER)}")
        for n_cls, batch in grid:
            for row in bench_config(clip, n_cls, batch, args.repeats, args.max_ref_gb):
                print_row(row)


if __name__ == "__main__":
    main()
