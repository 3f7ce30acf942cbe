"""The training engine: a generic loop, the run directory (checkpoints, resume, logs, metrics), evaluation.

``train_run(cfg)`` runs one configuration end to end; ``load_run(run_dir)`` rebuilds a trained run for eval and
predict. The loop (:func:`fit`) drives any :class:`~visprompt.methods.base.MethodBase`.
"""

from visprompt.engine.build import run_name
from visprompt.engine.inference import LoadedRun, load_run
from visprompt.engine.loop import EpochMeter, fit
from visprompt.engine.metrics import classification_metrics
from visprompt.engine.optim import build_optimizer, build_scheduler, lr_at
from visprompt.engine.rundir import RunDir
from visprompt.engine.runner import RunResult, train_run
from visprompt.engine.runtime import Precision, resolve_device, resolve_precision, seed_everything

__all__ = [
    "EpochMeter",
    "LoadedRun",
    "Precision",
    "RunDir",
    "RunResult",
    "build_optimizer",
    "build_scheduler",
    "classification_metrics",
    "fit",
    "load_run",
    "lr_at",
    "resolve_device",
    "resolve_precision",
    "run_name",
    "seed_everything",
    "train_run",
]
