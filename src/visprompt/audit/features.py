"""Frozen image features for an audit, computed once and cached on disk, and zero-shot class embeddings.

The cache is one ``.npz`` per (backbone, image list) in a folder the caller names: the key hashes the backbone
(arch and weights) and every image's path, size and modification time, so a changed image is re-encoded and an
unchanged set is never encoded twice (a second audit of 10k images then starts from the cache).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from visprompt.data.records import Sample
from visprompt.fileio import atomic_path

log = logging.getLogger(__name__)

__all__ = ["cached_features", "features_key", "zero_shot_embeddings"]


def features_key(backbone: str, samples: Sequence[Sample]) -> str:
    """A hash of the backbone name and every image's path, size and mtime (in order)."""
    h = hashlib.sha256(backbone.encode())
    for s in samples:
        st = os.stat(s.path)
        h.update(f"\n{s.path}\t{st.st_size}\t{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def cached_features(
    clip: nn.Module,
    samples: Sequence[Sample],
    *,
    backbone: str,
    cache_dir: str | Path | None,
    device: torch.device,
    batch_size: int = 100,
    num_workers: int = 0,
) -> np.ndarray:
    """Pooled frozen image features (N, E) float32 of ``samples``, from ``cache_dir`` when cached there."""
    from visprompt.engine.build import image_transform
    from visprompt.engine.data import encode_samples
    from visprompt.engine.runtime import resolve_precision

    file = None
    if cache_dir is not None:
        file = Path(cache_dir) / f"features-{features_key(backbone, samples)}.npy"
        if file.is_file():
            feats = np.load(file, allow_pickle=False)
            if feats.shape[0] == len(samples):
                log.info("frozen features of %d images from %s", len(samples), file)
                return feats
    out = encode_samples(
        clip, samples, image_transform(clip), batch_size=batch_size, device=device,
        precision=resolve_precision("fp32", device), keep_tokens=False, num_workers=num_workers,
        desc="encoding images for the audit",
    )  # fmt: skip
    feats = out.pooled.float().cpu().numpy()
    if file is not None:
        with atomic_path(file) as tmp, open(tmp, "wb") as f:
            np.save(f, feats)
        log.info("cached frozen features of %d images in %s", len(samples), file)
    return feats


@torch.no_grad()
def zero_shot_embeddings(clip: nn.Module, classnames: Sequence[str], dataset: str) -> torch.Tensor:
    """(C, E) normalised zero-shot class embeddings with the dataset's template (as the ``zeroshot`` method)."""
    from visprompt.models import ZeroShotClassifier, templates_for

    return ZeroShotClassifier(clip, classnames, templates_for(dataset)).class_embeddings.float().cpu()
