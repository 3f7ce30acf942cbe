"""Auditing a run directory's training samples: the frozen features, the run's own probabilities, the scores.

:func:`audit_run` loads a finished (or checkpointed) run, encodes its training images once (pooled features and
the trained classifier's probabilities in one pass, cached in ``<run>/audit-cache/``), adds the zero-shot class
embeddings and calls :func:`~visprompt.audit.score.audit_scores`. The run's probabilities are in-sample (the run
trained on these labels), so they enter as a prior beside the cross-fitted head, not as the score itself.
:func:`fix_source` loads the whole dataset a run trained on, for a corrected label file, or refuses a run whose
audit did not see every one of the dataset's own training labels.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visprompt.audit.features import features_key, zero_shot_embeddings
from visprompt.audit.score import AuditResult, audit_scores
from visprompt.config import RunConfig, load_run_config
from visprompt.data.custom import csv_labels
from visprompt.data.datasets import get_spec, load_dataset
from visprompt.data.pipeline import ALL_SHOTS
from visprompt.data.records import DatasetSplits, Sample
from visprompt.errors import ConfigError, DataError
from visprompt.fileio import atomic_path

log = logging.getLogger(__name__)

__all__ = ["FixSource", "RunAudit", "audit_run", "fix_source", "run_config", "run_probabilities"]


@dataclass
class RunAudit:
    """An audit of a run's training samples: the samples, their splits' class names and the result."""

    run_dir: Path
    splits: DatasetSplits
    samples: tuple[Sample, ...]
    result: AuditResult
    timings: dict[str, float]
    config: Any


def _check_run(run_dir: str | Path) -> Path:
    path = Path(run_dir)
    if not path.is_dir():
        raise ConfigError(f"run directory {path} does not exist")
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"{path} is not a run directory (no config.yaml)")
    if not (path / "split.json").is_file():
        raise DataError(f"{path} has no split.json: the run recorded no training samples to audit")
    return path


def run_config(run_dir: str | Path) -> RunConfig:
    """The saved configuration of the run directory ``run_dir`` (checked as :func:`audit_run` checks it)."""
    return load_run_config(_check_run(run_dir) / "config.yaml")


@dataclass
class FixSource:
    """The dataset a corrected label file is written for: every split in full, as it is on disk now."""

    splits: DatasetSplits
    labels: tuple[str, ...]  # the class names as the source writes them (a CSV's label strings), in class order


def fix_source(cfg: RunConfig, out: str | Path, data_root: str | Path | None = None) -> FixSource:
    """The whole dataset the run ``cfg`` trained on, for a corrected label file at ``out``, or a one-line error.

    Refused (:class:`ConfigError`): ``out`` is the input CSV; a run whose training labels are not all of the
    dataset's own: a few-shot run (``data.shots`` not ``all``: a file of every row would pass the labels it never
    saw off as audited) or one with synthetic noise (its labels are the run's, not the dataset's). ``data_root``:
    the dataset has moved there (as for :func:`audit_run`). Nothing is written, not even a split file.
    """
    d = cfg.data
    kind = get_spec(d.dataset).name
    root, path = d.root, d.path
    if data_root is not None:
        if kind == "folder":
            path = str(data_root)
        elif kind == "csv":
            path = str(Path(data_root) / Path(str(d.path)).name)
        else:
            root = str(data_root)
    if kind == "csv" and Path(out).resolve() == Path(str(path)).expanduser().resolve():
        raise ConfigError(f"--fix {out}: that is the input label file; the audit never overwrites it")
    if d.shots != ALL_SHOTS:
        raise ConfigError(
            f"--fix: the run trained on {d.shots} images per class (data.shots={d.shots}), not on every training "
            "image: a label file of every row would pass the labels it never saw off as audited (audit a run with "
            "data.shots=all; the --dataset form trains one)"
        )
    if not cfg.noise.is_clean:
        raise ConfigError(
            f"--fix: the run trained on labels with synthetic noise (noise.type={cfg.noise.type}), not on the "
            "dataset's own: there is no label file to correct (audit a run with noise.type=none)"
        )
    splits = load_dataset(kind, root, path, save_split=False)
    return FixSource(splits, csv_labels(str(path)) if kind == "csv" else splits.classnames)


def _encode(loaded: Any, samples: tuple[Sample, ...], cache: Path | None) -> tuple[np.ndarray, np.ndarray, bool]:
    """Pooled features (N, E) and the run's probabilities (N, C) in one image pass, or from ``cache``."""
    from visprompt.engine.build import image_transform
    from visprompt.engine.data import _encoded_batches
    from visprompt.engine.runtime import resolve_precision

    cfg = loaded.cfg
    file = None
    if cache is not None:
        ckpt = cache.parent / "checkpoint.safetensors"  # the run's probabilities depend on its parameters
        tag = hashlib.sha256(ckpt.read_bytes()).hexdigest()[:12] if ckpt.is_file() else "no-checkpoint"
        key = features_key(f"{cfg.backbone.arch}|{cfg.backbone.weights}|{tag}", samples)
        file = cache / f"audit-{key}.npz"
        if file.is_file():
            with np.load(file, allow_pickle=False) as d:
                if d["features"].shape[0] == len(samples):
                    log.info("frozen features and run probabilities of %d images from %s", len(samples), file)
                    return d["features"], d["probs"], True
    precision = resolve_precision("fp32", loaded.device)
    keep_tokens = bool(loaded.method.classifier.uses_tokens)
    classifier = loaded.method.classifier.eval()
    pooled, probs = [], []
    batches = _encoded_batches(loaded.clip, samples, image_transform(loaded.clip), cfg.optim.eval_batch_size,
                               loaded.device, precision, cfg.data.num_workers, "encoding training images")  # fmt: skip
    with torch.no_grad():
        for p, t in batches:
            pooled.append(p.float().cpu())
            probs.append(classifier.logits_from_features(p, t if keep_tokens else None).float().softmax(-1).cpu())
    feats, prob = torch.cat(pooled).numpy(), torch.cat(probs).double().numpy()
    if file is not None:
        with atomic_path(file) as tmp, open(tmp, "wb") as f:
            np.savez(f, features=feats, probs=prob)
    return feats, prob, False


def run_probabilities(run_dir: str | Path, device: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Pooled features (N, E) and the trained classifier's probabilities (N, C) of a run's training samples."""
    from visprompt.engine.inference import load_run

    path = _check_run(run_dir)
    loaded = load_run(path, device=device)
    feats, probs, _ = _encode(loaded, tuple(loaded.splits.train), path / "audit-cache")
    return feats, probs


def audit_run(run_dir: str | Path, *, device: str = "auto", data_root: str | Path | None = None,
              **options: Any) -> RunAudit:  # fmt: skip
    """Audit every training sample of a run (``options`` go to :func:`audit_scores`)."""
    from visprompt.engine.inference import load_run

    path = _check_run(run_dir)
    t0 = time.perf_counter()
    loaded = load_run(path, device=device, data_root=data_root)
    samples = tuple(loaded.splits.train)
    if not samples:
        raise DataError(f"{path}: its split.json lists no training samples to audit")
    missing = [s.path for s in samples if not Path(s.path).is_file()]
    if missing:
        raise DataError(f"{path}: {len(missing)} training images are missing, e.g. {missing[0]} (pass --data ROOT)")
    timings = {"load_s": time.perf_counter() - t0}
    t0 = time.perf_counter()
    feats, probs, cached = _encode(loaded, samples, path / "audit-cache")
    timings["features_s"] = time.perf_counter() - t0
    timings["features_cached"] = float(cached)
    text = zero_shot_embeddings(loaded.clip, loaded.splits.classnames, loaded.cfg.data.dataset)
    t0 = time.perf_counter()
    labels = np.array([s.label for s in samples])
    result = audit_scores(feats, labels, len(loaded.splits.classnames), text_features=text.numpy(),
                          extra_probs=probs if loaded.method.trains else None,
                          zs_scale=float(loaded.clip.logit_scale.exp()), **options)  # fmt: skip
    timings["score_s"] = time.perf_counter() - t0
    return RunAudit(path, loaded.splits, samples, result, timings, loaded.cfg)
