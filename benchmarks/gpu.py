"""Benchmark for a lent GPU: throughput, memory and precision of VisPrompt's steps, in one prepared run.

Notation: B images, C classes, N training samples. Models: open_clip's RN50 and ViT-B-16 (random weights,
QuickGELU), C = 100 CIFAR-100 names, M = 16 context tokens, float32 or bf16 autocast. For each model and
precision, side by side:

* ``encode``: the frozen image encoder (pooled embedding and visual tokens, no grad) at ``--encode-batch``
  images: images per second of the feature-cache pass and of evaluation.
* ``visprompt`` / ``naive`` / ``coop``: one training step on cached image features at B = 16 (the paper's) as in
  ``benchmarks/train_step.py``: the library's VisPrompt step (prefix-shared text path), the authors' 77-token
  forward of the same model, and the library's CoOp step. Labels and VisPrompt's clean mask (~60% clean) are
  drawn from a fixed seed; CoOp's step trains on every row (its preset has no split). ``max|dlogit|``: the largest
  logit difference from the naive forward (eval mode, same weights).
* ``visprompt+enc`` / ``coop+enc``: the same steps with the image encoder run on B images at full resolution first
  (training with augmentation, where nothing can be cached).
* ``eval visprompt``: logits of ``--encode-batch`` cached images (no grad).
* ``compiled visprompt`` (``--compile``): the VisPrompt step with ``torch.compile`` on its logits function.
* ``classes`` (``--class-sweep``): the VisPrompt training step at B images for each C given (default 100, 397 and
  1000, the sizes of Caltech101/Food-101, SUN397 and ImageNet) on the first model: what fits, and how fast.
* OT (float64, the split's own dtype): one mini-batch split (B = 16, C = 100) and one full-set split (N = 1600)
  solved on the GPU and on the CPU, against the bf16 (or float32) VisPrompt step: share of an epoch of N / B steps.

Time: CUDA-synchronised wall clock, median of ``--repeats`` after ``--warmup`` calls; memory: peak
``torch.cuda.max_memory_allocated`` during one call above what was allocated before it (CPU: torch.profiler
events). Every figure is written as soon as it is measured to ``OUT/gpu_bench.json`` and ``OUT/gpu_bench.md``
(``--out``, default ``$OUT`` or ``./gpu_bench``); a failing measurement (e.g. out of memory) is recorded as an
error and the run goes on.

    PYTHONPATH=src python benchmarks/gpu.py                       # on the GPU (~3-5 min on one H200, estimated)
    PYTHONPATH=src python benchmarks/gpu.py --compile             # also torch.compile
    PYTHONPATH=src python benchmarks/gpu.py --smoke --device cpu  # tiny models on CPU: checks the script runs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from _common import class_names, markdown_table, peak_memory_mb
from train_step import COOP_LOSS, N_CTX, VISPROMPT_LOSS, NaivePrompts, clip_like_probs

from visprompt.engine.optim import build_optimizer
from visprompt.engine.runtime import Precision, resolve_precision
from visprompt.methods.selection import OTSelection
from visprompt.models import CoOpPromptLearner, FrozenCLIP, PromptClassifier, VisPromptLearner
from visprompt.models.backbone import build_open_clip_model
from visprompt.selection.ot import ot_split

TINY_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2}
TINY = {  # --smoke: the same code paths at toy sizes
    "RN50": {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8},
        "text_cfg": TINY_TEXT,
    },
    "ViT-B-16": {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32},
        "text_cfg": TINY_TEXT,
    },
}


def build_clip(arch: str, device: torch.device, smoke: bool) -> FrozenCLIP:
    import open_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_open_clip_model(TINY[arch] if smoke else open_clip.get_model_config(arch), quick_gelu=True)
    return FrozenCLIP.from_model(model.to(device), arch=arch)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(repeats, 1)):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


class Recorder:
    """Collects rows and rewrites the JSON and markdown after each one (a timeout keeps what was measured)."""

    COLUMNS: ClassVar[list[str]] = [
        "arch",
        "precision",
        "what",
        "B",
        "ms",
        "images/s",
        "peak MB",
        "naive/x",
        "x coop",
        "max|dlogit|",
        "note",
    ]
    FORMATS: ClassVar[dict[str, str]] = {
        "ms": "{:.2f}",
        "images/s": "{:.0f}",
        "peak MB": "{:.0f}",
        "naive/x": "{:.1f}x",
        "x coop": "{:.2f}",
        "max|dlogit|": "{:.1e}",
    }

    def __init__(self, out: Path, meta: dict[str, Any]) -> None:
        self.out, self.meta, self.rows = out, meta, []
        out.mkdir(parents=True, exist_ok=True)

    def measure(self, base: dict[str, Any], fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        row = dict(base)
        try:
            row.update(fn())
        except Exception as err:  # an out-of-memory or compile failure must not lose the other figures
            row["note"] = f"error: {type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        self.rows.append(row)
        print(f"  {row}", flush=True)
        self.write()
        return row

    def write(self) -> None:
        (self.out / "gpu_bench.json").write_text(json.dumps({"meta": self.meta, "rows": self.rows}, indent=2))
        text = "\n".join(f"- {k}: {v}" for k, v in self.meta.items())
        text += "\n\n" + markdown_table(self.rows, self.COLUMNS, self.FORMATS) + "\n"
        (self.out / "gpu_bench.md").write_text(text)


def step_batch(pooled: torch.Tensor, tokens: torch.Tensor, n_classes: int, *, split: bool = True) -> dict:
    """A training batch on cached features (B rows): float32 features, labels and the clean mask of the split.

    ``split``: about 60% of the rows clean (VisPrompt's steps); else every row (CoOp's preset selects nothing and
    trains CE on all rows, as the engine does). Labels and mask come from their own seeded generator, not torch's
    global one, whose state differs between processes: an all-noisy draw for CoOp's clean-only CE (B = 2 in
    ``--smoke``) left a loss with no term to differentiate, and the step failed in some runs only.
    """
    g = torch.Generator().manual_seed(1)
    n = pooled.shape[0]
    labels = torch.randint(0, n_classes, (n,), generator=g)
    clean = torch.rand(n, generator=g) < 0.6 if split else torch.ones(n, dtype=torch.bool)
    return {
        "pooled": pooled.float(),
        "tokens": tokens.float(),
        "labels": labels.to(pooled.device),
        "clean": clean.to(pooled.device),
    }


def step_fn(logits_fn, loss, params, precision: Precision, batch: dict[str, torch.Tensor], clip=None):
    """One training step; with ``clip`` the images are encoded first (no grad), as with augmentation on."""
    optimizer = build_optimizer(params, lr=2e-3)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast():
            if clip is not None:
                pooled, tokens = clip.encode_image(batch["images"])  # (B, E), (B, T, E)
            else:
                pooled, tokens = batch["pooled"], batch["tokens"]
            logits = logits_fn(pooled, tokens)  # (B, C)
        total = loss(logits.float(), batch["labels"], batch["clean"])[0]
        if not total.requires_grad:
            raise RuntimeError("the loss has no term to differentiate (no row in any subset the loss weighs)")
        total.backward()
        optimizer.step()

    return step


def bench_model(rec: Recorder, args: argparse.Namespace, arch: str, precision: Precision, device: torch.device):
    clip = build_clip(arch, device, args.smoke)
    names = class_names(args.classes)
    size = clip.image_size if isinstance(clip.image_size, int) else clip.image_size[0]
    g = torch.Generator().manual_seed(0)
    images = torch.randn(max(args.encode_batch, args.batch), 3, size, size, generator=g).to(device)
    with torch.no_grad(), precision.autocast():
        pooled, tokens = clip.encode_image(images)
    pooled_b, tokens_b, images_b = pooled[: args.batch], tokens[: args.batch], images[: args.batch]
    batch = {"images": images_b, **step_batch(pooled_b, tokens_b, args.classes)}
    coop_batch = {"images": images_b, **step_batch(pooled_b, tokens_b, args.classes, split=False)}
    base = {"arch": arch, "precision": precision.name, "C": args.classes}
    timing = {"warmup": args.warmup, "repeats": args.repeats}

    def encode() -> dict[str, Any]:
        fn = lambda: clip.encode_image(images[: args.encode_batch])  # noqa: E731
        with torch.no_grad(), precision.autocast():
            ms = median_ms(fn, device, **timing)
            mb = peak_memory_mb(fn, device)
        return {"ms": ms, "images/s": args.encode_batch / ms * 1e3, "peak MB": mb}

    rec.measure({**base, "what": "encode", "B": args.encode_batch}, encode)
    torch.manual_seed(0)
    vis, coop = VisPromptLearner(clip, names, n_ctx=N_CTX), CoOpPromptLearner(clip, names, n_ctx=N_CTX)
    vis_cls, coop_cls = PromptClassifier(clip, vis), PromptClassifier(clip, coop)
    naive = NaivePrompts(clip, vis, names)
    vis_params = [p for p in vis.parameters() if p.requires_grad]
    coop_params = [p for p in coop.parameters() if p.requires_grad]
    with torch.no_grad(), precision.autocast():
        vis.eval()
        diff = float(
            (
                vis_cls.logits_from_features(pooled[: args.batch], tokens[: args.batch]).float()
                - naive(pooled[: args.batch], tokens[: args.batch]).float()
            )
            .abs()
            .max()
        )
        vis.train()
    steps = {
        "naive": (naive, VISPROMPT_LOSS, vis_params, batch, None),
        "visprompt": (vis_cls.logits_from_features, VISPROMPT_LOSS, vis_params, batch, None),
        "coop": (coop_cls.logits_from_features, COOP_LOSS, coop_params, coop_batch, None),
        "visprompt+enc": (vis_cls.logits_from_features, VISPROMPT_LOSS, vis_params, batch, clip),
        "coop+enc": (coop_cls.logits_from_features, COOP_LOSS, coop_params, coop_batch, clip),
    }
    if args.compile:
        compiled = torch.compile(vis_cls.logits_from_features)
        steps["compiled visprompt"] = (compiled, VISPROMPT_LOSS, vis_params, batch, None)
    done: dict[str, dict] = {}
    for what, (fn, loss, params, step_data, enc) in steps.items():
        if what == "naive" and args.skip_naive:
            continue
        step = step_fn(fn, loss, params, precision, step_data, enc)
        reps = {"warmup": 1, "repeats": max(1, args.repeats // 4)} if what == "naive" else timing

        def measure(step=step, reps=reps) -> dict[str, Any]:
            ms = median_ms(step, device, **reps)
            return {"ms": ms, "images/s": args.batch / ms * 1e3, "peak MB": peak_memory_mb(step, device)}

        done[what] = rec.measure({**base, "what": what, "B": args.batch}, measure)
    for what, row in done.items():
        if "ms" not in row:
            continue
        if "ms" in done.get("naive", {}) and not what.endswith("+enc"):
            row["naive/x"] = done["naive"]["ms"] / row["ms"]
        coop_row = done.get("coop+enc" if what.endswith("+enc") else "coop", {})
        if "ms" in coop_row:
            row["x coop"] = row["ms"] / coop_row["ms"]
    done["visprompt"]["max|dlogit|"] = diff

    def evaluate() -> dict[str, Any]:
        vis_cls.eval()
        fn = lambda: vis_cls.logits_from_features(pooled[: args.encode_batch], tokens[: args.encode_batch])  # noqa: E731
        with torch.no_grad(), precision.autocast():
            ms, mb = median_ms(fn, device, **timing), peak_memory_mb(fn, device)
        vis_cls.train()
        return {"ms": ms, "images/s": args.encode_batch / ms * 1e3, "peak MB": mb}

    rec.measure({**base, "what": "eval visprompt", "B": args.encode_batch}, evaluate)
    rec.write()
    return done["visprompt"].get("ms")


def bench_classes(rec: Recorder, args: argparse.Namespace, precision: Precision, device: torch.device) -> None:
    """The VisPrompt step (cached features, B images) at each C of ``--class-sweep``: time and peak memory."""
    arch = args.archs[0]
    clip = build_clip(arch, device, args.smoke)
    size = clip.image_size if isinstance(clip.image_size, int) else clip.image_size[0]
    images = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad(), precision.autocast():
        pooled, tokens = clip.encode_image(images)  # (B, E), (B, T, E)
    for n_classes in args.class_sweep:
        names = class_names(n_classes)
        batch = step_batch(pooled, tokens, n_classes)

        def measure(names=names, batch=batch) -> dict[str, Any]:
            torch.manual_seed(0)
            vis_cls = PromptClassifier(clip, VisPromptLearner(clip, names, n_ctx=N_CTX))
            params = [p for p in vis_cls.parameters() if p.requires_grad]
            step = step_fn(vis_cls.logits_from_features, VISPROMPT_LOSS, params, precision, batch)
            ms = median_ms(step, device, warmup=args.warmup, repeats=max(1, args.repeats // 2))
            return {"ms": ms, "images/s": args.batch / ms * 1e3, "peak MB": peak_memory_mb(step, device)}

        base = {"arch": arch, "precision": precision.name, "what": f"visprompt C={n_classes}", "B": args.batch}
        rec.measure(base, measure)


def bench_ot(rec: Recorder, args: argparse.Namespace, step_ms: float | None, device: torch.device) -> None:
    """Mini-batch and full-set OT splits on the device and on the CPU, against the VisPrompt step."""
    n = args.shots * args.classes
    epoch_ms = (n // args.batch) * step_ms if step_ms else None
    problems = {
        "OT mini-batch": [clip_like_probs(args.batch, args.classes, s) for s in range(args.ot_problems)],
        "OT full set": [clip_like_probs(n, args.classes, 100)],
    }
    selector = OTSelection()
    for what, items in problems.items():
        for where in sorted({device.type, "cpu"}):

            def measure(items=items, where=where, what=what) -> dict[str, Any]:
                ms = []
                for probs, labels in items:
                    probs, labels = probs.to(where), labels.to(where)
                    ms.append(
                        median_ms(
                            lambda p=probs, y=labels: selector.select(p, y),
                            torch.device(where),
                            warmup=1,
                            repeats=args.ot_repeats,
                        )
                    )
                iters = ot_split(items[0][0], items[0][1]).stats["iterations"]
                out = {"ms": statistics.median(ms), "note": f"solved on {where}, {iters} sweeps (first problem)"}
                if step_ms:
                    share = out["ms"] / (step_ms + out["ms"]) if "mini" in what else out["ms"] / (epoch_ms + out["ms"])
                    out["note"] += f", {share:.2%} of an epoch of {n // args.batch} steps"
                return out

            rec.measure({"arch": "-", "precision": "fp64", "what": what, "B": items[0][0].shape[0]}, measure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny models, C=5, B=2, one repeat (CPU check)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--archs", nargs="+", default=["RN50", "ViT-B-16"])
    parser.add_argument("--precisions", nargs="+", default=["bf16", "fp32"], choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--shots", type=int, default=16, help="N = shots x classes for the full-set OT and epoch")
    parser.add_argument("--encode-batch", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--ot-problems", type=int, default=10)
    parser.add_argument("--ot-repeats", type=int, default=3)
    parser.add_argument(
        "--class-sweep",
        nargs="*",
        type=int,
        default=[100, 397, 1000],
        metavar="C",
        help="class counts for the many-class VisPrompt step (none: skip)",
    )
    parser.add_argument("--compile", action="store_true", help="also time a torch.compile'd VisPrompt step")
    parser.add_argument("--skip-naive", action="store_true", help="skip the 77-token step (~43 GB at B=16 in fp32)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu_bench"))
    args = parser.parse_args(argv)
    if args.smoke:
        args.classes, args.batch, args.shots, args.encode_batch = 5, 2, 4, 4
        args.warmup, args.repeats, args.ot_problems, args.ot_repeats = 1, 1, 2, 1
        args.class_sweep = [5, 9][: len(args.class_sweep)]
    device = torch.device(args.device)
    meta = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "cuda": torch.version.cuda,
        "smoke": args.smoke,
        "C": args.classes,
        "B": args.batch,
        "M": N_CTX,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "command": "python benchmarks/gpu.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    if device.type == "cuda":
        meta["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    rec = Recorder(args.out, meta)
    started = time.perf_counter()
    step_ms = None
    for precision_name in args.precisions:
        precision = resolve_precision(precision_name, device)
        for arch in args.archs:
            ms = bench_model(rec, args, arch, precision, device)
            if arch == args.archs[0] and step_ms is None:
                step_ms = ms  # the first precision's step on the first model: the OT share's reference
    for precision_name in args.precisions:
        bench_classes(rec, args, resolve_precision(precision_name, device), device)
    bench_ot(rec, args, step_ms, device)
    rec.meta["total_s"] = round(time.perf_counter() - started, 1)
    rec.write()
    print((args.out / "gpu_bench.md").read_text())


if __name__ == "__main__":
    main()
