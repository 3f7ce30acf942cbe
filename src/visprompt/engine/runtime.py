"""Device, numeric precision and seeding: the run-time environment of a training run.

* Device: ``auto`` picks CUDA when available; asking for CUDA on a machine without it is a one-line error.
* Precision: ``auto`` is bf16 autocast on CUDA and float32 on CPU; ``fp16`` autocast comes with a gradient
  scaler (dynamic loss scaling), bf16 and fp32 need none. Parameters stay float32 throughout.
* Seeds: Python, NumPy and torch (CPU and CUDA) from one integer; data-loader workers get their own
  derived seeds; the RNG states can be captured and restored for an exact resume.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from visprompt.errors import ConfigError

__all__ = [
    "Precision",
    "get_rng_state",
    "resolve_device",
    "resolve_precision",
    "seed_everything",
    "set_rng_state",
    "worker_init_fn",
]


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when available else ``cpu``; otherwise the named device, checked to exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"run.device: unknown device {name!r} (expected auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"run.device: {name!r} requested but CUDA is not available (use run.device=cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"run.device: {name!r} requested but only {torch.cuda.device_count()} GPU(s) exist")
    return device


@dataclass(frozen=True)
class Precision:
    """Autocast dtype (None: plain float32) and whether gradients need dynamic loss scaling."""

    device_type: str
    dtype: torch.dtype | None

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    @property
    def needs_scaler(self) -> bool:
        return self.dtype is torch.float16

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The autocast context for forward passes (a no-op for float32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, enabled only for fp16."""
        return torch.amp.GradScaler(self.device_type, enabled=self.needs_scaler)


def resolve_precision(name: str, device: torch.device) -> Precision:
    """``auto`` -> bf16 on CUDA, fp32 elsewhere; ``fp16`` on CPU is refused (no CPU fp16 autocast training)."""
    if name == "auto":
        name = "bf16" if device.type == "cuda" else "fp32"
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if name not in dtypes:
        raise ConfigError(f"optim.precision: expected auto, fp32, bf16 or fp16, got {name!r}")
    if name == "fp16" and device.type != "cuda":
        raise ConfigError("optim.precision: fp16 needs a CUDA device (use fp32 or bf16 on CPU)")
    return Precision(device.type, dtypes[name])


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def worker_init_fn(worker_id: int) -> None:
    """Seed a data-loader worker's Python and NumPy generators from the seed torch gave the worker."""
    seed = torch.initial_seed() % 2**32  # torch derives it from the loader's generator and the worker id
    random.seed(seed)
    np.random.seed(seed)


def get_rng_state() -> dict[str, Any]:
    """Every global RNG state (Python, NumPy, torch CPU, and CUDA when initialised)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": _numpy_state(np.random.get_state()),  # plain types: state.pt is read with weights_only=True
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state(state: tuple) -> tuple:
    """NumPy's legacy generator state with its key array as a list of ints (no pickled arrays)."""
    kind, keys, pos, has_gauss, gauss = state
    return (str(kind), [int(k) for k in keys], int(pos), int(has_gauss), float(gauss))


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` captured."""
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, (list, tuple)) and len(numpy_state) == 5 and not isinstance(numpy_state[1], np.ndarray):
        numpy_state = (numpy_state[0], np.asarray(numpy_state[1], dtype=np.uint32), *numpy_state[2:])
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
