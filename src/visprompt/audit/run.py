"""Auditing a run directory's training samples: the frozen features, the run's own probabilities, the scores.

:func:`audit_run` loads a finished (or checkpointed) run, encodes its training images once (pooled features and
the trained classifier's probabilities in one pass, cached in ``<run>/audit-cache/``), adds the zero-shot class
embeddings and calls :func:`~visprompt.audit.score.audit_scores`. The run's probabilities are in-sample (the run
trained on these labels), so they enter as a prior beside the cross-fitted head, not as the score itself.
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
from visprompt.data.records import DatasetSplits, Sample
from visprompt.errors import ConfigError, DataError
from visprompt.fileio import atomic_path

log = logging.getLogger(__name__)

__all__ = ["RunAudit", "audit_run", "run_probabilities"]


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
