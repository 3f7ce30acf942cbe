"""Grid sweeps: expand a grid file into runs with deterministic directories and run them on Ray.

>>> from visprompt.sweep import expand_sweep, load_sweep, run_sweep
>>> runs = expand_sweep(load_sweep("configs/sweeps/paper-rn50.yaml"))
>>> result = run_sweep(runs, gpus_per_run=0.25)  # doctest: +SKIP
"""

from visprompt.sweep.grid import SweepRun, SweepSpec, expand_sweep, load_sweep, resolve_run_config, run_name
from visprompt.sweep.runner import SweepProgress, SweepResult, engine_run, ray_session, run_sweep
from visprompt.sweep.state import RunOutcome, read_status, refuse_stale

__all__ = [
    "RunOutcome",
    "SweepProgress",
    "SweepResult",
    "SweepRun",
    "SweepSpec",
    "engine_run",
    "expand_sweep",
    "load_sweep",
    "ray_session",
    "read_status",
    "refuse_stale",
    "resolve_run_config",
    "run_name",
    "run_sweep",
]
