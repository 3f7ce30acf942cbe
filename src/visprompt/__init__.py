"""visprompt: prompt learning on a frozen CLIP under noisy labels (VisPrompt, arXiv 2604.09532).

Importing the package registers every built-in: datasets and testbed tasks (:data:`visprompt.data.datasets.DATASETS`),
methods with their recipes (:data:`visprompt.registry.METHODS`), noise types (:data:`visprompt.registry.NOISE_TYPES`)
and backbone presets (:data:`visprompt.registry.BACKBONES`), then the plugins installed under the
``visprompt.plugins`` entry-point group (each entry a module or a callable that registers its own). The front door
for notebooks is :mod:`visprompt.api`: :func:`config`, :func:`train`, :func:`load_run`.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

__version__ = "0.1.0"

# Explicit registration of the built-ins (each module registers what it defines when imported).
from visprompt import methods as _methods  # noqa: F401  methods and their recipes
from visprompt import testbed as _testbed  # noqa: F401  testbed tasks
from visprompt.api import Predictions, Run, config, load_run, train
from visprompt.config import NoiseSpec, RunConfig, load_config
from visprompt.data import datasets as _datasets  # noqa: F401  datasets (CoOp layout, Food101N, folder, CSV)
from visprompt.data import noise as _noise  # noqa: F401  noise types
from visprompt.data.datasets import DATASETS, register_coop_dataset
from visprompt.models import backbone as _backbone  # noqa: F401  backbone presets
from visprompt.registry import (
    BACKBONES,
    METHODS,
    NOISE_TYPES,
    MethodDef,
    NoiseTypeDef,
    register_method,
    register_variant,
)

__all__ = [
    "BACKBONES",
    "DATASETS",
    "METHODS",
    "NOISE_TYPES",
    "MethodDef",
    "NoiseSpec",
    "NoiseTypeDef",
    "Predictions",
    "Run",
    "RunConfig",
    "__version__",
    "config",
    "load_config",
    "load_run",
    "register_coop_dataset",
    "register_method",
    "register_variant",
    "train",
]


def _load_plugins() -> None:
    """Import every ``visprompt.plugins`` entry point (a module registers on import; a callable is called)."""
    for entry in entry_points(group="visprompt.plugins"):
        try:
            loaded = entry.load()
            if callable(loaded):
                loaded()
        except Exception as exc:  # a broken plugin must not break the package; say which one
            logging.getLogger(__name__).warning("visprompt plugin %s failed to load: %s", entry.name, exc)


_load_plugins()
