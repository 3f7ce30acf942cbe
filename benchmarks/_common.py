"""Helpers shared by the performance benchmarks: timing, peak memory, the run header, tables, models.

Timing: :func:`timed` returns the median wall-clock and process CPU time of repeated calls. On a shared host the
CPU time is the steadier one (other processes lengthen the wall clock, not this process's busy time), so
speed-ups are quoted on CPU time with the wall-clock ones beside them.

Memory: :func:`peak_memory_mb` is the peak of live CPU tensor memory during one call, from ``torch.profiler``'s
allocation and free events in time order (operator granularity). ``tracemalloc`` cannot see torch's allocator and
the process RSS cannot be reset between calls, so neither is used. On CUDA, :func:`peak_memory_mb` reads
``torch.cuda.max_memory_allocated`` instead.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

CIFAR100 = (  # noqa: SIM905 (a readable block of names)
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can "
    "castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin "
    "elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster "
    "man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck "
    "pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk "
    "skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger "
    "tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()


def class_names(n: int) -> list[str]:
    """``n`` class names: CIFAR-100's, then numbered ones beyond 100."""
    return [CIFAR100[i] if i < len(CIFAR100) else f"class {i}" for i in range(n)]


def header(extra: str = "") -> str:
    """One line naming torch, the CPU, the threads and the load average at start (the host is shared)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = (
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} threads, load average at start {load:.1f}"
    )
    return f"{text}; {extra}" if extra else text


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Median wall-clock and process CPU time of ``fn`` over ``repeats`` calls, in seconds (no warm-up here)."""
    wall, cpu = [], []
    for _ in range(max(repeats, 1)):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (the profiler's C++ start/stop lines); Python exceptions still propagate."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def peak_memory_mb(fn: Callable[[], Any], device: torch.device | None = None) -> float:
    """Peak of live tensor memory (MiB) allocated while ``fn`` runs, above what was live before it."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += event.cpu_memory_usage if event.name == "[memory]" else event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak / 2**20


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], formats: dict[str, str]) -> str:
    """A markdown table of ``rows`` (missing cells left empty; ``formats`` maps a column to a format string)."""

    def cell(row: dict[str, Any], col: str) -> str:
        if col not in row or row[col] is None:
            return ""
        value = row[col]
        if isinstance(value, float) and value != value:  # NaN
            return "-"
        return formats.get(col, "{}").format(value)

    cells = [[cell(r, c) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |" for row in cells]
    return "\n".join(lines)


def random_clip(arch: str, *, device: torch.device | str = "cpu", seed: int = 0):
    """A frozen open_clip ``arch`` (``RN50``, ``ViT-B-16``, ...) with random weights and QuickGELU (as OpenAI's)."""
    from visprompt.models.backbone import load_backbone

    return load_backbone(arch, None, device=device, quick_gelu=True, seed=seed)


def ce_parity(models: dict[Any, Any], params: Sequence[torch.nn.Parameter], pooled, tokens, labels) -> dict:
    """Per model: the logits and parameter gradients of one CE step from the same weights and dropout masks.

    Run before any timed step (those update the parameters). ``models`` share the learner whose ``params`` they train.
    """
    import torch.nn.functional as F

    outs = {}
    for key, model in models.items():
        with torch.random.fork_rng(devices=[]):  # the same dropout masks for every model
            torch.manual_seed(1)
            for p in params:
                p.grad = None
            logits = model.logits_from_features(pooled, tokens)  # (B, C)
            F.cross_entropy(logits, labels).backward()
            outs[key] = (logits.detach(), [p.grad.clone() for p in params])
    return outs


def ce_step(model: Any, params: Sequence[torch.nn.Parameter], pooled, tokens, labels) -> Callable[[], None]:
    """One SGD step of cross-entropy on cached image features (the step the text-path benchmarks time)."""
    import torch.nn.functional as F

    optimizer = torch.optim.SGD(params, lr=1e-3)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model.logits_from_features(pooled, tokens), labels).backward()
        optimizer.step()

    return step
