"""Run a sweep's runs as Ray tasks: skip finished runs, retry failed ones, resume after an interruption.

The ``status`` file in each run directory is the source of truth (docs/architecture.md): a run whose status
is ``done`` is never submitted again; any other run (fresh, ``running`` from an interrupted sweep, or
``failed``) is submitted, and the run function itself resumes from the run's checkpoint. So stopping a sweep
(Ctrl-C, a killed driver, a lost cluster) and starting it again finishes the remaining runs without touching
the finished ones.

A run succeeds when its task returns and its status reads ``done``; a task that raises, a crashed worker, or
a run that returns with another status is a failed attempt, resubmitted up to ``max_retries`` times (at the
end of the queue), except for user errors (:class:`~visprompt.errors.VispromptError`: a bad config, missing
data or weights), which would fail again. Failed attempts and their errors are appended to
``<out_dir>/sweep-events.jsonl``; the final state of every run goes to ``<out_dir>/sweep.json``; each run's
own log records go to ``<run dir>/worker.log``.

Ray is an optional dependency (``pip install 'visprompt[sweep]'``), imported only when a sweep starts. Runs
go to a local Ray instance (all CPUs by default) or to a cluster given by ``address``; with a cluster, the
sweep's ``out_dir`` and the data must be on a filesystem every node sees.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visprompt.config import RunConfig
from visprompt.errors import ConfigError, VispromptError
from visprompt.runlock import FolderLockedError, folder_lock
from visprompt.sweep.grid import SweepRun
from visprompt.sweep.state import STALE_REMEDY, EventLog, RunOutcome, read_status, refuse_stale, write_summary

log = logging.getLogger(__name__)

__all__ = ["SweepProgress", "SweepResult", "engine_run", "ray_session", "run_sweep"]

RunFn = Callable[[RunConfig], Mapping[str, Any] | None]
DONE, FAILED = "done", "failed"


@dataclass(frozen=True)
class SweepProgress:
    """Counts shown by the progress display; ``remaining`` = queued or waiting for a retry."""

    total: int
    done: int  # finished, including those finished before this sweep started
    running: int
    failed: int  # out of retries
    remaining: int
    skipped: int  # already done when the sweep started

    def __str__(self) -> str:
        done, total = self.done, self.total
        return f"done {done}/{total}, running {self.running}, failed {self.failed}, remaining {self.remaining}"


@dataclass(frozen=True)
class SweepResult:
    out_dir: Path
    outcomes: tuple[RunOutcome, ...]
    seconds: float
    stale: tuple[str, ...] = ()  # finished runs whose config.yaml differs from the grid's: "<run>: <key> a -> b"

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.status == FAILED]

    @property
    def ok(self) -> bool:
        return not self.failed


def engine_run(cfg: RunConfig) -> dict[str, Any]:
    """The default run function: :func:`visprompt.engine.train_run` (it skips done runs and resumes the others)."""
    from visprompt.engine import train_run  # imported in the Ray worker

    result = train_run(cfg, show_progress=False)
    return {"status": result.status, "skipped": result.skipped, "resumed_from": result.resumed_from,
            "top1": result.metrics.get("top1")}  # fmt: skip


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise VispromptError("sweeps run on Ray, which is not installed: pip install 'visprompt[sweep]'") from None
    return ray


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[Any]:
    """The ``ray`` module with a session: an existing one, the cluster at ``address``, or a local one (closed after)."""
    ray = _import_ray()
    if ray.is_initialized():
        yield ray
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:  # "local": always a private instance, never a cluster found through RAY_ADDRESS or an old address file
        with _worker_niceness():
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


_RAY_NICENESS = "RAY_worker_niceness"  # Ray's own (mixed-case) name of its setting


@contextmanager
def _worker_niceness() -> Iterator[None]:
    """Start a local Ray's workers at the sweep's own priority (``nice -n 5 visprompt sweep ...`` gives nice 5).

    Ray starts task workers at nice 15 by default, so on a machine shared with other jobs the runs of a local
    sweep get a fraction of the CPU they were given. Ray adds its setting to the niceness the workers inherit
    from the sweep (through the raylet it starts), so 0 leaves them at the sweep's own: the sweep's niceness
    itself would double it (nice 10 gave workers 19). ``RAY_worker_niceness`` set by the user is left alone.
    """
    if _RAY_NICENESS in os.environ or not hasattr(os, "getpriority"):
        yield
        return
    os.environ[_RAY_NICENESS] = "0"  # an increment over the inherited niceness
    try:
        yield
    finally:
        del os.environ[_RAY_NICENESS]


def run_sweep(
    runs: Sequence[SweepRun],
    run_fn: RunFn | None = None,
    *,
    out_dir: str | Path | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    cpus_per_run: float = 1.0,
    gpus_per_run: float = 0.0,
    max_retries: int = 1,
    on_progress: Callable[[SweepProgress], None] | None = None,
    poll_s: float = 5.0,
) -> SweepResult:
    """Run every run not yet done as a Ray task (``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs each).

    ``run_fn(cfg)`` runs one run into ``cfg.run.out_dir / cfg.run.name`` (default: the training engine); it
    must be importable or picklable by Ray. ``on_progress`` is called when a run finishes or fails, and at
    least every ``poll_s`` seconds.
    """
    if max_retries < 0 or cpus_per_run < 0 or gpus_per_run < 0:
        raise ConfigError("sweep: max_retries, cpus_per_run and gpus_per_run must be >= 0")
    start = time.perf_counter()
    out = Path(out_dir) if out_dir is not None else _common_out_dir(runs)
    with folder_lock(out, "sweep folder"):  # one sweep per out_dir; each run also locks its own directory
        book = _Book(runs, out, max_retries, on_progress)
        if not book.queue:  # every run is done already: nothing to start Ray for
            book.close()
        else:
            with ray_session(address, num_cpus) as ray:
                _drive(ray, book, run_fn or engine_run, cpus_per_run, gpus_per_run, local=address is None,
                       poll_s=poll_s)  # fmt: skip
    seconds = time.perf_counter() - start
    log.info("sweep %s finished in %.1f s: %s", book.out, seconds, book.counts())
    return SweepResult(book.out, tuple(book.outcomes()), seconds, book.stale)


def _drive(
    ray: Any, book: _Book, run_fn: RunFn, cpus_per_run: float, gpus_per_run: float, local: bool, poll_s: float
) -> None:
    """Keep the cluster's capacity busy with the book's queue until every run is settled; stop in-flight runs
    on any interruption. ``sweep.json`` is written however it ends."""
    opts = {"num_cpus": cpus_per_run, "num_gpus": gpus_per_run, "max_retries": 0}
    task, fn_ref = ray.remote(_execute), ray.put(run_fn)
    try:
        while book.queue or book.in_flight:
            capacity = _capacity(ray, cpus_per_run, gpus_per_run, local=local)
            while book.queue and len(book.in_flight) < capacity:
                run = book.start()
                book.in_flight[task.options(name=run.name, **opts).remote(fn_ref, run.config)] = run
            book.progress()
            ready, _ = ray.wait(list(book.in_flight), num_returns=1, timeout=poll_s)
            for ref in ready:
                book.settle(ref, *_outcome(ray, ref, book.in_flight[ref]))
        book.progress()
    except BaseException:
        book.interrupted = True
        _stop(ray, list(book.in_flight))
        log.warning("sweep interrupted with %d runs in flight; run it again to resume", len(book.in_flight))
        raise
    finally:
        book.close()


class _Book:
    """The sweep's bookkeeping: queue, runs in flight, attempts, outcomes, the event log and the progress counts."""

    def __init__(self, runs: Sequence[SweepRun], out: Path, max_retries: int, on_progress: Any) -> None:
        self.runs, self.out, self.max_retries, self.on_progress = runs, out, max_retries, on_progress
        self.skipped = [r for r in runs if read_status(r.path) == DONE]
        self.queue = deque(r for r in runs if read_status(r.path) != DONE)
        self.in_flight: dict[Any, SweepRun] = {}
        self.attempts: dict[str, int] = {}
        self.errors: dict[str, str] = {}
        self.done: list[str] = []
        self.failed: list[str] = []
        self.interrupted = False
        # their results would be reported under the grid's settings: refuse before anything runs
        refuse_stale(self.skipped, f"sweep {out}", STALE_REMEDY)
        self.stale: tuple[str, ...] = ()
        self.events = EventLog(out / "sweep-events.jsonl")
        for run in self.skipped:
            self.events.write(run.name, "skipped")
        log.info("sweep %s: %d runs, %d already done, %d to run", out, len(runs), len(self.skipped), len(self.queue))
        self.progress()

    def start(self) -> SweepRun:
        run = self.queue.popleft()
        self.attempts[run.name] = self.attempts.get(run.name, 0) + 1
        self.events.write(run.name, "started", attempt=self.attempts[run.name])
        return run

    def settle(self, ref: Any, error: str | None, retryable: bool) -> None:
        """Record a finished task: done, or failed and queued again while retries are left."""
        run = self.in_flight.pop(ref)
        attempt = self.attempts[run.name]
        if error is None:
            self.done.append(run.name)
            self.events.write(run.name, DONE, attempt=attempt)
            return
        self.errors[run.name] = error
        retry = retryable and attempt <= self.max_retries
        self.events.write(run.name, FAILED, attempt=attempt, error=error, retry=retry)
        log.warning("run %s failed (attempt %d): %s", run.name, attempt, error)
        if retry:
            self.queue.append(run)
        else:
            self.failed.append(run.name)

    def progress(self) -> None:
        if self.on_progress is not None:
            done, running, failed = len(self.skipped) + len(self.done), len(self.in_flight), len(self.failed)
            remaining = len(self.runs) - done - running - failed
            self.on_progress(SweepProgress(len(self.runs), done, running, failed, remaining, len(self.skipped)))

    def counts(self) -> str:
        return f"{len(self.skipped) + len(self.done)} done, {len(self.failed)} failed"

    def outcomes(self) -> list[RunOutcome]:
        outcomes = [RunOutcome(r.name, "skipped", 0) for r in self.skipped]
        outcomes += [RunOutcome(n, DONE, self.attempts[n], self.errors.get(n)) for n in self.done]
        return outcomes + [RunOutcome(n, FAILED, self.attempts[n], self.errors[n]) for n in self.failed]

    def close(self) -> None:
        """Write ``sweep.json``; runs still in flight (an interruption) are marked in the event log."""
        for run in self.in_flight.values():
            self.events.write(run.name, "interrupted", attempt=self.attempts[run.name])
        write_summary(self.out / "sweep.json", self.runs, self.outcomes(), self.interrupted)


# ----------------------------------------------------------------------------------------------- helpers


def _execute(run_fn: RunFn, cfg: RunConfig) -> dict[str, Any]:
    """The Ray task: run ``run_fn(cfg)`` with the visprompt log records also written to ``worker.log``."""
    run_dir = Path(cfg.run.out_dir) / (cfg.run.name or "")
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / "worker.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package_log = logging.getLogger("visprompt")
    package_log.addHandler(handler)
    package_log.setLevel(logging.INFO)
    try:
        result = run_fn(cfg)
    except Exception:
        package_log.exception("run %s failed", cfg.run.name)
        raise
    finally:
        package_log.removeHandler(handler)
        handler.close()
    return dict(result) if isinstance(result, Mapping) else {}


def _outcome(ray: Any, ref: Any, run: SweepRun) -> tuple[str | None, bool]:
    """(None, _) when the run finished, else (its error as one line, whether a retry can help).

    A :class:`~visprompt.errors.VispromptError` (a bad config, missing data or weights) fails the same way
    every time, so it is not retried; anything else (a crash, a lost worker, a numerical failure) may pass.
    """
    try:
        ray.get(ref)
    except ray.exceptions.RayError as exc:
        cause = getattr(exc, "cause", None)  # the run function's own exception, when Ray could carry it
        err = cause if isinstance(cause, BaseException) else exc
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        # a lock still held by the lost attempt's process (a node dying) clears when that process is gone
        retryable = not isinstance(err, VispromptError) or isinstance(err, FolderLockedError)
        return f"{type(err).__name__}: {lines[0] if lines else ''}"[:500], retryable
    status = read_status(run.path)
    return (None, True) if status == DONE else (f"the run function returned but the run's status is {status!r}", True)


def _stop(ray: Any, refs: list[Any], timeout: float = 30.0) -> None:
    """Cancel tasks and wait until they have stopped, so that a restarted sweep never races a dying worker.

    A cancellation that reaches a task while it is being handed to a worker can be lost; it is re-sent every
    second until the task stops or ``timeout`` passes.
    """
    deadline = time.monotonic() + timeout
    try:
        while refs and time.monotonic() < deadline:
            for ref in refs:
                ray.cancel(ref, force=True)
            _, refs = ray.wait(refs, num_returns=len(refs), timeout=1.0)
    except BaseException:  # a second Ctrl-C: stop waiting
        pass
    if refs:
        log.warning("%d cancelled runs may still be running", len(refs))


def _capacity(ray: Any, cpus_per_run: float, gpus_per_run: float, local: bool) -> int:
    """How many runs fit on the cluster at once (at least one, so a growing cluster is not starved)."""
    resources = ray.cluster_resources()
    limits = []
    if cpus_per_run > 0:
        limits.append(math.floor(resources.get("CPU", 0) / cpus_per_run + 1e-9))
    if gpus_per_run > 0:
        gpus = resources.get("GPU", 0)
        if gpus == 0 and local:
            raise VispromptError(f"--gpus-per-run {gpus_per_run:g}: this machine has no GPU that Ray can use")
        limits.append(math.floor(gpus / gpus_per_run + 1e-9))
    return max(1, min(limits)) if limits else 1_000_000


def _common_out_dir(runs: Sequence[SweepRun]) -> Path:
    dirs = {Path(r.config.run.out_dir) for r in runs}
    if len(dirs) != 1:
        raise ConfigError(f"sweep: runs write to {len(dirs)} different out_dirs; pass out_dir explicitly")
    return dirs.pop()
