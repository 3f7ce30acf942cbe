"""Trained runs rebuilt for inference: ``visprompt eval`` and ``visprompt predict``.

Like training, inference reads the frozen image features of an image set from the run's feature store
(``run.feature_store``, :mod:`visprompt.engine.store`) when it holds them, and fills it otherwise: evaluating a
finished run reads the test split's features its training wrote, and predicting the same images again reads
them from the first time. An entry is keyed by everything that determines its bytes, so logits are
bit-identical with and without the store (tests/test_feature_store.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

import torch
from torch import nn

from visprompt.config import RunConfig, load_run_config
from visprompt.data.pipeline import read_splits, splits_from_json
from visprompt.data.records import DatasetSplits, Sample
from visprompt.engine.build import image_transform, load_clip, load_trainable, run_name
from visprompt.engine.data import predict_logits
from visprompt.engine.rundir import DONE, FAILED, RUNNING, RunDir
from visprompt.engine.runtime import resolve_device, resolve_precision, seed_everything
from visprompt.engine.store import FeatureStore, resolve_store
from visprompt.errors import ConfigError
from visprompt.methods import MethodBase, build_method, method_spec

log = logging.getLogger(__name__)

__all__ = ["LoadedRun", "load_run", "run_feature_store", "run_splits"]


def run_feature_store(rd: RunDir, cfg: RunConfig, setting: str | bool | None = True) -> FeatureStore | None:
    """The feature store inference uses for a run: its saved ``run.feature_store`` (``setting=True``), or ``setting``.

    ``setting``: True (as the run was trained), ``"auto"``, a folder, or None/False (no store). ``"auto"`` is
    ``.features`` beside the run directory where it is *now* (the folder as many levels up as the run's name
    has parts), not the ``out_dir`` of config.yaml: that one may be relative to another working directory, or
    the runs may have moved since. Where the run has not moved, it is the store its training used.
    """
    value = cfg.run.feature_store if setting is True else (setting or None)
    out_dir = rd.path.absolute()
    for _ in PurePath(run_name(cfg)).parts:
        out_dir = out_dir.parent
    return resolve_store(value, out_dir)


def run_splits(rd: RunDir, cfg: RunConfig, data_root: str | Path | None = None) -> DatasetSplits:
    """The run's split.json; with ``data_root``, its images are looked up under that root instead of the saved one.

    The saved root is ``data.root`` for registered datasets, the image folder for ``folder`` data and the CSV's
    folder for ``csv`` data; image paths keep their place relative to it.
    """
    if data_root is None:
        return read_splits(rd.split_file)
    record = json.loads(rd.split_file.read_text())
    d = cfg.data
    old_root = Path(d.path if d.dataset == "folder" else Path(d.path).parent if d.dataset == "csv" else d.root)
    old_root, base = old_root.absolute(), Path(record["root"]).absolute()
    try:
        relative = base.relative_to(old_root)
    except ValueError:
        raise ConfigError(
            f"{rd.split_file}: its images ({base}) are not under the run's data root {old_root}"
        ) from None
    record["root"] = str(Path(data_root).absolute() / relative)
    return splits_from_json(record)


@dataclass
class LoadedRun:
    """A run rebuilt for inference: its config, splits, method (trained parameters loaded) and frozen CLIP."""

    cfg: RunConfig
    splits: DatasetSplits
    method: MethodBase
    clip: nn.Module
    device: torch.device
    store: FeatureStore | None = None  # frozen image features read from (and written to) here; None: always encode

    def logits(self, samples: Sequence[Sample], batch_size: int | None = None) -> torch.Tensor:
        """Logits (N, C) of ``samples`` (images read from their paths) with the evaluation transform.

        The image features come from :attr:`store` when it holds those of exactly these images (in this order,
        unchanged on disk, same batch size and settings); otherwise they are encoded and written to it.
        """
        precision = resolve_precision(self.cfg.optim.precision, self.device)
        return predict_logits(
            self.method.classifier, self.clip, samples, image_transform(self.clip),
            batch_size=batch_size or self.cfg.optim.eval_batch_size, device=self.device, precision=precision,
            keep_tokens=self.method.classifier.uses_tokens, store=self.store,
        )  # fmt: skip


def load_run(
    run_dir: str | Path,
    device: str = "auto",
    data_root: str | Path | None = None,
    partial: bool = False,
    feature_store: str | bool | None = True,
) -> LoadedRun:
    """Rebuild a finished run with its trained parameters, for eval and predict.

    A run whose status is not ``done`` (failed, interrupted, still running) is refused; ``partial`` loads its
    last checkpoint anyway, with a warning naming the epoch it holds. ``feature_store``: see
    :func:`run_feature_store` (default: the run's own setting). Like training, a non-zero ``run.threads`` sets
    torch's thread count (on CPU the encoder's last bits, and so the store's key, depend on it).
    """
    rd = RunDir(run_dir)
    if not rd.path.is_dir():
        raise ConfigError(f"run directory {rd.path} does not exist")
    if not rd.config_file.is_file():
        raise ConfigError(f"{rd.path} is not a run directory (no config.yaml)")
    cfg = load_run_config(rd.config_file)
    status = rd.status()
    if status != DONE:
        epoch = rd.checkpoint_epoch() if rd.checkpoint_file.is_file() else None
        held = f"its checkpoint holds epoch {epoch} of {cfg.optim.epochs}" if epoch is not None else "no checkpoint"
        phrases = {RUNNING: "is unfinished (running or interrupted)", FAILED: "failed"}
        state = phrases.get(status or "", "has not started")
        if not partial:
            raise ConfigError(f"{rd.path}: the run {state}, {held}; finish it with `visprompt train`, "
                              "or pass --partial to use it anyway")  # fmt: skip
        log.warning("%s: the run %s, %s: results are not those of the finished run", rd.path, state, held)
    dev = resolve_device(device)
    store = run_feature_store(rd, cfg, feature_store)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    splits = run_splits(rd, cfg, data_root)
    clip = load_clip(cfg, dev)
    seed_everything(cfg.run.seed)
    method = build_method(method_spec(cfg), clip, splits.classnames).to(dev)
    if method.trains:
        if not rd.checkpoint_file.is_file():
            raise ConfigError(f"{rd.path} has no checkpoint.safetensors yet (the run has not completed an epoch)")
        load_trainable(rd, method, dev)
    method.eval()
    return LoadedRun(cfg, splits, method, clip, dev, store)
