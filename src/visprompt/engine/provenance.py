"""What ran: package versions, the git commit of the source tree, the machine."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from visprompt.engine.store import compute_signature

__all__ = ["cpu_model", "describe_environment", "environment", "environment_label", "git_sha", "versions"]

_PACKAGES = ("visprompt", "torch", "torchvision", "open_clip_torch", "numpy", "pot", "safetensors")


def versions() -> dict[str, str | None]:
    """Python and the installed versions of the packages a run depends on (None when absent)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    if out.get("visprompt") is None:
        from visprompt import __version__

        out["visprompt"] = __version__
    return out


@functools.lru_cache(maxsize=1)
def git_sha() -> str | None:
    """The commit of the git checkout holding this package (``+dirty`` with local changes), None outside git."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "."],
            cwd=here, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}+dirty" if dirty else sha or None


@functools.lru_cache(maxsize=1)
def cpu_model() -> str | None:
    """The processor's model name, with its family and model numbers where the name alone is vague (a virtual
    machine's "AMD EPYC"). Linux: the first processor of ``/proc/cpuinfo``; elsewhere :func:`platform.processor`.
    """
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip():
                    break  # the first processor's block ends here
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or None
    if name and fields.get("cpu family") and fields.get("model"):
        name = f"{name} (family {fields['cpu family']}, model {fields['model']})"
    return name


def environment(device: torch.device, trained_in: list[str] | None = None) -> dict[str, Any]:
    """The machine a run used.

    ``compute`` is what decides how its kernels round (thread count and the vector instruction set torch
    dispatches to, or the GPU and cuDNN): a run repeats to the last digit on one machine, not always across
    machines (docs/reliability.md, "Reproducibility"). ``trained_in``: the environments of a run resumed in
    another one, in order (:func:`environment_label` each); recorded only when there is more than one.
    """
    env: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "compute": compute_signature(device),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    if trained_in and len(trained_in) > 1:
        env["trained_in"] = list(trained_in)
    return env


def describe_environment(cpu: str | None, compute: str | None, torch_version: str | None) -> str:
    """One line naming an environment: processor, how its kernels round, torch's version."""
    return f"{cpu or 'unknown processor'}, {compute or 'unknown kernels'}, torch {torch_version or '?'}"


def environment_label(device: torch.device) -> str:
    """:func:`describe_environment` of this process on ``device``."""
    return describe_environment(cpu_model(), compute_signature(device), torch.__version__)
