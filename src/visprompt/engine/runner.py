""":func:`train_run`, what ``visprompt train`` calls: data, backbone, method, training with checkpoints,
evaluation, the run directory.

It locks the run directory (:mod:`visprompt.runlock`); a directory holding a run made with other settings (the
whole resolved config is compared, not the name) or from other inputs (the dataset's images or labels, the
backbone's weights: :mod:`visprompt.engine.inputs`) is refused unless ``restart``. A run whose status is ``done``
is skipped; one holding a checkpoint resumes after its last completed epoch with the optimizer, scheduler, RNG
and method state it saved, and ends with the same metrics as an uninterrupted run. Before any compute, every
image the run reads is checked (:mod:`visprompt.data.precheck`). Errors during setup (bad data or weights)
leave no run directory behind; an error once training started marks the run ``failed`` and keeps the error in
``error.txt`` (on a full disk, at least the status).
"""

from __future__ import annotations

import logging
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import torch
from torch import nn

from visprompt.config import RunConfig, load_run_config, to_yaml
from visprompt.data.noise import noise_stats
from visprompt.data.pipeline import prepare_fewshot, read_splits, splits_to_json
from visprompt.data.precheck import check_run_data
from visprompt.data.records import DatasetSplits
from visprompt.engine.build import image_transform, load_clip, load_trainable, run_name
from visprompt.engine.data import FeatureData, FeatureSet, ImageData, encode_samples, predict_logits
from visprompt.engine.inputs import INPUTS_FILE, inputs_change, inputs_record
from visprompt.engine.loop import fit
from visprompt.engine.metrics import classification_metrics
from visprompt.engine.noise_inputs import noise_inputs
from visprompt.engine.optim import build_optimizer, build_scheduler
from visprompt.engine.provenance import environment, environment_label, git_sha, versions
from visprompt.engine.rundir import DONE, FAILED, RUNNING, RunDir, RunFileError
from visprompt.engine.runtime import (
    Precision,
    get_rng_state,
    resolve_device,
    resolve_precision,
    seed_everything,
    set_rng_state,
)
from visprompt.engine.sameconfig import config_differences
from visprompt.engine.store import FeatureStore, backbone_checksum, resolve_store
from visprompt.errors import ConfigError
from visprompt.methods import MethodBase, build_method, method_spec
from visprompt.models.templates import templates_for
from visprompt.runlock import LOCK_NAME, folder_lock

log = logging.getLogger(__name__)

__all__ = ["RunResult", "train_run"]

EpochHook = Callable[[int, dict[str, Any]], None]


@dataclass
class RunResult:
    """What :func:`train_run` returns."""

    run_dir: Path
    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False
    resumed_from: int | None = None


def _backbone_key(cfg: RunConfig, clip: nn.Module) -> str:
    """Names what noise that depends on the frozen CLIP is computed from, in split-cache keys: its arch and the
    checksum of what it computes with (not the weights' path: a file replaced there gives other noise), and for
    noise from class-name embeddings (asym-semantic) the zero-shot templates the names are read through."""
    key = f"{cfg.backbone.arch}|{backbone_checksum(clip)}"
    if "targets" in cfg.noise.definition.needs:
        key += "|" + "|".join(templates_for(cfg.data.dataset))
    return key


def _feature_store(cfg: RunConfig) -> FeatureStore | None:
    return resolve_store(cfg.run.feature_store, cfg.run.out_dir)


def _prepare_splits(cfg: RunConfig, rd: RunDir, clip: nn.Module, device: torch.device) -> DatasetSplits:
    if rd.split_file.is_file():  # a resumed run keeps the exact split it started with
        return read_splits(rd.split_file)
    d, n = cfg.data, cfg.noise
    inputs, backbone = {}, None
    if n.definition.depends_on_backbone:
        backbone = _backbone_key(cfg, clip)  # from the frozen CLIP, called only if the split is not cached
        # in fp32 whatever the run's precision, so the realised noise does not depend on it
        inputs = noise_inputs(clip, d.dataset, image_transform(clip), batch_size=cfg.optim.eval_batch_size,
                              device=device, precision=resolve_precision("fp32", device),
                              num_workers=d.num_workers, store=_feature_store(cfg))  # fmt: skip
    return prepare_fewshot(
        d.dataset, d.root, d.shots, n, cfg.run.seed, path=d.path, cache_dir=Path(cfg.run.out_dir) / ".splits",
        backbone=backbone, **inputs,
    )  # fmt: skip


def _run_path(cfg: RunConfig) -> Path:
    """``<out_dir>/<name>``; a name that would leave ``out_dir`` (absolute, ``..``) is a ConfigError."""
    name = run_name(cfg)
    parts = PurePath(name).parts
    if not parts or PurePath(name).is_absolute() or any(p in ("..", ".") for p in parts) or "\\" in name:
        raise ConfigError(f"run.name {name!r}: expected a relative path inside --out, without '..' or '.' parts")
    return Path(cfg.run.out_dir) / name


# The files a run writes (--restart removes them, and only them), and the folders `visprompt audit` writes in it.
RUN_FILES = ("status", "error.txt", "metrics.json", "log.jsonl", "checkpoint.safetensors", "state.pt",
             "split.json", "config.yaml", INPUTS_FILE, "worker.log")  # fmt: skip
RUN_FOLDERS = ("audit", "audit-cache")


def train_run(
    cfg: RunConfig,
    *,
    restart: bool = False,
    on_epoch_end: EpochHook | None = None,
    show_progress: bool | None = None,
) -> RunResult:
    """Train and evaluate one run as ``cfg`` describes, in ``<out_dir>/<name>``; see the module docstring.

    The run directory is locked (:func:`visprompt.runlock.folder_lock`) while this runs. A directory that
    holds a run with other settings (finished or not) is refused, unless ``restart``, which deletes the
    run's files first. ``on_epoch_end(epoch, record)`` is called after each epoch's checkpoint is written
    (tests raise there to simulate a crash).
    """
    rd = RunDir(_run_path(cfg))
    fresh = not rd.path.exists()
    try:
        with folder_lock(rd.path):
            if restart:
                _clear(rd)
            return _locked_run(cfg, rd, on_epoch_end, show_progress)
    finally:
        if fresh:
            _remove_if_empty(rd.path)


def _clear(rd: RunDir) -> None:
    for name in RUN_FILES:
        (rd.path / name).unlink(missing_ok=True)
    for name in RUN_FOLDERS:  # an audit of the replaced run would sit beside the new one
        shutil.rmtree(rd.path / name, ignore_errors=True)
    log.info("%s: removed the previous run's files (--restart)", rd.path)


def _remove_if_empty(path: Path) -> None:
    """Remove a run directory that holds nothing but its lock file (a run whose setup failed)."""
    try:
        if {p.name for p in path.iterdir()} <= {LOCK_NAME}:
            (path / LOCK_NAME).unlink(missing_ok=True)
            path.rmdir()
    except OSError:
        pass


def _saved_config(rd: RunDir) -> RunConfig:
    try:
        return load_run_config(rd.config_file)
    except ConfigError as exc:
        raise RunFileError(f"{exc}; run with --restart to start the run afresh, or choose another --name") from None


def _locked_run(cfg: RunConfig, rd: RunDir, on_epoch_end: EpochHook | None, show_progress: bool | None) -> RunResult:
    status = rd.status()
    if rd.config_file.is_file():
        diffs = config_differences(_saved_config(rd), cfg)
        if diffs:
            more = f" and {len(diffs) - 1} more" if len(diffs) > 1 else ""
            state = "a finished" if status == DONE else "an unfinished"
            raise ConfigError(
                f"{rd.path} holds {state} run made with other settings ({diffs[0]}{more}); "
                "add --restart to replace it, or choose another --name or --out"
            )
    elif status == DONE:
        raise RunFileError(f"{rd.path}: status says done but config.yaml is missing; run with --restart")
    if status == DONE:
        _refuse_changed_inputs(cfg, rd, status, None)
        log.info("%s is done with the same settings and inputs; skipping (--restart runs it again)", rd.path)
        metrics = rd.read_json("metrics.json") if rd.metrics_file.is_file() else {}
        return RunResult(rd.path, DONE, metrics, skipped=True)
    started = time.perf_counter()
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    device = resolve_device(cfg.run.device)
    precision = resolve_precision(cfg.optim.precision, device)
    clip = load_clip(cfg, device)  # first: a missing weights file is the commonest setup error
    if rd.config_file.is_file():  # resumed: from the data and weights it started with, or refused
        _refuse_changed_inputs(cfg, rd, status, clip)
    splits = _prepare_splits(cfg, rd, clip, device)
    check_run_data(splits, workers=max(1, cfg.data.num_workers or 4))  # before any compute is spent
    seed_everything(cfg.run.seed)
    method = build_method(method_spec(cfg), clip, splits.classnames).to(device)
    if not (rd.path / INPUTS_FILE).is_file() and not rd.config_file.is_file():  # a run made before has no record
        rd.write_json(INPUTS_FILE, inputs_record(cfg, clip))
    rd.write_text("config.yaml", to_yaml(cfg))
    if not rd.split_file.is_file():
        rd.write_json("split.json", splits_to_json(splits))
    rd.set_status(RUNNING)
    try:
        return _train_and_evaluate(
            cfg, rd, splits, clip, method, device, precision, started, on_epoch_end, show_progress
        )
    except BaseException as exc:
        _mark_failed(rd, exc)
        raise


def _refuse_changed_inputs(cfg: RunConfig, rd: RunDir, status: str | None, clip: nn.Module | None) -> None:
    """Raise :class:`ConfigError` when the run in ``rd`` was made from data or a backbone other than ``cfg``'s as
    they are now (:func:`~visprompt.engine.inputs.inputs_change`; ``clip``: the backbone as loaded now)."""
    if not (rd.path / INPUTS_FILE).is_file():
        return
    change = inputs_change(
        cfg, rd.read_json(INPUTS_FILE), clip, load_clip=lambda: load_clip(cfg, resolve_device(cfg.run.device))
    )
    if change:
        state = "a finished" if status == DONE else "an unfinished"
        raise ConfigError(
            f"{rd.path} holds {state} run whose inputs differ: {change}; add --restart to run it again on them, or "
            "choose another --name or --out"
        )


def _mark_failed(rd: RunDir, exc: BaseException) -> None:
    """Status ``failed`` with the error; when the disk is full, at least the status (never left ``running``)."""
    try:
        rd.set_status(FAILED, error=f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}")
        return
    except OSError:
        pass
    try:  # no room for a temporary file: overwrite the few bytes of the status file in place
        with open(rd.status_file, "r+b" if rd.status_file.exists() else "wb") as f:
            f.write(b"failed\n")
            f.truncate()
    except OSError:
        log.error("%s: could not mark the run failed (status may read 'running')", rd.path)


def _train_and_evaluate(
    cfg: RunConfig,
    rd: RunDir,
    splits: DatasetSplits,
    clip: nn.Module,
    method: MethodBase,
    device: torch.device,
    precision: Precision,
    started: float,
    on_epoch_end: EpochHook | None,
    show_progress: bool | None,
) -> RunResult:
    eval_tf = image_transform(clip)
    keep_tokens = method.classifier.uses_tokens
    timings: dict[str, float] = {"setup_s": time.perf_counter() - started}
    resumed_from, trained_in = None, []  # trained_in: filled by _train; a method that does not train has none
    if method.trains:
        data = _training_data(cfg, splits, clip, eval_tf, keep_tokens, device, precision, timings)
        resumed_from, trained_in = _train(cfg, rd, method, data, device, precision, on_epoch_end, show_progress)
        if data.encoding_s:  # encoded at an epoch's first whole-set pass: out of that epoch's time (engine.loop.fit)
            timings["features_s"] = data.encoding_s
    else:
        rd.truncate_log(0)
        rd.save_checkpoint({}, 0, {"method": method.extra_state()})

    t0 = time.perf_counter()
    logits = predict_logits(
        method.classifier, clip, splits.test, eval_tf, batch_size=cfg.optim.eval_batch_size, device=device,
        precision=precision, keep_tokens=keep_tokens, num_workers=cfg.data.num_workers, store=_feature_store(cfg),
    )  # fmt: skip
    timings["eval_s"] = time.perf_counter() - t0
    labels = torch.tensor([s.label for s in splits.test])
    metrics = _final_metrics(
        cfg, rd, splits, method, logits, labels, timings, device, precision, resumed_from, trained_in
    )
    rd.write_json("metrics.json", metrics)
    rd.set_status(DONE)
    log.info("%s: top-1 %.2f%%, macro-F1 %.2f%% on %d test images", rd.path.name, metrics["top1"],
             metrics["macro_f1"], metrics["num_test"])  # fmt: skip
    return RunResult(rd.path, DONE, metrics, resumed_from=resumed_from)


def _training_data(
    cfg: RunConfig,
    splits: DatasetSplits,
    clip: nn.Module,
    eval_tf: Callable[[Any], torch.Tensor],
    keep_tokens: bool,
    device: torch.device,
    precision: Precision,
    timings: dict[str, float],
) -> FeatureData | ImageData:
    """Cached frozen outputs when nothing augments the images, else an image loader (see ``engine.data``).

    The frozen outputs of the un-augmented training images are encoded once: here, timed as
    ``timings["features_s"]``, for cached features; for an image loader, at the first whole-set pass a method asks
    for (full-set OT, JoAPR's split, visprompt-plus), timed by the loader (``ImageData.encoding_s``), or never.
    """

    def train_features() -> FeatureSet:
        return encode_samples(
            clip, splits.train, eval_tf, batch_size=cfg.optim.eval_batch_size, device=device, precision=precision,
            keep_tokens=keep_tokens, num_workers=cfg.data.num_workers, desc="encoding train images",
            store=_feature_store(cfg),
        )  # fmt: skip

    common = {"device": device, "precision": precision, "eval_batch_size": cfg.optim.eval_batch_size}
    if not cfg.data.augment and cfg.run.cache_features:
        t0 = time.perf_counter()
        features = train_features()
        timings["features_s"] = time.perf_counter() - t0
        return FeatureData(splits.train, features, **common)
    train_tf = image_transform(clip, train=cfg.data.augment)
    return ImageData(splits.train, train_tf, train_features, num_workers=cfg.data.num_workers, **common)


def _train(
    cfg: RunConfig,
    rd: RunDir,
    method: MethodBase,
    data: FeatureData | ImageData,
    device: torch.device,
    precision: Precision,
    on_epoch_end: EpochHook | None,
    show_progress: bool | None,
) -> tuple[int | None, list[str]]:
    """Train from scratch or from the last checkpoint.

    Returns the epoch resumed after (None: fresh start) and the environments the run was trained in, in order
    (:func:`~visprompt.engine.provenance.environment_label`): more than one when a run was resumed on a machine
    that rounds differently (another processor, thread count or torch), whose later epochs then differ in their
    last digits from an uninterrupted run's. The resume state carries the list.
    """
    o = cfg.optim
    optimizer = build_optimizer(method.param_groups(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    scheduler = build_scheduler(optimizer, epochs=o.epochs, warmup_epochs=o.warmup_epochs, warmup_lr=o.warmup_lr)
    scaler = precision.scaler()
    state = rd.load_state()
    resumed_from = _restore(rd, state, method, optimizer, scheduler, scaler, device) if state is not None else None
    rd.truncate_log(resumed_from or 0)
    here = environment_label(device)
    trained_in = _trained_in(state) if state is not None else []
    if trained_in and trained_in[-1] != here:
        log.warning("%s: resuming a run trained in another environment (%s) in this one (%s): its remaining epochs "
                    "round differently, and metrics.json lists both", rd.path.name, trained_in[-1], here)  # fmt: skip
    if not trained_in or trained_in[-1] != here:
        trained_in.append(here)

    def epoch_end(epoch: int, record: dict[str, Any]) -> None:
        rd.append_log(record)  # the log first: a crash before the checkpoint re-runs (and re-logs) the epoch
        resume = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": get_rng_state(),
            "method": method.extra_state(),
            "environments": trained_in,
        }
        rd.save_checkpoint(method.named_trainable_parameters(), epoch, resume)
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)

    fit(
        method, data, optimizer, scheduler, epochs=o.epochs, batch_size=o.batch_size, precision=precision,
        seed=cfg.run.seed, start_epoch=resumed_from or 0, scaler=scaler, on_epoch_end=epoch_end,
        show_progress=show_progress,
    )  # fmt: skip
    return resumed_from, trained_in


def _trained_in(state: dict[str, Any]) -> list[str]:
    """The environments a resume state was trained in; a state written before they were recorded names none."""
    saved = state.get("environments")
    if isinstance(saved, list) and saved and all(isinstance(e, str) for e in saved):
        return list(saved)
    return ["not recorded (a resume state written before visprompt recorded its environment)"]


def _restore(
    rd: RunDir,
    state: dict[str, Any],
    method: MethodBase,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    device: torch.device,
) -> int:
    """Load the last completed epoch's parameters and state; returns that epoch."""
    load_trainable(rd, method, device, state.get("params"))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    method.load_extra_state(state.get("method", {}))
    set_rng_state(state["rng"])
    log.info("%s: resuming after epoch %d", rd.path.name, state["epoch"])
    return int(state["epoch"])


def _final_metrics(
    cfg: RunConfig,
    rd: RunDir,
    splits: DatasetSplits,
    method: MethodBase,
    logits: torch.Tensor,
    labels: torch.Tensor,
    timings: dict[str, float],
    device: torch.device,
    precision: Precision,
    resumed_from: int | None,
    trained_in: list[str],
) -> dict[str, Any]:
    scores = classification_metrics(logits.argmax(dim=-1), labels, splits.classnames)
    records = rd.read_log()
    trained = cfg.optim.epochs if method.trains else 0  # the checkpoint's epoch: the truth, whatever the log says
    logged = sorted({r["epoch"] for r in records if isinstance(r.get("epoch"), int)})
    if logged != list(range(1, trained + 1)):
        log.warning("%s: log.jsonl has records for %d of the %d epochs trained (a damaged log); metrics count %d",
                    rd.log_file, len(logged), trained, trained)  # fmt: skip
    # each second once: setup, the one-off encoding of the training images (features_s, wherever it ran), the
    # epochs without it (their logged epoch_time), the evaluation
    epoch_times = [float(r["epoch_time"]) for r in records if "epoch_time" in r]
    timings = {**timings, "train_s": sum(epoch_times), "epoch_mean_s": sum(epoch_times) / max(len(epoch_times), 1)}
    timings["total_s"] = (
        timings["train_s"] + timings.get("setup_s", 0.0) + timings.get("features_s", 0.0) + timings["eval_s"]
    )
    return {
        "run": rd.path.name,
        "method": cfg.method.name,
        "dataset": splits.name,
        "top1": scores["top1"],
        "macro_f1": scores["macro_f1"],
        "per_class_accuracy": scores["per_class_accuracy"],
        "num_test": scores["num_samples"],
        "num_train": len(splits.train),
        "train_noise": noise_stats(splits.train),  # the realised noise (noise.rate is floor(rate x N) of N labels)
        "num_classes": len(splits.classnames),
        "epochs": trained,
        "log_complete": logged == list(range(1, trained + 1)),
        "last_epoch": records[-1] if records else None,
        "timings": timings,
        "trainable_parameters": sum(p.numel() for p in method.trainable_parameters()),
        "parameters": method.classifier.summary(),
        "precision": precision.name,
        "resumed_from_epoch": resumed_from,
        "environment": environment(device, trained_in),
        "versions": versions(),
        "git_sha": git_sha(),
    }
