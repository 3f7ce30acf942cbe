"""Whether two resolved configs describe the same run: every setting counts except where and how it runs.

A run directory's ``config.yaml`` is compared with the config of a command that would reuse the directory
(``train`` skipping a finished run or resuming one, a sweep skipping a finished run). Only the settings that
say where the run executes and writes may differ: :data:`WHERE_KEYS`.
"""

from __future__ import annotations

from typing import Any

from visprompt.config import RunConfig, flatten_tree, to_dict

__all__ = ["WHERE_KEYS", "config_differences", "flat_config"]

# Where and how a run executes, not what it computes (the run name is its directory, checked separately).
WHERE_KEYS = frozenset(
    {"run.out_dir", "run.name", "run.device", "run.threads", "data.num_workers", "run.feature_store"}
)  # the feature store changes where features come from, never the results (tests/test_feature_store.py)


def flat_config(cfg: RunConfig) -> dict[str, Any]:
    """The config as ``{"optim.lr": 0.002, ...}``."""
    return flatten_tree(to_dict(cfg))


def config_differences(saved: RunConfig, now: RunConfig) -> list[str]:
    """``["optim.epochs 3 -> 10", ...]``: every setting (outside :data:`WHERE_KEYS`) that differs, sorted."""
    a, b = flat_config(saved), flat_config(now)
    return [
        f"{key} {a.get(key)!r} -> {b.get(key)!r}"
        for key in sorted(set(a) | set(b))
        if key not in WHERE_KEYS and a.get(key) != b.get(key)
    ]
