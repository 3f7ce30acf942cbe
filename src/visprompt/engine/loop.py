"""The generic training loop: it knows nothing about prompts, OT or losses.

It drives a method (:class:`~visprompt.methods.base.MethodBase`) epoch by epoch: the method's whole-set work
(``before_epoch``), its batch plan (``plan_epoch``, drawn from a generator seeded by (seed, epoch) so a
resumed run sees the same order), per-batch preparation (``split``) and the step itself (``forward`` ->
dict with ``loss``), then backward and an optimizer step under the run's precision, and one scheduler step
per epoch. Statistics are aggregated by :class:`EpochMeter`; ``on_epoch_end`` receives each epoch's record
(the runner logs and checkpoints there).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import torch

from visprompt.engine.progress import progress
from visprompt.engine.runtime import Precision
from visprompt.errors import VispromptError
from visprompt.methods.base import Batch, MethodBase, PartMean, TrainView

log = logging.getLogger(__name__)

__all__ = ["DivergenceError", "EpochMeter", "TrainData", "epoch_seed", "fit"]


class DivergenceError(VispromptError):
    """The loss became NaN or infinite (a learning rate too high for the setting, usually)."""


class TrainData(Protocol):
    """The training set as the loop consumes it (cached features or images, see ``engine.data``)."""

    num_samples: int
    #: seconds spent so far encoding the training images for whole-set passes (a one-off cost that a view's first
    #: read may pay inside an epoch: the loop keeps it out of that epoch's ``epoch_time``)
    encoding_s: float

    def batches(self, plan: list[torch.Tensor], seed: int) -> Iterable[Batch]: ...

    def view(self, method: MethodBase) -> TrainView: ...


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s batch order (independent of what ran before it)."""
    return (seed * 1_000_003 + epoch * 7919) % 2**63


class EpochMeter:
    """Aggregate step statistics: ``n_*``/``sel_*`` keys are summed, the others averaged by batch size (a
    :class:`~visprompt.methods.base.PartMean` by the size of its part)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.weights: dict[str, float] = {}

    def update(self, stats: dict[str, Any], n: int = 1) -> None:
        for key, value in stats.items():
            weight = value.count if isinstance(value, PartMean) else n
            value = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
            counted = key.startswith(("n_", "sel_"))
            if counted and not value.is_integer():  # summary() would truncate it to an int: refuse, do not log a lie
                raise ValueError(f"step statistic {key!r} is a count (n_*/sel_* keys are summed and logged as "
                                 f"integers), got {value}; name a rate or a mean without that prefix")  # fmt: skip
            self.sums[key] = self.sums.get(key, 0.0) + (value if counted else value * weight)
            self.weights[key] = self.weights.get(key, 0.0) + (1.0 if counted else weight)

    def summary(self) -> dict[str, float]:
        out = {}
        for key, total in self.sums.items():
            out[key] = int(total) if key.startswith(("n_", "sel_")) else total / max(self.weights[key], 1e-12)
        hits, selected, truth = (self.sums.get(k) for k in ("sel_hits", "sel_selected", "sel_true_clean"))
        if hits is not None:
            out["sel_precision"] = hits / selected if selected else float("nan")
            out["sel_recall"] = hits / truth if truth else float("nan")
        return out


def _steps(method: MethodBase, batches: Iterable[Batch], meter: EpochMeter, precision: Precision) -> Iterator[Batch]:
    """Every update step of the epoch: the parts ``method.split`` makes of each batch."""
    for batch in batches:
        with precision.autocast():
            parts, stats = method.split(batch)
        meter.update(stats)
        yield from parts


def fit(
    method: MethodBase,
    data: TrainData,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    epochs: int,
    batch_size: int,
    precision: Precision,
    seed: int,
    start_epoch: int = 0,
    scaler: torch.amp.GradScaler | None = None,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    show_progress: bool | None = None,
) -> list[dict[str, Any]]:
    """Train ``method`` from ``start_epoch`` to ``epochs``; returns the per-epoch records (1-based ``epoch``).

    A record's ``epoch_time`` is the epoch's seconds without the one-off encoding of the training images that its
    whole-set pass may pay (``data.encoding_s``, reported apart).
    """
    scaler = scaler or precision.scaler()
    records = []
    epoch_bar = progress(range(start_epoch, epochs), desc="epochs", total=epochs - start_epoch, enabled=show_progress)
    for epoch in epoch_bar:
        started, encoded = time.perf_counter(), data.encoding_s
        meter = EpochMeter()
        method.train()
        view = data.view(method)
        view.batch_size, view.generator = batch_size, torch.Generator().manual_seed(epoch_seed(seed, epoch) + 2)
        meter.update(method.before_epoch(epoch, view))
        generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        plan = method.plan_epoch(epoch, data.num_samples, batch_size, generator)
        lr = optimizer.param_groups[0]["lr"]
        batches = progress(
            data.batches(plan, seed=epoch_seed(seed, epoch) + 1),
            desc=f"epoch {epoch + 1}", total=len(plan), leave=False, enabled=show_progress,
        )  # fmt: skip
        for part in _steps(method, batches, meter, precision):
            with precision.autocast():
                out = method(part)
            loss = out.pop("loss")
            if loss.requires_grad:
                if not precision.needs_scaler and not torch.isfinite(loss):
                    raise DivergenceError(
                        f"epoch {epoch + 1}: the loss is {float(loss.detach())}; training diverged (lower optim.lr?)"
                    )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            meter.update({"loss": loss, **out}, n=int(part["labels"].numel()))
        scheduler.step()
        spent = time.perf_counter() - started - (data.encoding_s - encoded)  # without the one-off encoding
        record = {"epoch": epoch + 1, "lr": lr, **meter.summary(), "epoch_time": spent}
        log.info("epoch %d/%d %s", epoch + 1, epochs, _brief(record))
        records.append(record)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, record)
    return records


def _brief(record: dict[str, Any]) -> str:
    keys = ("loss", "lr", "n_clean", "sel_precision", "sel_recall", "gate_mean", "epoch_time")
    shown = []
    for key in keys:
        if key in record:
            value = record[key]
            shown.append(
                f"{key}={value:.4g}" if isinstance(value, float) and math.isfinite(value) else f"{key}={value}"
            )
    return " ".join(shown)
