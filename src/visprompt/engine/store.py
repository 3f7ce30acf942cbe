"""A persistent store of frozen image-encoder outputs, shared by the runs of a sweep and its workers.

Notation: N images, E joint width, T visual tokens.

The image tower is frozen and, without augmentation, sees the same pixels in every run: the outputs on a
set of un-augmented images (a few-shot training set, a test split) are the same for every method, noise rate
and schedule that uses them. The store keeps them on disk, one safetensors file per image set:

    <root>/<key[:2]>/<key>.safetensors      tensors "pooled" (N, E) and, when asked for, "tokens" (N, T, E)

The key is a SHA-256 over everything that determines the bytes of the outputs:

* the image tower: its architecture name, a checksum of its weights (every tensor's name, dtype, shape and
  bytes), so random towers from different seeds never share an entry, and the settings that hold no tensor (the
  model config, e.g. its pooling, and the activation: QuickGELU or GELU);
* the preprocessing: the transform's ``repr`` (torchvision's lists every step and parameter; a transform whose
  repr holds an object address is not stored);
* how the outputs were computed: batch size, precision, device type, the versions of torch, open_clip and
  this library, and what decides the kernels' rounding (:func:`compute_signature`): on CPU the intra-op thread
  count and the instruction set torch dispatches to (RN50's convolutions round differently at 1 and 2 threads),
  on CUDA the GPU's name, compute capability and the cuDNN version;
* each image in order: absolute path, file size and modification time (ns), so an edited file misses.

A stored entry is therefore exactly what the encoder would compute again in the same process, and a run gives
bit-identical results with and without the store (tested). Outputs are kept in float32 with the dtype they
were produced in (bf16 under autocast): reading back casts to it, which is exact.

Writes go to a temporary file in the same folder, then ``os.replace``: a reader sees a whole entry or none.
Several workers filling the same entry at once each write the same bytes and the last rename wins; no lock is
taken (the duplicated work is at most one encoding per worker, not a wrong result).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from visprompt.data.records import Sample
from visprompt.errors import ConfigError
from visprompt.fileio import atomic_path

log = logging.getLogger(__name__)

__all__ = ["FeatureStore", "StoredFeatures", "backbone_checksum", "compute_signature", "resolve_store",
           "weights_checksum"]  # fmt: skip

SUFFIX = ".safetensors"
FORMAT = 1  # bump when what an entry holds, or how it is computed, changes
_MEMO = "_visprompt_weights_checksum"  # attribute on the module: the memo dies with it


def _tensors_fingerprint(module: nn.Module) -> tuple:
    """Changes when a tensor of ``module`` is replaced or modified in place (ids, storage, version counters)."""
    return tuple((id(t), t.data_ptr(), t._version) for t in module.state_dict(keep_vars=True).values())


def weights_checksum(module: nn.Module) -> str:
    """SHA-256 of a module's tensors (names, dtypes, shapes, bytes); memoised on the module until one changes."""
    fingerprint = _tensors_fingerprint(module)
    memo = module.__dict__.get(_MEMO)
    if memo is not None and memo[0] == fingerprint:
        return memo[1]
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    module.__dict__[_MEMO] = (fingerprint, digest.hexdigest())
    return digest.hexdigest()


def backbone_checksum(clip: nn.Module) -> str:
    """SHA-256 of what a frozen CLIP computes with: its tensors (:func:`weights_checksum` of the whole model, both
    towers) and what holds no tensor (the model config, the activation, the input normalisation)."""
    model = getattr(clip, "model", clip)
    settings = {name: getattr(clip, name, None) for name in ("model_cfg", "quick_gelu", "mean", "std")}
    head = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(f"{head}|{weights_checksum(model)}".encode()).hexdigest()


@functools.cache
def _code_versions() -> str:
    """The versions of the code that computes the features (the library's preprocessing, open_clip's towers)."""
    from importlib.metadata import PackageNotFoundError, version

    from visprompt import __version__

    try:
        oc = version("open_clip_torch")
    except PackageNotFoundError:
        oc = "none"
    return f"visprompt {__version__}, open_clip {oc}, format {FORMAT}"


def compute_signature(device: torch.device) -> str:
    """What decides how the encoder's kernels round on ``device``, beyond the code's versions.

    CPU: torch's intra-op thread count (convolutions are split by thread: a random RN50's pooled outputs differ
    by about 3e-8 between 1 and 2 threads on an AVX-512 host) and the vector instruction set torch dispatches
    to. CUDA: the device's name and compute capability, and the cuDNN version.
    """
    device = torch.device(device)
    if device.type == "cpu":
        return f"cpu threads={torch.get_num_threads()} isa={torch.backends.cpu.get_cpu_capability()}"
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        name = torch.cuda.get_device_name(device)
        return f"cuda {name} sm{major}{minor} cudnn={torch.backends.cudnn.version()}"
    return device.type


def _image_tower(clip: nn.Module) -> nn.Module:
    model = getattr(clip, "model", clip)
    return getattr(model, "visual", model)


@dataclass(frozen=True)
class StoredFeatures:
    """One entry: pooled (N, E) and optionally tokens (N, T, E), in float32, and the dtype they were made in."""

    pooled: torch.Tensor
    tokens: torch.Tensor | None
    dtype: torch.dtype


class FeatureStore:
    """Frozen image outputs on disk under ``root``, keyed by what determines them (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # -- keys ------------------------------------------------------------------------------------------------

    def key(
        self, clip: nn.Module, samples: Sequence[Sample], transform: Callable[[Any], torch.Tensor], *,
        batch_size: int, device: torch.device, precision: str,
    ) -> str | None:  # fmt: skip
        """The entry's key, or None when the inputs cannot be keyed safely (then nothing is stored)."""
        transform_repr = repr(transform)
        if " at 0x" in transform_repr:
            log.debug("feature store: transform %s has no stable description; not stored", transform_repr)
            return None
        digest = hashlib.sha256()
        head = {
            "arch": str(getattr(clip, "arch", type(clip).__name__)),
            "weights": weights_checksum(_image_tower(clip)),
            "model_cfg": getattr(clip, "model_cfg", None),
            "quick_gelu": getattr(clip, "quick_gelu", None),
            "transform": transform_repr,
            "batch_size": int(batch_size),
            "precision": precision,
            "device": torch.device(device).type,
            "compute": compute_signature(device),
            "torch": torch.__version__,
            "code": _code_versions(),
        }
        digest.update(json.dumps(head, sort_keys=True).encode())
        for sample in samples:
            try:
                st = os.stat(sample.path)
            except OSError:
                return None  # the encoder will raise its own error on the missing file
            digest.update(f"\n{os.path.abspath(sample.path)}|{st.st_size}|{st.st_mtime_ns}".encode())
        return digest.hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}{SUFFIX}"

    # -- entries ---------------------------------------------------------------------------------------------

    def load(self, key: str, *, need_tokens: bool) -> StoredFeatures | None:
        """The entry, or None if absent, unreadable or without the tokens that are needed."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as fh:
                names, meta = set(fh.keys()), fh.metadata() or {}
                if "pooled" not in names or (need_tokens and "tokens" not in names):
                    return None
                pooled = fh.get_tensor("pooled")
                tokens = fh.get_tensor("tokens") if need_tokens else None
        except (OSError, SafetensorError, ValueError) as exc:
            log.warning("feature store: ignoring unreadable entry %s (%s)", path, exc)
            return None
        dtype = getattr(torch, meta.get("dtype", "float32"))
        with contextlib.suppress(OSError):  # the last use, for prune() (atime is unreliable: noatime mounts)
            os.utime(path)
        return StoredFeatures(pooled, tokens, dtype)

    def save(self, key: str, features: StoredFeatures, **info: Any) -> Path:
        """Write an entry atomically (float32 tensors; ``info`` goes to the header's metadata)."""
        tensors = {"pooled": features.pooled.detach().float().cpu().contiguous()}
        if features.tokens is not None:
            tensors["tokens"] = features.tokens.detach().float().cpu().contiguous()
        meta = {"dtype": str(features.dtype).removeprefix("torch."), "created": f"{time.time():.0f}"}
        meta.update({k: str(v) for k, v in info.items()})
        path = self.path(key)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return path

    # -- maintenance -----------------------------------------------------------------------------------------

    def entries(self) -> list[Path]:
        return sorted(self.root.glob(f"*/*{SUFFIX}")) if self.root.is_dir() else []

    def info(self) -> dict[str, Any]:
        """Entries, total size in bytes and the store's folder."""
        files = self.entries()
        return {"root": str(self.root), "entries": len(files), "bytes": sum(f.stat().st_size for f in files)}

    def clear(self) -> int:
        """Remove every entry (and stale temporary files); returns the number of entries removed."""
        files = self.entries()
        for f in files:
            f.unlink(missing_ok=True)
        if self.root.is_dir():
            for tmp in self.root.glob("*/.*.tmp"):
                tmp.unlink(missing_ok=True)
            for sub in self.root.iterdir():
                if sub.is_dir() and not any(sub.iterdir()):
                    sub.rmdir()
        return len(files)

    def prune(self, max_bytes: int) -> tuple[int, int]:
        """Remove the least recently used entries until the store holds at most ``max_bytes``.

        An entry's last use is its modification time: written when saved, touched by every :meth:`load` that
        hits it. Returns (entries removed, bytes freed). A run that needs a removed entry encodes it again.
        """
        if max_bytes < 0:
            raise ConfigError(f"feature store: the size limit must be >= 0 bytes, got {max_bytes}")
        stats = []
        for f in self.entries():
            with contextlib.suppress(FileNotFoundError):  # removed by another process meanwhile
                st = f.stat()
                stats.append((st.st_mtime_ns, st.st_size, f))
        total = sum(size for _, size, _ in stats)
        removed = freed = 0
        for _, size, f in sorted(stats, key=lambda t: (t[0], str(t[2]))):
            if total - freed <= max_bytes:
                break
            f.unlink(missing_ok=True)
            removed, freed = removed + 1, freed + size
        return removed, freed

    # -- the engine's hook -----------------------------------------------------------------------------------

    def batches(
        self, key: str | None, encode: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]], *,
        batch_size: int, device: torch.device, keep_tokens: bool, what: str = "",
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:  # fmt: skip
        """The encoder's batches (pooled (B, E), tokens (B, T, E) or None), from the store when it holds them.

        On a miss, ``encode()``'s batches pass through unchanged and the entry is written after the last one.
        """
        stored = self.load(key, need_tokens=keep_tokens) if key is not None else None
        if stored is not None:
            log.info(
                "feature store: %s: %d images' features from %s", what, stored.pooled.shape[0], self.path(key).name
            )
            for start in range(0, stored.pooled.shape[0], batch_size):
                rows = slice(start, start + batch_size)
                pooled = stored.pooled[rows].to(device=device, dtype=stored.dtype)
                tokens = stored.tokens[rows].to(device=device, dtype=stored.dtype) if keep_tokens else None
                yield pooled, tokens
            return
        pooled_parts, token_parts, dtype = [], [], torch.float32
        for pooled, tokens in encode():
            if key is not None:
                dtype = pooled.dtype
                pooled_parts.append(pooled.detach().float().cpu())
                if keep_tokens:
                    token_parts.append(tokens.detach().float().cpu())
            yield pooled, tokens if keep_tokens else None
        if key is not None and pooled_parts:
            tokens = torch.cat(token_parts) if keep_tokens else None
            try:
                path = self.save(key, StoredFeatures(torch.cat(pooled_parts), tokens, dtype), what=what)
            except OSError as exc:  # a full or read-only disk costs the next run its encoding, nothing else
                log.warning("feature store: could not write to %s (%s); continuing without it", self.root, exc)
                return
            n = sum(len(p) for p in pooled_parts)
            log.info("feature store: %s: wrote %d images' features to %s", what, n, path.name)


def resolve_store(setting: str | None, out_dir: str | Path) -> FeatureStore | None:
    """``run.feature_store``: ``"auto"`` -> ``<out_dir>/.features``, a path -> that folder, None/"" -> no store."""
    if setting is None or setting == "":
        return None
    if not isinstance(setting, str):
        raise ConfigError(f"run.feature_store: expected 'auto', a folder or null, got {setting!r}")
    return FeatureStore(Path(out_dir) / ".features" if setting == "auto" else Path(setting).expanduser())
