"""Benchmark: the frozen-image-encoder feature cache, end to end through the engine (``visprompt train``).

When ``data.augment`` is off the frozen image encoder's outputs (pooled embedding and visual tokens) never
change, so the engine encodes the training images once (``timings.features_s`` in ``metrics.json``) and every
step reads the cache (``run.cache_features=true``, the default). Without the cache each step reads, decodes,
resizes and encodes its images again. Both runs see the same images, the same batches and the same weights, so
they must end with the same parameters and accuracy (up to float rounding: the cache is encoded in batches of
``optim.eval_batch_size``, the steps in batches of ``optim.batch_size``).

Part 1 (always): an RN50-sized random CLIP (ModifiedResNet at 224 px, T = 50 visual tokens) on a fabricated image
folder (C classes, K training and 1 test image per class, 256 x 256 JPEG noise), CoOp and VisPrompt (its preset:
OT per mini-batch), ``data.augment=false``, with and without the cache. Reported per run: the one-off encoding,
the mean epoch time (from the run's log), the cache's epoch speed-up, the number of epochs after which the
encoding has paid for itself, and the largest parameter difference between the two runs' checkpoints.

Part 2 (``--testbed``): accuracy on the offline testbed (the shipped tiny CLIP): cache on, cache off, and
``data.augment=true`` (which cannot be cached), at 50% symmetric noise. Needs the shipped checkpoint
(``src/visprompt/testbed/assets/``); without it the part says so and is skipped.

    PYTHONPATH=src python benchmarks/feature_cache.py             # part 1: C=10, K=8, 2 epochs (~4 min here)
    PYTHONPATH=src python benchmarks/feature_cache.py --quick     # part 1 on C=4, K=4, 1 epoch
    PYTHONPATH=src python benchmarks/feature_cache.py --testbed   # part 1 and part 2
    PYTHONPATH=src python benchmarks/feature_cache.py --testbed --skip-random   # part 2 only
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import class_names, header, markdown_table
from PIL import Image

from visprompt.config import load_config
from visprompt.engine.rundir import RunDir
from visprompt.engine.runner import train_run

VARIANTS = {
    "cached": ["data.augment=false", "run.cache_features=true"],
    "uncached": ["data.augment=false", "run.cache_features=false"],
    "augmented": ["data.augment=true"],  # a different experiment: random crops and flips, never cached
}


def fabricate_folder(root: Path, n_cls: int, shots: int, size: int = 256, seed: int = 0) -> Path:
    """``root/{train,test}/<class>/<i>.jpg``: K training and 1 test image of noise around a class colour."""
    rng = np.random.default_rng(seed)
    for name in class_names(n_cls):
        colour = rng.integers(0, 256, 3)
        for split, count in (("train", shots), ("test", 1)):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = np.clip(colour + rng.normal(0, 60, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)
    return root


def run_variant(method: str, variant: str, overrides: list[str], out: Path, seed: int = 1) -> dict:
    """Train one run; its timings, accuracy and checkpoint folder."""
    cfg = load_config(
        method=method,
        overrides=[
            *overrides,
            *VARIANTS[variant],
            f"run.out_dir={out}",
            f"run.name={method}-{variant}-s{seed}",
            f"run.seed={seed}",
        ],
    )
    started = time.perf_counter()
    result = train_run(cfg, show_progress=False)
    t = result.metrics["timings"]
    log = RunDir(result.run_dir).read_log()
    return {
        "method": method,
        "variant": variant,
        "seed": seed,
        "features s": t.get("features_s", 0.0),
        "epoch s": t["epoch_mean_s"],
        "first epoch s": float(log[0]["epoch_time"]),
        "eval s": t["eval_s"],
        "total s": time.perf_counter() - started,
        "top-1 %": result.metrics["top1"],
        "loss": result.metrics["last_epoch"].get("loss"),
        "dir": result.run_dir,
    }


def compare(rows: list[dict]) -> None:
    """Speed-up, break-even epochs and parameter differences of each method's cached run against its uncached one."""
    by = {(r["method"], r["variant"], r["seed"]): r for r in rows}
    for r in rows:
        other = by.get((r["method"], "uncached", r["seed"]))
        if r["variant"] != "cached" or other is None:
            continue
        r["epoch x"] = other["epoch s"] / r["epoch s"]
        saved = other["epoch s"] - r["epoch s"]
        r["break-even epochs"] = r["features s"] / saved if saved > 0 else float("inf")
        a, b = RunDir(r["dir"]).load_checkpoint(), RunDir(other["dir"]).load_checkpoint()
        r["max|dparam|"] = max(float((a[k] - b[k]).abs().max()) for k in a)


COLUMNS = [
    "method",
    "variant",
    "seed",
    "features s",
    "first epoch s",
    "epoch s",
    "epoch x",
    "break-even epochs",
    "eval s",
    "total s",
    "loss",
    "top-1 %",
    "max|dparam|",
]
FORMATS = {
    "features s": "{:.1f}",
    "first epoch s": "{:.1f}",
    "epoch s": "{:.1f}",
    "epoch x": "{:.1f}x",
    "break-even epochs": "{:.2f}",
    "eval s": "{:.1f}",
    "total s": "{:.0f}",
    "loss": "{:.4f}",
    "top-1 %": "{:.2f}",
    "max|dparam|": "{:.1e}",
}


def part_random(args: argparse.Namespace, work: Path) -> list[dict]:
    data = fabricate_folder(work / "images", args.classes, args.shots)
    common = [
        "data.dataset=folder",
        f"data.path={data}",
        f"data.shots={args.shots}",
        f"backbone.arch={args.arch}",
        "backbone.weights=null",
        "noise.type=sym",
        "noise.rate=0.5",
        f"optim.epochs={args.epochs}",
        f"optim.batch_size={args.batch}",
        "optim.warmup_epochs=0",
        "run.device=cpu",
    ]
    rows = []
    for method in args.methods:
        for variant in ("cached", "uncached"):
            rows.append(run_variant(method, variant, common, work / "runs"))
            print(f"  {method} {variant}: epoch {rows[-1]['epoch s']:.1f} s", flush=True)
    compare(rows)
    return rows


def part_testbed(args: argparse.Namespace, work: Path) -> list[dict] | None:
    from visprompt.testbed import build_testbed
    from visprompt.testbed.model import ASSETS, CHECKPOINT_NAME

    if not (ASSETS / CHECKPOINT_NAME).is_file():
        print(f"\ntestbed part skipped: the shipped checkpoint {ASSETS / CHECKPOINT_NAME} is not there yet")
        return None
    root = work / "testbed"
    build_testbed(root, [args.task])
    common = [
        f"data.dataset={args.task}",
        f"data.root={root}",
        "data.shots=16",
        "backbone.arch=testbed",
        "backbone.weights=null",
        "noise.type=sym",
        "noise.rate=0.5",
        f"optim.epochs={args.testbed_epochs}",
        "run.device=cpu",
    ]
    rows = []
    for seed in args.testbed_seeds:
        for method in args.methods:
            for variant in VARIANTS:
                rows.append(run_variant(method, variant, common, work / "testbed-runs", seed))
                print(f"  seed {seed} {method} {variant}: top-1 {rows[-1]['top-1 %']:.2f}%", flush=True)
    compare(rows)
    return rows


def mean_accuracy(rows: list[dict]) -> list[dict]:
    """Mean top-1 over seeds of each (method, variant)."""
    groups: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["variant"]), []).append(r["top-1 %"])
    return [
        {"method": m, "variant": v, "seeds": len(a), "mean top-1 %": sum(a) / len(a), "min": min(a), "max": max(a)}
        for (m, v), a in groups.items()
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="C=4, K=4, one epoch")
    parser.add_argument("--arch", default="RN50", help="open_clip architecture of part 1 (random weights)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=["coop", "visprompt"])
    parser.add_argument("--testbed", action="store_true", help="also part 2: accuracy on the offline testbed")
    parser.add_argument("--skip-random", action="store_true", help="skip part 1 (with --testbed: part 2 only)")
    parser.add_argument("--task", default="testbed-backgrounds")
    parser.add_argument("--testbed-epochs", type=int, default=30)
    parser.add_argument("--testbed-seeds", type=int, nargs="+", default=[1], help="run seeds of part 2")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steady timings on a shared host)")
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.quick:
        args.classes, args.shots, args.epochs = 4, 4, 1
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    print(header("float32, one run per row; times from the runs' metrics.json and log.jsonl"))
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        if not args.skip_random:
            print(
                f"\nPart 1: {args.arch} (random weights), C={args.classes}, K={args.shots}, B={args.batch}, "
                f"{args.epochs} epochs, 50% symmetric noise, augment off"
            )
            print(markdown_table(part_random(args, work), COLUMNS, FORMATS))
        if args.testbed:
            print(
                f"\nPart 2: testbed task {args.task}, 16 shots, 50% symmetric noise, {args.testbed_epochs} epochs, "
                f"seeds {args.testbed_seeds}"
            )
            rows = part_testbed(args, work)
            if rows:
                print(markdown_table(rows, COLUMNS, FORMATS))
                if len(args.testbed_seeds) > 1:
                    print()
                    print(
                        markdown_table(
                            mean_accuracy(rows),
                            ["method", "variant", "seeds", "mean top-1 %", "min", "max"],
                            {"mean top-1 %": "{:.2f}", "min": "{:.2f}", "max": "{:.2f}"},
                        )
                    )


if __name__ == "__main__":
    main()
