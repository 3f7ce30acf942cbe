"""Benchmark: the VisPrompt training step with many classes (C = 100, 397, 1000), whole and in class chunks.

Setting: open_clip's RN50 text tower (12 layers, width 512) with random weights, the cross-modal block on cached
image features of RN50's shape (T = 50 visual tokens of width 1024), M = 16 context tokens, the library's
prefix-shared text path at the distinct-token floor, CE, backward and an SGD update. Class names: CIFAR-100's
for C = 100, ImageNet's (open_clip's list) for C = 397 (its first 397, standing in for SUN397's names) and
C = 1000.

For each C: the step with all classes in one pass, and with ``class_chunk`` classes per pass (each chunk
checkpointed: its activations are recomputed in the backward pass), side by side in one process: CPU and wall
time (median after a warm-up), peak live tensor memory (torch.profiler events), and the logits and gradients of
the chunked step against the whole one. The step is linear in B (each image has its own prompts), so the last
columns extrapolate time and memory to the paper's B = 16 (labelled as an extrapolation).

    PYTHONPATH=src python benchmarks/many_classes.py --threads 1              # B = 2, C in {100, 397, 1000}
"""

from __future__ import annotations

import argparse
import sys

import torch
from _common import CIFAR100, ce_parity, ce_step, header, markdown_table, peak_memory_mb, timed
from text_path import text_tower

from visprompt.models.classifier import PromptClassifier
from visprompt.models.visprompt import VisPromptLearner

N_CTX = 16


def names(n: int) -> list[str]:
    if n <= len(CIFAR100):
        return list(CIFAR100[:n])
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    if n > len(IMAGENET_CLASSNAMES):
        raise SystemExit(f"at most {len(IMAGENET_CLASSNAMES)} classes")
    return list(IMAGENET_CLASSNAMES[:n])


def bench(clip, n_cls: int, batch: int, chunks: list[int | None], repeats: int, target_b: int) -> list[dict]:
    torch.manual_seed(0)
    learner = VisPromptLearner(clip, names(n_cls), n_ctx=N_CTX)
    learner.train()
    gen = torch.Generator().manual_seed(n_cls)
    pooled = torch.randn(batch, clip.embed_dim, generator=gen)  # (B, E)
    tokens = torch.randn(batch, 50, clip.embed_dim, generator=gen)  # (B, T, E)
    labels = torch.randint(0, n_cls, (batch,), generator=gen)
    params = [p for p in learner.parameters() if p.requires_grad]
    models = {chunk: PromptClassifier(clip, learner, class_chunk=chunk) for chunk in chunks}
    outs = ce_parity(models, params, pooled, tokens, labels)  # first: the timed steps update the parameters
    rows = []
    for chunk, model in models.items():
        step = ce_step(model, params, pooled, tokens, labels)
        mb = peak_memory_mb(step)  # also the warm-up
        wall, cpu = timed(step, repeats)
        (la, ga), (lb, gb) = outs[chunks[0]], outs[chunk]
        g_max = max(float(g.abs().max()) for g in ga)
        row = {"C": n_cls, "B": batch, "class_chunk": "all" if chunk is None else chunk, "cpu s": cpu, "wall s": wall,
               "peak MB": mb, f"cpu s at B={target_b} (extrap.)": cpu * target_b / batch,
               f"GB at B={target_b} (extrap.)": mb * target_b / batch / 1024}  # fmt: skip
        if chunk is not chunks[0]:
            row["max|dlogit|"] = float((la - lb).abs().max())
            row["grad rel"] = max(float((x - y).abs().max()) for x, y in zip(ga, gb, strict=True)) / g_max
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", nargs="+", type=int, default=[100, 397, 1000])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=100, help="classes per chunk for the chunked step")
    parser.add_argument("--target-batch", type=int, default=16, help="B the last columns extrapolate to")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(header(f"float32, median of {args.repeats} after a warm-up; memory: torch.profiler CPU events"))
    clip = text_tower("RN50")
    rows = []
    cols = ["C", "B", "class_chunk", "cpu s", "wall s", "peak MB", f"cpu s at B={args.target_batch} (extrap.)",
            f"GB at B={args.target_batch} (extrap.)", "max|dlogit|", "grad rel"]  # fmt: skip
    fmt = {"cpu s": "{:.2f}", "wall s": "{:.2f}", "peak MB": "{:.0f}", cols[6]: "{:.0f}", cols[7]: "{:.2f}",
           "max|dlogit|": "{:.1e}", "grad rel": "{:.1e}"}  # fmt: skip
    for n_cls in args.classes:
        chunks = [None] + ([args.chunk] if args.chunk < n_cls else [])
        rows += bench(clip, n_cls, args.batch, chunks, args.repeats, args.target_batch)
        print(markdown_table(rows[-len(chunks) :], cols, fmt), flush=True)
    print("\nAll rows\n" + markdown_table(rows, cols, fmt))
    return 0


if __name__ == "__main__":
    sys.exit(main())
