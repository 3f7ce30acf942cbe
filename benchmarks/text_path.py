"""Benchmark of the text-encoder paths (DESIGN.md section 5): reference (77 tokens) vs truncated vs prefix-shared.

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
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from visprompt.models.context import PromptContext
from visprompt.models.frozen_clip import FrozenCLIP
from visprompt.models.text import TextEncoder

CIFAR100 = (  # noqa: SIM905 (a readable block of names)
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can "
    "castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin "
    "elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster "
    "man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck "
    "pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk "
    "skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger "
    "tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()
PATHS = ("reference", "truncated", "prefix")
N_CTX = 16


def text_tower(arch: str) -> FrozenCLIP:
    """open_clip's text tower of ``arch`` (random weights) with a toy image tower."""
    import open_clip

    cfg = open_clip.get_model_config(arch)
    toy_vision = {"image_size": 32, "patch_size": 32, "width": 64, "layers": 1, "head_width": 64}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = open_clip.CLIP(cfg["embed_dim"], toy_vision, cfg["text_cfg"], quick_gelu=True)
    return FrozenCLIP.from_model(model, arch=arch)


def peak_memory_mb(fn) -> float:
    """Peak of live CPU tensor memory while ``fn`` runs, from the profiler's allocation/free events."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += event.cpu_memory_usage if event.name == "[memory]" else event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak / 2**20


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median wall-clock and process CPU time of ``fn`` in ms (CPU time is the steadier one on a shared host)."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall) * 1e3, statistics.median(cpu) * 1e3


def bench_config(clip: FrozenCLIP, n_cls: int, batch: int, repeats: int) -> list[dict]:
    context = PromptContext(clip, CIFAR100[:n_cls], n_ctx=N_CTX)
    gen = torch.Generator().manual_seed(n_cls * 100 + batch)
    ctx = (0.02 * torch.randn(batch, N_CTX, clip.width, generator=gen)).requires_grad_(True)  # (B, M, D)
    weight = torch.randn(batch, n_cls, clip.embed_dim, generator=gen)  # a fixed linear loss on the features
    rows, ref_feats, ref_grad = [], None, None
    for path in PATHS:
        enc = TextEncoder(clip, path, prefix_len=context.prefix_len)
        length = enc.required_length(context.pool_index)

        def forward(enc=enc, length=length):
            with torch.no_grad():
                return F.normalize(enc(context.assemble(ctx, length)), dim=-1)  # (P, C, E)

        def train_step(enc=enc, length=length):
            ctx.grad = None
            loss = (F.normalize(enc(context.assemble(ctx, length)), dim=-1) * weight).sum()
            loss.backward()

        fwd_mem = peak_memory_mb(forward)
        train_mem = peak_memory_mb(train_step)
        feats = forward()
        train_step()
        grad = ctx.grad.clone()
        if path == "reference":
            ref_feats, ref_grad = feats, grad
        fwd_wall, fwd_cpu = timed(forward, repeats)
        train_wall, train_cpu = timed(train_step, repeats)
        rows.append(
            {
                "C": n_cls,
                "B": batch,
                "path": path,
                "tokens": length,
                "fwd_wall": fwd_wall,
                "fwd_ms": fwd_cpu,
                "fwd_mb": fwd_mem,
                "train_wall": train_wall,
                "train_ms": train_cpu,
                "train_mb": train_mem,
                "feat_diff": (feats - ref_feats).abs().max().item(),
                "grad_diff": ((grad - ref_grad).abs().max() / ref_grad.abs().max()).item(),
            }
        )
    for row in rows:
        row["fwd_x"] = rows[0]["fwd_ms"] / row["fwd_ms"]
        row["train_x"] = rows[0]["train_ms"] / row["train_ms"]
    return rows


HEADER = (
    f"{'C':>4} {'B':>3} {'path':<10} {'L':>3} {'fwd wall':>9} {'fwd cpu':>9} {'x':>5} {'fwd MB':>8} "
    f"{'train wall':>10} {'train cpu':>10} {'x':>5} {'train MB':>9} {'max|dfeat|':>10} {'max rel dgrad':>13}"
)


def print_row(r: dict) -> None:
    print(
        f"{r['C']:>4} {r['B']:>3} {r['path']:<10} {r['tokens']:>3} {r['fwd_wall']:>9.1f} {r['fwd_ms']:>9.1f} "
        f"{r['fwd_x']:>5.1f} {r['fwd_mb']:>8.1f} {r['train_wall']:>10.1f} {r['train_ms']:>10.1f} "
        f"{r['train_x']:>5.1f} {r['train_mb']:>9.1f} {r['feat_diff']:>10.1e} {r['grad_diff']:>13.1e}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="B=1 for every C plus B=16 at C=10, one repeat")
    parser.add_argument("--towers", nargs="+", default=["RN50", "ViT-B-16"])
    parser.add_argument("--classes", nargs="+", type=int, default=[10, 47, 100])
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
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
            for row in bench_config(clip, n_cls, batch, args.repeats):
                print_row(row)


if __name__ == "__main__":
    main()
