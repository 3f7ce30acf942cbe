"""Benchmark: ``visprompt eval`` of a finished run with a cold and a warm frozen-feature store, in one process.

``visprompt eval RUN_DIR`` rebuilds the run (frozen CLIP, method, trained parameters), computes the test split's
logits and scores them. The logits need the frozen image tower's outputs on the test images; with the store
(``run.feature_store``, :mod:`visprompt.engine.store`) they are read back instead of encoded when an entry holds
exactly those outputs. Three variants of the same evaluation, each timed end to end (``load_run``, the logits,
the metrics: what the command does after its imports):

* ``no store``: ``--feature-store none``, every test image is encoded (as eval did before the store);
* ``cold``: an empty store folder (removed before every repeat): encode, then write the entry;
* ``warm``: the run's own store, as its training left it (``run.feature_store=auto``): read back.

The variants alternate within each repeat (the host is shared: drift hits all three alike). Reported: medians
of wall and process CPU time, and each variant's time divided by the warm one's (``time / warm``, the warm
store's speed-up). Every repeat's logits must be bit-identical to the first ``no store`` logits
(``torch.equal``), with the same metrics, and the warm variant must not call the image tower at all (counted);
otherwise the script exits non-zero.

Part 1: a CoOp and a VisPrompt run on a testbed task (the shipped tiny CLIP, 32 px images). Part 2 (``--rn50``):
a CoOp run with a random-weight RN50 (224 px; the cost does not depend on the weights' values) on a fabricated
folder of 256 px JPEGs, where encoding is what eval pays for.

    PYTHONPATH=src python benchmarks/eval_store.py                  # part 1 (~1 min here)
    PYTHONPATH=src python benchmarks/eval_store.py --rn50           # parts 1 and 2 (~3 min here)
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import header, markdown_table

VARIANTS = ("no store", "cold", "warm")


def train(overrides: list[str], method: str, out: Path, name: str) -> Path:
    from visprompt.config import load_config
    from visprompt.engine.runner import train_run

    cfg = load_config(
        method=method,
        overrides=[*overrides, f"run.out_dir={out}", f"run.name={name}", "run.device=cpu", "run.feature_store=auto"],
    )
    result = train_run(cfg, show_progress=False)
    if result.status != "done":
        raise SystemExit(f"{result.run_dir}: training did not finish ({result.status})")
    return Path(result.run_dir)


class EncoderCounter:
    """Counts the images the frozen image tower encodes (every FrozenCLIP) while active."""

    def __init__(self) -> None:
        from visprompt.models.frozen_clip import FrozenCLIP

        self.cls, self.original, self.images = FrozenCLIP, FrozenCLIP.encode_image, 0
        counter = self

        def counted(clip: Any, images: torch.Tensor) -> Any:
            counter.images += int(images.shape[0])
            return counter.original(clip, images)

        FrozenCLIP.encode_image = counted

    def close(self) -> None:
        self.cls.encode_image = self.original


def evaluate(run_dir: Path, store: str | bool | None) -> tuple[torch.Tensor, dict[str, Any]]:
    """What ``visprompt eval RUN_DIR`` computes (after its imports): rebuild, logits, metrics."""
    from visprompt.engine.inference import load_run
    from visprompt.engine.metrics import classification_metrics

    loaded = load_run(run_dir, device="cpu", feature_store=store)
    logits = loaded.logits(loaded.splits.test)
    labels = torch.tensor([s.label for s in loaded.splits.test])
    return logits, classification_metrics(logits.argmax(dim=-1), labels, loaded.splits.classnames)


def bench_run(label: str, run_dir: Path, repeats: int, cold_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    settings = {"no store": None, "cold": str(cold_dir), "warm": True}  # warm: the run's own (auto) store
    times: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
    encoded: dict[str, list[int]] = {v: [] for v in VARIANTS}
    reference, ref_metrics, problems = None, None, []
    evaluate(run_dir, None)  # warm-up: imports, allocator, the tower's first call
    counter = EncoderCounter()
    try:
        for r in range(repeats):
            order = VARIANTS[r % 3 :] + VARIANTS[: r % 3]  # rotate: drift in the host's load hits all alike
            for variant in order:
                shutil.rmtree(cold_dir, ignore_errors=True)
                counter.images = 0
                w0, c0 = time.perf_counter(), time.process_time()
                logits, metrics = evaluate(run_dir, settings[variant])
                times[variant].append((time.perf_counter() - w0, time.process_time() - c0))
                encoded[variant].append(counter.images)
                if reference is None:
                    reference, ref_metrics = logits, metrics
                elif not torch.equal(logits, reference) or metrics != ref_metrics:
                    problems.append(f"{label}, {variant}, repeat {r + 1}: logits or metrics differ")
    finally:
        counter.close()
    if any(encoded["warm"]):
        problems.append(f"{label}: the warm store encoded {max(encoded['warm'])} images (expected 0)")
    warm_wall = statistics.median(t[0] for t in times["warm"])
    warm_cpu = statistics.median(t[1] for t in times["warm"])
    rows = []
    for variant in VARIANTS:
        wall = statistics.median(t[0] for t in times[variant])
        cpu = statistics.median(t[1] for t in times[variant])
        rows.append({
            "run": label, "test images": int(reference.shape[0]), "variant": variant,
            "images encoded": max(encoded[variant]), "eval wall s": wall, "eval cpu s": cpu,
            "time / warm (wall)": wall / warm_wall, "time / warm (cpu)": cpu / warm_cpu,
            "identical": "reference" if variant == "no store" else ("yes" if not problems else "NO"),
        })  # fmt: skip
    return rows, problems


def testbed_runs(args: argparse.Namespace, work: Path) -> list[tuple[str, Path]]:
    from visprompt.testbed import build_testbed

    build_testbed(args.data, [args.task])
    base = [f"data.dataset={args.task}", f"data.root={args.data}", "data.shots=16", "data.augment=false",
            "backbone.arch=testbed", "backbone.weights=null", "noise.type=sym", "noise.rate=0.5",
            f"optim.epochs={args.epochs}"]  # fmt: skip
    return [(f"{args.task} {m}", train(base, m, work / "runs", m)) for m in args.methods]


def rn50_run(args: argparse.Namespace, work: Path) -> tuple[str, Path]:
    from feature_cache import fabricate_folder

    data = fabricate_folder(work / "rn50-data", args.rn50_classes, shots=2)
    for folder in (data / "test").iterdir():  # fabricate_folder makes one test image per class: copy it to more
        first = folder / "0.jpg"
        for i in range(1, args.rn50_test_per_class):
            shutil.copyfile(first, folder / f"{i}.jpg")
    base = ["data.dataset=folder", f"data.path={data}", "data.shots=2", "data.augment=false",
            "backbone.arch=RN50", "backbone.weights=null", "noise.type=sym", "noise.rate=0.5", "optim.epochs=1",
            "prompt.n_ctx=4"]  # fmt: skip
    return (f"RN50 (random) coop, {args.rn50_classes} classes", train(base, "coop", work / "runs", "rn50-coop"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("DATA"), help="testbed data root (built if missing)")
    parser.add_argument("--task", default="testbed-backgrounds")
    parser.add_argument("--methods", nargs="+", default=["coop", "visprompt"])
    parser.add_argument("--epochs", type=int, default=2, help="training epochs (eval's cost does not depend on them)")
    parser.add_argument("--repeats", type=int, default=5, help="evaluations per variant (medians)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--rn50", action="store_true", help="also part 2: a random RN50 on fabricated 256 px JPEGs")
    parser.add_argument("--rn50-classes", type=int, default=10)
    parser.add_argument("--rn50-test-per-class", type=int, default=4)
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one, removed afterwards)")
    args = parser.parse_args()
    if args.repeats < 1 or args.threads < 1:
        parser.error("--repeats and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="eval-store-")
    work = args.work or Path(tmp.name)
    try:
        print(header())
        runs = testbed_runs(args, work)
        if args.rn50:
            runs.append(rn50_run(args, work))
        rows, problems = [], []
        for label, run_dir in runs:
            r, p = bench_run(label, run_dir, args.repeats, work / "cold-store")
            rows += r
            problems += p
        cols = ["run", "test images", "variant", "images encoded", "eval wall s", "eval cpu s", "time / warm (wall)",
                "time / warm (cpu)", "identical"]  # fmt: skip
        fmt = {"eval wall s": "{:.3f}", "eval cpu s": "{:.3f}"}
        fmt.update({"time / warm (wall)": "{:.2f}x", "time / warm (cpu)": "{:.2f}x"})
        print(f"\nvisprompt eval, medians of {args.repeats} repeats (variants interleaved):\n")
        print(markdown_table(rows, cols, fmt))
        for p in problems:
            print(f"PROBLEM: {p}", file=sys.stderr)
        return 1 if problems else 0
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
