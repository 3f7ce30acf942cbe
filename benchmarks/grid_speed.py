"""A fixed slice of the testbed grid, run with a reference source tree and with this one, interleaved.

    PYTHONPATH=src python benchmarks/grid_speed.py --reference-src /path/to/old/checkout/src --data DATA
    PYTHONPATH=src python benchmarks/grid_speed.py --reference-src ... --slice many  # testbed-many's runs instead
    PYTHONPATH=src python benchmarks/grid_speed.py --parts    # the changed parts alone, against tests/reference_paths

The slice is taken from ``configs/sweeps/testbed.yaml`` as the sweep expands it (same configs, same run names):
by default (``--slice ten``) every method of the grid on testbed-backgrounds at symmetric 50% noise, seed 1 (9
runs); ``--slice many`` takes testbed-many's CoOp and VisPrompt at the same setting instead (50 classes), and
``--slice both`` both.

Each variant runs in its own worker process with ``PYTHONPATH`` pointing at its source tree, one thread, like a
sweep worker: a warm-up pass first (every run of the slice for one epoch: imports, the tiny CLIP, the feature store
filled as a long sweep has it), then the runs, one at a time on request. The two runs of a pair go back to back
(the order alternating from pair to pair) and the whole slice is repeated ``--rounds`` times, so drift in the
host's load hits both variants alike; the per-run figures are medians over the rounds (and minima, the estimate
least disturbed by other jobs). Wall-clock and process CPU time are both reported: on a shared host with SMT
siblings busy, even the CPU time of the same work varies by 20% or more.

``--parts`` times the two changed hot paths in one process against their earlier code (kept in
``tests/reference_paths.py``), alternating: the OT split (Sinkhorn) on VisPrompt-sized problems, and the text
encoder's forward and backward on the testbed CLIP for CoOp, CoCoOp and VisPrompt learners.

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
    """One variant, driven line by line: a warm-up pass, then ``ROUND NAME`` on stdin runs one run of the slice
    into ``--out/rROUND`` and answers one JSON line (timings and digests); ``quit`` ends."""
    import dataclasses
    import logging

    import torch

    import visprompt
    from visprompt.engine.runner import train_run

    answer = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr  # nothing else may write into the answer channel
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)
    out = Path(args.out)
    store = str(out / ".features")
    started, started_cpu = time.perf_counter(), time.process_time()
    for run in _runs(Path(args.data), out / "warmup", args.slice):  # one epoch of each: the steady state of a sweep
        cfg = run.config
        cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, epochs=1),
                                  run=dataclasses.replace(cfg.run, feature_store=store))  # fmt: skip
        train_run(cfg, show_progress=False)
    src = str(Path(visprompt.__file__).resolve().parents[1])
    warmup = {
        "src": src,
        "warmup_wall_s": time.perf_counter() - started,
        "warmup_cpu_s": time.process_time() - started_cpu,
    }
    answer.write(json.dumps(warmup) + "\n")
    rounds: dict[str, dict[str, Any]] = {}
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        round_, name = line.split(maxsplit=1)
        if round_ not in rounds:
            rounds[round_] = {r.name: r for r in _runs(Path(args.data), out / f"r{round_}", args.slice)}
        run = rounds[round_][name.strip()]
        t0, c0 = time.perf_counter(), time.process_time()
        train_run(run.config, show_progress=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        answer.write(json.dumps({"name": run.name, "wall_s": wall, "cpu_s": cpu, **_digest(run.path)}) + "\n")


class _Worker:
    """A variant's worker process (see :func:`worker`)."""

    def __init__(self, label: str, src: Path, out: Path, data: Path, which: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--out", str(out), "--data", str(data),
               "--slice", which]  # fmt: skip
        self.label, self.src = label, src
        self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ready(self) -> dict[str, Any]:
        info = self._read()
        if Path(info["src"]) != self.src.resolve():
            raise SystemExit(f"{self.label} ran visprompt from {info['src']}, expected {self.src}")
        return info

    def run(self, round_: int, name: str) -> dict[str, Any]:
        self.proc.stdin.write(f"{round_} {name}\n")
        self.proc.stdin.flush()
        return self._read()

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the {self.label} worker stopped (exit code {self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait()


def parts(repeats: int) -> None:
    """The changed hot paths against their earlier code, in one process (``--parts``)."""
    import warnings

    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import header, markdown_table

    from reference_paths import reference_stage, reference_text_call
    from visprompt.selection import sinkhorn
    from visprompt.selection.ot import ot_split

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    print(header(f"median of {repeats} alternating blocks, process CPU time"))

    def ab(label: str, ref: Any, new: Any, calls: int) -> dict[str, Any]:
        times: dict[str, list[float]] = {"ref": [], "new": []}
        for rep in range(repeats):
            for name, fn in (("ref", ref), ("new", new)) if rep % 2 else (("new", new), ("ref", ref)):
                fn()
                start = time.process_time()
                for _ in range(calls):
                    fn()
                times[name].append((time.process_time() - start) / calls * 1e3)
        r, n = statistics.median(times["ref"]), statistics.median(times["new"])
        return {"part": label, "before ms": r, "after ms": n, "speed-up": r / n}

    rows = []
    g = torch.Generator().manual_seed(0)
    new_stage = sinkhorn._solve_stage
    for n, c, calls in ((16, 10, 20), (16, 50, 10), (160, 10, 5), (800, 50, 1)):
        probs = [(torch.randn(n, c, generator=g) * 3).softmax(-1) for _ in range(calls)]
        labels = torch.randint(0, c, (n,), generator=g)

        def split_all(stage: Any, probs: list = probs, labels: torch.Tensor = labels) -> None:
            sinkhorn._solve_stage = stage
            for p in probs:
                ot_split(p, labels)

        row = ab(f"OT split, N = {n}, C = {c}", lambda s=split_all: s(reference_stage),
                 lambda s=split_all: s(new_stage), 1)  # fmt: skip
        row["before ms"] /= calls
        row["after ms"] /= calls
        rows.append(row)
    sinkhorn._solve_stage = new_stage

    from visprompt.models.classifier import PromptClassifier
    from visprompt.models.cocoop import CoCoOpPromptLearner
    from visprompt.models.coop import CoOpPromptLearner
    from visprompt.models.visprompt import VisPromptLearner
    from visprompt.testbed import load_testbed_clip
    from visprompt.testbed.tasks import TASKS_BY_NAME

    clip = load_testbed_clip("cpu")
    names = TASKS_BY_NAME["testbed-backgrounds"].classnames
    size = clip.image_size if isinstance(clip.image_size, int) else clip.image_size[0]
    for kind, batch in (("CoOp", 16), ("CoCoOp", 1), ("VisPrompt", 16)):
        torch.manual_seed(0)
        learner = {"CoOp": lambda: CoOpPromptLearner(clip, names), "CoCoOp": lambda: CoCoOpPromptLearner(clip, names),
                   "VisPrompt": lambda: VisPromptLearner(clip, names)}[kind]()  # fmt: skip
        model = PromptClassifier(clip, learner)
        enc = model.text_encoder
        with torch.no_grad():
            pooled, tokens = clip.encode_image(torch.randn(batch, 3, size, size, generator=g))
        length = enc.required_length(learner.pool_index)

        def step(call: Any, learner: Any = learner, pooled: Any = pooled, tokens: Any = tokens, n: int = length):
            call(learner(pooled, tokens, n)).sum().backward()

        before = lambda s=step, e=enc: s(lambda p: reference_text_call(e, p))  # noqa: E731
        after = lambda s=step, e=enc: s(e)  # noqa: E731
        rows.append(ab(f"text encoder fwd+bwd, {kind}, B = {batch}, C = {len(names)}", before, after, 10))
    print()
    print(markdown_table(rows, list(rows[0]), {"before ms": "{:.2f}", "after ms": "{:.2f}", "speed-up": "{:.2f}x"}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-src", type=Path, help="the reference tree's src/ (e.g. a worktree of 634fa40)")
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the tree to measure (default: this one)")
    parser.add_argument("--data", type=Path, default=ROOT / "DATA", help="the testbed data root")
    parser.add_argument("--out", type=Path, default=Path("/tmp/visprompt-grid-speed"))
    parser.add_argument("--rounds", type=int, default=3, help="times each run is repeated per variant")
    parser.add_argument(
        "--slice",
        choices=("ten", "many", "both"),
        default="ten",
        help="ten: testbed-backgrounds, every method; many: testbed-many's CoOp and VisPrompt",
    )
    parser.add_argument("--parts", action="store_true", help="time the changed hot paths alone (no runs)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.parts:
        parts(max(args.rounds, 4))
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
    if args.out.exists():
        import shutil

        shutil.rmtree(args.out)
    print(header(f"reference {args.reference_src}, measured {args.src}; {args.rounds} rounds, one thread"))
    labels = ("ref", "new")
    workers = {label: _Worker(label, src, args.out / label, args.data, args.slice)
               for label, src in zip(labels, (args.reference_src, args.src), strict=True)}  # fmt: skip
    try:
        for w in workers.values():
            info = w.ready()
            print(f"  {w.label}: warm-up {info['warmup_wall_s']:.1f} s wall, {info['warmup_cpu_s']:.1f} s CPU")
        sys.path.insert(0, str(args.src))
        names = [r.name for r in _runs(args.data, args.out / "names", args.slice)]
        results: dict[str, list[list[dict[str, Any]]]] = {label: [] for label in labels}
        for r in range(1, args.rounds + 1):
            for label in labels:
                results[label].append([])
            for i, name in enumerate(names):  # the pair of each run back to back, the order alternating
                for label in labels if (r + i) % 2 else labels[::-1]:
                    results[label][-1].append(workers[label].run(r, name))
            line = ", ".join(f"{lb} {sum(x['cpu_s'] for x in results[lb][-1]):.1f} s CPU" for lb in labels)
            print(f"  round {r}: {line}", flush=True)
    finally:
        for w in workers.values():
            w.close()
    _report(args, names, results, markdown_table)


def _report(args: argparse.Namespace, names: list[str], results: dict[str, list[list[dict[str, Any]]]],
            markdown_table: Any) -> None:  # fmt: skip
    keys = ("split", "parameters", "log", "metrics")
    first = results["ref"][0]
    identical = {n: all(rnd[i][k] == first[i][k] for v in results.values() for rnd in v for k in keys)
                 for i, n in enumerate(names)}  # fmt: skip
    rows = []
    for r in range(args.rounds):
        for label in ("ref", "new"):
            runs = results[label][r]
            wall, cpu = sum(x["wall_s"] for x in runs), sum(x["cpu_s"] for x in runs)
            rows.append({"round": r + 1, "variant": label, "runs": len(runs), "wall s": wall, "cpu s": cpu,
                         "runs/s (wall)": len(runs) / wall, "runs per cpu-min": 60 * len(runs) / cpu})  # fmt: skip
    print()
    print(markdown_table(rows, list(rows[0]), {"wall s": "{:.1f}", "cpu s": "{:.1f}", "runs/s (wall)": "{:.3f}",
                                               "runs per cpu-min": "{:.2f}"}))  # fmt: skip

    def per(label: str, i: int, key: str, how: Any) -> float:
        return how(rnd[i][key] for rnd in results[label])

    per_run = []
    for i, n in enumerate(names):
        ref_cpu, new_cpu = per("ref", i, "cpu_s", statistics.median), per("new", i, "cpu_s", statistics.median)
        ref_wall, new_wall = per("ref", i, "wall_s", statistics.median), per("new", i, "wall_s", statistics.median)
        per_run.append({"run": n, "ref cpu s": ref_cpu, "new cpu s": new_cpu, "x (cpu)": ref_cpu / new_cpu,
                        "x (min cpu)": per("ref", i, "cpu_s", min) / per("new", i, "cpu_s", min),
                        "ref wall s": ref_wall, "new wall s": new_wall, "x (wall)": ref_wall / new_wall,
                        "top-1": first[i]["top1"], "identical": "yes" if identical[n] else "NO"})  # fmt: skip
    print()
    print(markdown_table(per_run, list(per_run[0]), {k: "{:.2f}" for k in per_run[0] if k not in ("run", "identical")}))

    def total(label: str, key: str, how: Any) -> float:
        return sum(per(label, i, key, how) for i in range(len(names)))

    print(f"\nwhole slice, per-run medians of {args.rounds} rounds summed: "
          f"{total('ref', 'cpu_s', statistics.median) / total('new', 'cpu_s', statistics.median):.2f}x in CPU time "
          f"({total('ref', 'cpu_s', min) / total('new', 'cpu_s', min):.2f}x on per-run minima), "
          f"{total('ref', 'wall_s', statistics.median) / total('new', 'wall_s', statistics.median):.2f}x in wall time; "
          f"{sum(identical.values())}/{len(names)} runs identical in every variant and round")  # fmt: skip
    if not all(identical.values()):
        raise SystemExit("some runs differ between variants (see the 'identical' column)")


if __name__ == "__main__":
    main()
