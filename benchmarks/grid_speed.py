"""A fixed slice of the testbed grid, run with a reference source tree and with this one, interleaved.

    PYTHONPATH=src python benchmarks/grid_speed.py --reference-src /path/to/old/checkout/src --data DATA
    PYTHONPATH=src python benchmarks/grid_speed.py --reference-src ... --slice many  # testbed-many's runs instead

The slice is taken from ``configs/sweeps/testbed.yaml`` as the sweep expands it (same configs, same run names):
by default (``--slice ten``) every method of the grid on testbed-backgrounds at symmetric 50% noise, seed 1 (9
runs); ``--slice many`` takes testbed-many's CoOp and VisPrompt at the same setting instead (50 classes), and
``--slice both`` both. Each variant runs in its own process with
``PYTHONPATH`` pointing at its source tree, one thread, like a sweep worker: a warm-up pass first (every run of the
slice for one epoch: imports, the tiny CLIP, the feature store filled as a long sweep has it), then the slice
itself, timed run by run (wall clock and the process's CPU time). Variants alternate (ref, new, ref, new, ...), so
drift in the host's load shows as a difference between rounds of the same variant.

Every run must be identical across all variants and rounds: the split, the trained parameters (bit for bit), the
training log without its timings, and the metrics without timings and environment. The script exits non-zero
when any run differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GRID = ROOT / "configs" / "sweeps" / "testbed.yaml"
SLICE = {"dataset": "testbed-backgrounds", "noise.type": "sym", "noise.rate": 0.5, "run.seed": 1}
MANY = {"dataset": "testbed-many", "noise.type": "sym", "noise.rate": 0.5, "run.seed": 1}
MANY_METHODS = ("coop", "visprompt")
_VOLATILE = {"timings", "environment", "versions", "git_sha", "epoch_time"}


def _runs(data: Path, out: Path, which: str) -> list[Any]:
    from visprompt.sweep.grid import expand_sweep, load_sweep

    spec = load_sweep(GRID, out_dir=out, overrides=[f"data.root={data}", f"run.feature_store={out / '.features'}"])
    chosen = []
    for run in expand_sweep(spec):
        a = run.assignment
        in_slice = which in ("ten", "both") and all(a.get(k) == v for k, v in SLICE.items())
        in_many = which in ("many", "both") and all(a.get(k) == v for k, v in MANY.items())
        in_many = in_many and a.get("method") in MANY_METHODS
        if in_slice or in_many:
            chosen.append(run)
    return chosen


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _digest(run_dir: Path) -> dict[str, str]:
    """SHA-256 digests of what must not change: split, parameters, log (no timings), metrics (no timings)."""
    import torch
    from safetensors.torch import load_file

    def sha(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()[:16]

    tensors = load_file(str(run_dir / "checkpoint.safetensors"))
    params = hashlib.sha256()
    for name in sorted(tensors):
        params.update(name.encode() + tensors[name].contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    log_file = run_dir / "log.jsonl"
    lines = log_file.read_text().splitlines() if log_file.is_file() else []
    log = [_strip(json.loads(line)) for line in lines if line.strip()]
    metrics = _strip(json.loads((run_dir / "metrics.json").read_text()))
    return {
        "split": sha((run_dir / "split.json").read_bytes()),
        "parameters": params.hexdigest()[:16],
        "log": sha(json.dumps(log, sort_keys=True).encode()),
        "metrics": sha(json.dumps(metrics, sort_keys=True).encode()),
        "top1": metrics.get("top1"),
    }


def worker(args: argparse.Namespace) -> None:
    """One variant: warm-up pass, then the timed slice; writes ``result.json`` into ``--out``."""
    import dataclasses
    import logging

    import torch

    import visprompt
    from visprompt.engine.runner import train_run

    logging.disable(logging.WARNING)
    torch.set_num_threads(1)
    out = Path(args.out)
    src = Path(visprompt.__file__).resolve().parents[1]
    started, started_cpu = time.perf_counter(), time.process_time()
    for run in _runs(Path(args.data), out / "warmup", args.slice):  # one epoch of each: the steady state of a sweep
        cfg = run.config
        cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, epochs=1),
                                  run=dataclasses.replace(cfg.run, feature_store=str(out / ".features")))  # fmt: skip
        train_run(cfg, show_progress=False)
    warmup = time.perf_counter() - started, time.process_time() - started_cpu
    results = []
    for run in _runs(Path(args.data), out, args.slice):
        t0, c0 = time.perf_counter(), time.process_time()
        train_run(run.config, show_progress=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        results.append({"name": run.name, "wall_s": wall, "cpu_s": cpu, **_digest(run.path)})
    (out / "result.json").write_text(json.dumps({"src": str(src), "warmup": warmup, "runs": results}, indent=1))


def _spawn(src: Path, out: Path, data: Path, which: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--out", str(out), "--data", str(data)]
    subprocess.run([*cmd, "--slice", which], env=env, check=True, cwd=ROOT)
    result = json.loads((out / "result.json").read_text())
    if Path(result["src"]) != src.resolve():
        raise SystemExit(f"variant ran visprompt from {result['src']}, expected {src}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-src", type=Path, help="the reference tree's src/ (e.g. a worktree of 634fa40)")
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the tree to measure (default: this one)")
    parser.add_argument("--data", type=Path, default=ROOT / "DATA", help="the testbed data root")
    parser.add_argument("--out", type=Path, default=Path("/tmp/visprompt-grid-speed"))
    parser.add_argument("--rounds", type=int, default=2, help="ref/new pairs, interleaved")
    parser.add_argument(
        "--slice",
        choices=("ten", "many", "both"),
        default="ten",
        help="ten: testbed-backgrounds, every method; many: testbed-many's CoOp and VisPrompt",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.reference_src is None:
        parser.error("--reference-src is required")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import header, markdown_table

    for name, src in (("--reference-src", args.reference_src), ("--src", args.src)):
        if not (src / "visprompt" / "__init__.py").is_file():
            parser.error(f"{name} {src}: expected a source tree holding visprompt/__init__.py")
    if not (args.data / "testbed_backgrounds").is_dir():
        parser.error(f"--data {args.data}: no testbed_backgrounds folder (build it: visprompt testbed build)")
    print(header(f"reference {args.reference_src}, measured {args.src}; {args.rounds} rounds, one thread"))
    variants: list[tuple[str, dict[str, Any]]] = []
    for r in range(1, args.rounds + 1):
        for label, src in (("ref", args.reference_src), ("new", args.src)):
            out = args.out / f"{label}{r}"
            if out.exists():
                import shutil

                shutil.rmtree(out)
            variants.append((f"{label} {r}", _spawn(src, out, args.data, args.slice)))
            runs = variants[-1][1]["runs"]
            print(f"  {label} {r}: {sum(x['wall_s'] for x in runs):.1f} s wall, "
                  f"{sum(x['cpu_s'] for x in runs):.1f} s CPU", flush=True)  # fmt: skip

    names = [x["name"] for x in variants[0][1]["runs"]]
    keys = ("split", "parameters", "log", "metrics")
    identical = {n: all(v["runs"][i][k] == variants[0][1]["runs"][i][k] for _, v in variants for k in keys)
                 for i, n in enumerate(names)}  # fmt: skip
    rows = []
    for label, v in variants:
        wall, cpu = sum(x["wall_s"] for x in v["runs"]), sum(x["cpu_s"] for x in v["runs"])
        n = len(v["runs"])
        rows.append({"variant": label, "runs": n, "wall s": wall, "cpu s": cpu, "runs/s (wall)": n / wall,
                     "runs per cpu-min": 60 * n / cpu})  # fmt: skip
    print()
    print(markdown_table(rows, list(rows[0]), {"wall s": "{:.1f}", "cpu s": "{:.1f}", "runs/s (wall)": "{:.3f}",
                                               "runs per cpu-min": "{:.2f}"}))  # fmt: skip

    def mean(label: str, i: int | None, key: str) -> float:
        vs = [v for name, v in variants if name.startswith(label)]
        return statistics.mean(sum(x[key] for x in v["runs"]) if i is None else v["runs"][i][key] for v in vs)

    per_run = []
    for i, n in enumerate(names):
        per_run.append({"run": n, "ref cpu s": mean("ref", i, "cpu_s"), "new cpu s": mean("new", i, "cpu_s"),
                        "x (cpu)": mean("ref", i, "cpu_s") / mean("new", i, "cpu_s"),
                        "ref wall s": mean("ref", i, "wall_s"), "new wall s": mean("new", i, "wall_s"),
                        "x (wall)": mean("ref", i, "wall_s") / mean("new", i, "wall_s"),
                        "top-1": variants[0][1]["runs"][i]["top1"],
                        "identical": "yes" if identical[n] else "NO"})  # fmt: skip
    print()
    fmt = {k: "{:.2f}" for k in per_run[0] if k not in ("run", "identical")}
    print(markdown_table(per_run, list(per_run[0]), fmt))
    cpu_x = mean("ref", None, "cpu_s") / mean("new", None, "cpu_s")
    wall_x = mean("ref", None, "wall_s") / mean("new", None, "wall_s")
    print(f"\nwhole slice, mean of {args.rounds} rounds: {cpu_x:.2f}x in CPU time, {wall_x:.2f}x in wall time; "
          f"{sum(identical.values())}/{len(names)} runs identical in every variant")  # fmt: skip
    if not all(identical.values()):
        raise SystemExit("some runs differ between variants (see the 'identical' column)")


if __name__ == "__main__":
    main()
