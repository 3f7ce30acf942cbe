"""Whole runs through the engine on a GPU: every precision path (fp32, bf16 autocast, fp16 + GradScaler) end to end.

The demo's comparison (testbed task, tiny CLIP, symmetric noise, the shipped presets) trained by
:func:`visprompt.engine.runner.train_run` on ``--device`` once per precision, so the mixed-precision code paths of
the training loop, the evaluation and the checkpoints run for real. Prints one row per run: top-1, wall time of the
run, and the top-1 difference from the float32 run of the same method (same seed, same noisy labels). Written to
``OUT/gpu_engine.md`` (``--out``, default ``$OUT`` or ``./gpu_bench``) after every run.

    PYTHONPATH=src python benchmarks/gpu_engine.py                       # on the GPU
    PYTHONPATH=src python benchmarks/gpu_engine.py --device cpu --precisions fp32 bf16 --epochs 2   # CPU check
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import markdown_table

from visprompt.commands.demo import DEFAULT_METHODS, DEFAULT_TASK, demo_config
from visprompt.engine.runner import train_run
from visprompt.testbed import build_testbed

COLUMNS = ["method", "precision", "rate", "top1", "vs fp32", "s", "status"]
FORMATS = {"top1": "{:.2f}", "vs fp32": "{:+.2f}", "s": "{:.1f}", "rate": "{:.2f}"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"])
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu_bench"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_engine_"))
    started = time.perf_counter()
    build_testbed(work / "DATA", [DEFAULT_TASK])
    built = time.perf_counter() - started
    rows: list[dict[str, Any]] = []
    for precision in args.precisions:
        for method in args.methods:
            demo_args = argparse.Namespace(
                task=DEFAULT_TASK, root=str(work / "DATA"), shots=16, epochs=args.epochs, seed=1,
                out=str(work / "runs" / precision), device=args.device,
                overrides=[f"optim.precision={precision}"],
            )  # fmt: skip
            row: dict[str, Any] = {"method": method, "precision": precision, "rate": args.rate}
            t0 = time.perf_counter()
            try:
                result = train_run(demo_config(demo_args, method, args.rate))
                row.update(top1=result.metrics.get("top1"), status=result.status)
            except Exception as err:  # record and go on: one failing path must not hide the others
                row["status"] = f"error: {type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}"
            row["s"] = time.perf_counter() - t0
            ref = next((r for r in rows if r["method"] == method and r["precision"] == "fp32"), None)
            if ref and isinstance(ref.get("top1"), float) and isinstance(row.get("top1"), float):
                row["vs fp32"] = row["top1"] - ref["top1"]
            rows.append(row)
            print(f"  {row}", flush=True)
            header = f"- device: {args.device}\n- epochs: {args.epochs}\n- testbed build: {built:.1f} s\n\n"
            (args.out / "gpu_engine.md").write_text(header + markdown_table(rows, COLUMNS, FORMATS) + "\n")
    print((args.out / "gpu_engine.md").read_text())
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
