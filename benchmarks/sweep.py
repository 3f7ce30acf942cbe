"""Benchmark: a fixed slice of the testbed grid end to end without and with the frozen-feature store, side by side.

Part 1 (measured). The slice of ``configs/sweeps/testbed.yaml`` (default: task testbed-backgrounds, methods
zeroshot, coop, nlprompt and visprompt, symmetric noise 25% and 50%, seeds 1 and 2: 16 runs of 30 epochs on the
shipped tiny CLIP) runs through the sweep runner on one local Ray session, three times, each into its own
folder:

* ``no store``: ``run.feature_store=null``, as every run encoded its images before the store existed;
* ``store, cold``: an empty store that the sweep's workers fill as they go (one sweep on new data);
* ``store, warm``: a new sweep folder over the store the cold sweep filled (a second sweep, a re-run, a sweep
  with other methods over the same data and backbone);
* ``no store, again``: the reference once more, last, so that drift in the host's load shows (``x no store``
  divides the mean of the two reference sweeps' wall times by each sweep's). Training does the same work in
  every variant, so ``sum train_s`` measures that drift too; ``sum features+eval s`` is what the store changes.

A warm-up sweep of one run per CPU first starts Ray's workers (they import torch and the library once; the
measured sweeps reuse them). For each: wall time from the first run submitted to the last finished, runs per
second, and the sum of the runs' own ``timings`` (features, evaluation, training). Then every run of the store
sweeps is checked against the same run without the store: the few-shot split, the final parameters (bit for
bit), top-1, macro-F1, per-class accuracy and the last epoch's loss.

Part 2 (measured). The frozen image encoder's cost per image on this CPU, RN50 and ViT-B/16 with random weights
(the cost does not depend on the weights' values): one batch through ``encode_image`` (no grad), and the
decoding and preprocessing of a 500 x 375 JPEG.

Part 3 (a projection, not a run). The paper grid (``configs/sweeps/paper-rn50.yaml``: 1,095 runs, RN50, 16
shots, augmentation on, 100 epochs) counted image by image from the datasets' published sizes: the
un-augmented test split of every run and the un-augmented training pass of the methods that read it (full-set
OT, JoAPR's GMM) are encoded once per run without the store, and once per dataset (test) or per dataset and
seed (the few-shot training set) with it; the augmented views training encodes every step are the same both
ways. Times are those counts times part 2's RN50 cost.

    PYTHONPATH=src python benchmarks/sweep.py --num-cpus 2                 # ~4-8 min on a contended 2-core box
    PYTHONPATH=src python benchmarks/sweep.py --skip-slice                 # parts 2 and 3 only
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from _common import header, markdown_table, random_clip, timed

ROOT = Path(__file__).resolve().parents[1]
COMPARED = ("top1", "macro_f1", "per_class_accuracy")


# -- part 1: the slice --------------------------------------------------------------------------------------


def slice_runs(args: argparse.Namespace, out_dir: Path, store: str | None) -> list[Any]:
    from visprompt.sweep import expand_sweep, load_sweep

    store_value = "null" if store is None else store
    spec = load_sweep(
        args.grid, out_dir=out_dir, overrides=[f"data.root={args.data}", f"run.feature_store={store_value}"]
    )
    picked = [
        r
        for r in expand_sweep(spec)
        if r.config.data.dataset in args.tasks
        and r.config.method.name in args.methods
        and r.config.noise.type == "sym"
        and r.config.noise.rate in args.rates
        and r.config.run.seed in args.seeds
    ]
    if not picked:
        raise SystemExit("the slice is empty: check --tasks, --methods, --rates and --seeds against the grid")
    return picked


def run_variant(args: argparse.Namespace, name: str, out_dir: Path, store: str | None) -> dict[str, Any]:
    from visprompt.sweep import run_sweep

    runs = slice_runs(args, out_dir, store)
    started = time.perf_counter()
    result = run_sweep(runs, out_dir=out_dir, num_cpus=args.num_cpus, poll_s=0.5)
    wall = time.perf_counter() - started
    metrics = {}
    for run in runs:
        path = run.path / "metrics.json"
        metrics[run.name] = json.loads(path.read_text()) if path.is_file() else None
    timing = defaultdict(float)
    for m in metrics.values():
        for key in ("features_s", "eval_s", "train_s", "setup_s", "total_s"):
            timing[key] += (m or {}).get("timings", {}).get(key, 0.0)
    row = {"variant": name, "runs": len(runs), "failed": len(result.failed), "wall s": wall,
           "runs/s": len(runs) / wall, **{f"sum {k}": v for k, v in timing.items()}}  # fmt: skip
    return {"row": row, "runs": runs, "metrics": metrics}


def compare(reference: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """Differences between the same runs of two sweeps (empty: identical in every compared number)."""
    from safetensors.torch import load_file

    problems = []
    ref_dirs = {r.name: r.path for r in reference["runs"]}
    for run in other["runs"]:
        a, b = reference["metrics"].get(run.name), other["metrics"].get(run.name)
        if a is None or b is None:
            problems.append(f"{run.name}: missing metrics")
            continue
        for key in COMPARED:
            if a[key] != b[key]:
                problems.append(f"{run.name}: {key} {a[key]} != {b[key]}")
        if (a.get("last_epoch") or {}).get("loss") != (b.get("last_epoch") or {}).get("loss"):
            problems.append(f"{run.name}: last loss differs")
        if (ref_dirs[run.name] / "split.json").read_text() != (run.path / "split.json").read_text():
            problems.append(f"{run.name}: split differs")
        ca, cb = ref_dirs[run.name] / "checkpoint.safetensors", run.path / "checkpoint.safetensors"
        if ca.is_file() and cb.is_file():
            pa, pb = load_file(str(ca)), load_file(str(cb))
            if pa.keys() != pb.keys() or any(not torch.equal(pa[k], pb[k]) for k in pa):
                problems.append(f"{run.name}: parameters differ")
    return problems


def bench_slice(args: argparse.Namespace) -> list[dict[str, Any]]:
    import ray

    from visprompt.engine.store import FeatureStore
    from visprompt.testbed import build_testbed

    build_testbed(args.data, args.tasks)
    work = args.work
    for sub in ("warm-up", "no-store", "cold", "warm", "no-store-again", "features"):
        shutil.rmtree(work / sub, ignore_errors=True)
    store_dir = work / "features"
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        # warm-up: the Ray workers start and import torch and the library once, outside every measurement
        from visprompt.sweep import run_sweep

        run_sweep(slice_runs(args, work / "warm-up", None)[: args.num_cpus], out_dir=work / "warm-up", poll_s=0.5)
        variants = [run_variant(args, "no store", work / "no-store", None)]
        variants.append(run_variant(args, "store, cold", work / "cold", str(store_dir)))
        variants.append(run_variant(args, "store, warm", work / "warm", str(store_dir)))
        # the host's load drifts: the reference again, last, brackets the store sweeps in time
        variants.append(run_variant(args, "no store, again", work / "no-store-again", None))
    finally:
        ray.shutdown()
    base_wall = (variants[0]["row"]["wall s"] + variants[-1]["row"]["wall s"]) / 2  # the two no-store sweeps
    rows = []
    for v in variants:
        row = v["row"]
        row["x no store (wall)"] = base_wall / row["wall s"]
        affected = row["sum features_s"] + row["sum eval_s"]  # what the store changes; training is the same work
        row["sum features+eval s"] = affected
        problems = compare(variants[0], v) if v is not variants[0] else []
        row["identical"] = "reference" if v is variants[0] else ("yes" if not problems else f"NO ({len(problems)})")
        for p in problems[:10]:
            print(f"  {row['variant']}: {p}", file=sys.stderr)
        rows.append(row)
    info = FeatureStore(store_dir).info()
    print(f"store after the sweeps: {info['entries']} entries, {info['bytes'] / 2**20:.2f} MiB in {store_dir}")
    return rows


# -- part 2: encoding cost ----------------------------------------------------------------------------------


def encode_cost(arch: str, batch: int, repeats: int, work: Path) -> dict[str, Any]:
    from PIL import Image

    from visprompt.data.loader import read_image
    from visprompt.engine.build import image_transform

    clip = random_clip(arch)
    size = clip.image_size if isinstance(clip.image_size, int) else clip.image_size[0]
    images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))

    def encode() -> None:
        with torch.no_grad():
            clip.encode_image(images)

    encode()  # warm-up
    wall, cpu = timed(encode, repeats)
    g = torch.Generator().manual_seed(1)
    pixels = (torch.rand(375, 500, 3, generator=g) * 255).to(torch.uint8).numpy()
    jpeg = work / "bench.jpg"
    Image.fromarray(pixels).save(jpeg, quality=90)
    tf = image_transform(clip)
    tf(read_image(str(jpeg)))
    _, prep_cpu = timed(lambda: [tf(read_image(str(jpeg))) for _ in range(16)], repeats)
    return {"arch": arch, "input px": size, "batch": batch, "encode ms/img (cpu)": 1e3 * cpu / batch,
            "encode ms/img (wall)": 1e3 * wall / batch, "decode+preprocess ms/img (cpu)": 1e3 * prep_cpu / 16,
            "images/s (cpu)": batch / cpu}  # fmt: skip


# -- part 3: the projection ---------------------------------------------------------------------------------

UNAUG_TRAIN_METHODS = ("nlprompt", "joapr")  # full-set OT, JoAPR's GMM: one un-augmented pass per run


def projection(grid: Path, ms_per_image: float) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Images encoded by the paper grid, per dataset, with and without the store (counted, not run)."""
    from visprompt.data.datasets import get_spec
    from visprompt.sweep import expand_sweep, load_sweep

    runs = expand_sweep(load_sweep(grid, out_dir=Path("/nonexistent")))
    per: dict[str, dict[str, Any]] = {}
    for run in runs:
        c = run.config
        spec = get_spec(c.data.dataset)
        exp = spec.expected
        n_train = c.data.shots * exp.classes  # the few-shot training set
        d = per.setdefault(
            c.data.dataset,
            {"dataset": c.data.dataset, "runs": 0, "test": exp.test, "train (16 shots)": n_train, "seeds": set(),
             "aug": 0, "unaug": 0, "noaug": 0},
        )  # fmt: skip
        d["runs"] += 1
        d["seeds"].add(c.run.seed)
        d["unaug"] += exp.test + (n_train if c.method.name in UNAUG_TRAIN_METHODS else 0)
        d["aug"] += c.optim.epochs * n_train if c.data.augment else 0
        d["noaug"] += exp.test + n_train  # with data.augment=false: each run encodes its train set once
        d["stored"] = exp.test + n_train * len(d["seeds"])  # each entry once
    rows = []
    for d in per.values():
        rows.append({"dataset": d["dataset"], "runs": d["runs"], "test": d["test"],
                     "train (16 shots)": d["train (16 shots)"], "un-aug. images, no store": d["unaug"],
                     "un-aug. images, store": d["stored"], "augmented views (both)": d["aug"],
                     "no-aug. grid, no store": d["noaug"]})  # fmt: skip
    tot = {k: sum(r[k] for r in rows) for k in rows[0] if k not in ("dataset", "test", "train (16 shots)")}
    tot["dataset"] = "all"
    rows.append(tot)
    for r in rows:
        r["un-aug. h, no store"] = r["un-aug. images, no store"] * ms_per_image / 3.6e6
        r["un-aug. h, store"] = r["un-aug. images, store"] * ms_per_image / 3.6e6
        r["aug. h (both)"] = r["augmented views (both)"] * ms_per_image / 3.6e6
    summary = {
        "runs": tot["runs"],
        "no store h": tot["un-aug. h, no store"] + tot["aug. h (both)"],
        "store h": tot["un-aug. h, store"] + tot["aug. h (both)"],
        "noaug no store h": tot["no-aug. grid, no store"] * ms_per_image / 3.6e6,
        "noaug store h": tot["un-aug. h, store"],
    }
    return rows, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", type=Path, default=ROOT / "configs" / "sweeps" / "testbed.yaml")
    parser.add_argument("--paper-grid", type=Path, default=ROOT / "configs" / "sweeps" / "paper-rn50.yaml")
    parser.add_argument("--data", type=Path, default=Path("/tmp/visprompt-bench/DATA"), help="testbed data root")
    parser.add_argument("--work", type=Path, default=Path("/tmp/visprompt-bench/sweep"), help="sweep folders")
    parser.add_argument("--tasks", nargs="+", default=["testbed-backgrounds"])
    parser.add_argument("--methods", nargs="+", default=["zeroshot", "coop", "nlprompt", "visprompt"])
    parser.add_argument("--rates", nargs="+", type=float, default=[0.25, 0.5])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for part 2")
    parser.add_argument("--encode-batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-slice", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    print(header(f"float32; part 2 at {args.threads} thread(s)"))

    if not args.skip_slice:
        rows = bench_slice(args)
        print(f"\n1. Testbed slice: {rows[0]['runs']} runs ({', '.join(args.tasks)}; {', '.join(args.methods)}; sym "
              f"{', '.join(f'{r:g}' for r in args.rates)}; seeds {', '.join(map(str, args.seeds))}), "
              f"{args.num_cpus} Ray CPUs, one local Ray session for all four\n")  # fmt: skip
        cols = ["variant", "runs", "failed", "wall s", "runs/s", "x no store (wall)", "sum features_s", "sum eval_s",
                "sum features+eval s", "sum train_s", "sum total_s", "identical"]  # fmt: skip
        fmt = {c: "{:.1f}" for c in cols if c.startswith("sum") or c == "wall s"}
        fmt.update({"runs/s": "{:.3f}", "x no store (wall)": "{:.2f}x"})
        print(markdown_table(rows, cols, fmt))

    costs = [encode_cost(arch, args.encode_batch, args.repeats, args.work) for arch in ("RN50", "ViT-B-16")]
    print("\n2. Frozen image encoder per image on this CPU (random weights; no grad)\n")
    ccols = ["arch", "input px", "batch", "encode ms/img (cpu)", "encode ms/img (wall)",
             "decode+preprocess ms/img (cpu)", "images/s (cpu)"]  # fmt: skip
    print(markdown_table(costs, ccols, {c: "{:.1f}" for c in ccols[3:]}))

    rn50 = costs[0]["encode ms/img (cpu)"] + costs[0]["decode+preprocess ms/img (cpu)"]
    rows, summary = projection(args.paper_grid, rn50)
    print(f"\n3. PROJECTION (counted, not run): the paper grid's image encoding on this CPU at RN50's measured "
          f"{rn50:.1f} ms per image (encode + decode/preprocess), one core\n")  # fmt: skip
    pcols = ["dataset", "runs", "test", "train (16 shots)", "un-aug. images, no store", "un-aug. images, store",
             "augmented views (both)", "un-aug. h, no store", "un-aug. h, store", "aug. h (both)"]  # fmt: skip
    print(markdown_table(rows, pcols, {c: "{:.1f}" for c in pcols if c.endswith(("h, no store", "h, store", "(both)"))
                                       and " h" in c}))  # fmt: skip
    print(f"\nprojected encoding, whole grid ({summary['runs']} runs): {summary['no store h']:.0f} core-hours without "
          f"the store, {summary['store h']:.0f} with it ({summary['no store h'] / summary['store h']:.2f}x); the "
          f"augmented views, which no store can hold, are the rest")  # fmt: skip
    print(f"with data.augment=false over the same grid (training on stored features): "
          f"{summary['noaug no store h']:.1f} core-hours without the store, {summary['noaug store h']:.1f} with it "
          f"({summary['noaug no store h'] / summary['noaug store h']:.0f}x)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
