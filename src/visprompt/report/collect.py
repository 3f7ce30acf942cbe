"""Read run directories: the resolved config, status, final metrics and per-epoch log of every run under a folder.

A run directory is any folder holding a ``config.yaml`` (docs/architecture.md); runs that have not finished
(no ``metrics.json``, or a status other than ``done``) are kept, so that a report can list them. Nested
values are flattened to dotted keys (``method.selection.kind``, ``timings.train_s``).

Runs are grouped by dataset, method, noise type and noise rate. A dataset is named by its registered name (an alias
in an older run's config, ``DescribableTextures``, is read as ``dtd``); a ``csv`` or ``folder`` dataset with its
``data.path`` (``csv:data/birds.csv``), so that two user datasets never share a group. The clean setting (rate 0,
or noise type ``none`` as for Food101N) is one group whatever the noise type. A group counts each seed once: two
finished runs of one method, dataset, setting and seed are refused (:func:`finished_results`).

When runs of one method differ in other config values (an ablation such as ``prompt.gate``), those values join
the method's label: ``visprompt[prompt.gate=zero]``. When the methods of one dataset (one table) differ in a setting
of what is measured, the shots and other data settings, the backbone or the epochs (:data:`PROTOCOL_KEYS`), it joins
the label of every run of that dataset: ``coop[data.shots=16]`` beside ``visprompt[data.shots=1]``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from visprompt.config import CLEAN, NoiseSpec, flatten_tree, setting_label, untrained_values
from visprompt.data.datasets import canonical_name
from visprompt.errors import DataError, VispromptError
from visprompt.registry import METHODS

log = logging.getLogger(__name__)

__all__ = ["CLEAN", "PROTOCOL_KEYS", "RunRecord", "collect_runs", "finished_results", "label_methods", "metric_key",
           "metric_value", "sweep_failures"]  # fmt: skip

# Config keys that never distinguish methods: where a run lives and how it executes.
_NOT_VARIANTS = ("run.", "data.dataset", "data.root", "data.path", "data.num_workers", "noise.", "method.name",
                 "backbone.cache_dir", "optim.eval_batch_size")  # fmt: skip
#: Config keys (prefixes) that set what a number measures whatever the method: the training and test images (every
#: data setting but where they live), the backbone and the length of training. Methods of one dataset that differ
#: in one are labelled with it; a method run at its own recipe's value (CoCoOp's 10 epochs) is no difference.
PROTOCOL_KEYS = ("data.", "backbone.arch", "backbone.weights", "optim.epochs")


@dataclass(frozen=True)
class RunRecord:
    """Everything a report needs from one run directory."""

    path: Path  # the run directory
    name: str  # its path relative to the folder the report reads
    status: str | None  # running | done | failed | None
    config: dict[str, Any]  # flattened resolved config
    metrics: dict[str, Any] = field(default_factory=dict)  # flattened metrics.json ({} if absent)
    epochs: list[dict[str, Any]] = field(default_factory=list)  # flattened log.jsonl records
    error: str | None = None  # first line of error.txt

    @property
    def dataset(self) -> str:
        """The dataset's registered name (a run written before configs resolved aliases may hold one: ``pets`` is
        ``oxford_pets``); for a ``csv`` or ``folder`` dataset with its path (``csv:data/birds.csv``)."""
        name = canonical_name(str(self.config.get("data.dataset", "?")))
        path = self.config.get("data.path")
        return f"{name}:{path}" if name in ("csv", "folder") and path else name

    @property
    def method(self) -> str:
        return str(self.config.get("method.name", "?"))

    @property
    def seed(self) -> int:
        return int(self.config.get("run.seed", 0))

    @property
    def noise(self) -> tuple[str, float]:
        """The run's noise setting (:attr:`~visprompt.config.NoiseSpec.setting`): ``("clean", 0.0)``,
        ``("sym", 0.5)``, ``("pairs-flip", 4.0)``, ``("open-set-k2", 0.25)``."""
        return self.noise_spec.setting

    @property
    def noise_spec(self) -> NoiseSpec:
        section = {k.removeprefix("noise."): v for k, v in self.config.items() if k.startswith("noise.")}
        return NoiseSpec(**section)

    @property
    def finished(self) -> bool:
        return self.status == "done" and bool(self.metrics)


def collect_runs(runs_dir: str | Path, unreadable: list[tuple[str, str]] | None = None) -> list[RunRecord]:
    """Every run directory under ``runs_dir`` (at any depth), sorted by path.

    A run directory whose files cannot be read (a config.yaml that is no YAML, an invalid noise section, a
    metrics.json that is no JSON) is skipped with a warning, and (run, why) appended to ``unreadable`` when given.
    """
    root = Path(runs_dir)
    records = []
    for config_file in sorted(root.rglob("config.yaml")):
        run_dir = config_file.parent
        if any(part.startswith(".") for part in run_dir.relative_to(root).parts):
            continue
        try:
            records.append(_read_run(run_dir, root))
        except (
            OSError,
            ValueError,
            yaml.YAMLError,
            VispromptError,
        ) as exc:  # one unreadable run must not sink the report
            log.warning("skipping %s: %s", run_dir, exc)
            if unreadable is not None:
                unreadable.append((run_dir.relative_to(root).as_posix(), _one_line(exc)))
    return records


def sweep_failures(runs_dir: str | Path, known: Iterable[str] = ()) -> list[tuple[str, str, str | None]]:
    """(run, status, error) of the runs that a sweep's ``sweep.json`` lists as not done and that left no config.

    A run that fails while it is set up (missing data or weights) writes no run directory; the sweep records it.
    """
    root = Path(runs_dir)
    known = set(known)
    missing = []
    for path in sorted(root.rglob("sweep.json")):
        prefix = path.parent.relative_to(root).as_posix()
        try:
            runs = json.loads(path.read_text()).get("runs", [])
        except (OSError, ValueError, AttributeError):
            continue
        for run in runs if isinstance(runs, list) else []:
            if not isinstance(run, dict):
                continue
            name = f"{prefix}/{run.get('name')}" if prefix != "." else str(run.get("name"))
            if name not in known and run.get("status") not in ("done", "skipped"):
                missing.append((name, str(run.get("status") or "pending"), run.get("error")))
    return missing


def finished_results(
    records: Iterable[RunRecord], labels: Mapping[str, str], metric: str
) -> dict[tuple[str, str, tuple[str, float], int], tuple[RunRecord, float]]:
    """(method label, dataset, noise setting, seed) -> (run, ``metric``) of every finished run that has the metric.

    Two finished runs with one key (a copied run, or runs that differ only in ``run.*`` values, which labels
    ignore) are a :class:`~visprompt.errors.DataError`: which of them is the seed's run is not for a report to
    pick, and counting both would weigh that seed twice.
    """
    results: dict[tuple[str, str, tuple[str, float], int], tuple[RunRecord, float]] = {}
    for record in records:
        value = metric_value(record.metrics, metric) if record.finished else None
        if value is None:
            continue
        key = (labels[record.name], record.dataset, record.noise, record.seed)
        if key in results:
            raise DataError(
                f"runs {results[key][0].name} and {record.name} are both {key[0]} on {key[1]}, "
                f"{setting_label(*key[2])}, seed {key[3]}: remove one (a seed counts once)"
            )
        results[key] = (record, value)
    return results


def metric_value(metrics: Mapping[str, Any], metric: str) -> float | None:
    """``metrics[metric]``, else the one key ending in ``.metric`` (``test.`` preferred), as a float (None: absent,
    not a number, or not finite)."""
    key = metric_key(metrics, metric)
    return _as_float(metrics[key]) if key is not None else None


def metric_key(metrics: Mapping[str, Any], metric: str) -> str | None:
    """The key of ``metrics`` that :func:`metric_value` reads ``metric`` from (None: none)."""
    if metric in metrics:
        return metric
    candidates = sorted((k for k in metrics if k.endswith("." + metric)), key=lambda k: (not k.startswith("test"), k))
    return candidates[0] if candidates else None


def _option_defaults() -> dict[str, Any]:
    """Every option's own default, flattened: what a run written before the option existed did (no recipe)."""
    from visprompt.config import RunConfig

    return flatten_tree(dataclasses.asdict(RunConfig()))


def label_methods(records: Sequence[RunRecord]) -> dict[str, str]:
    """Run name -> method label: the method name, plus the config values that differ among its runs.

    A key that a run's config.yaml lacks (written by a version without that option) counts as the option's own
    default, which is what every version before the option did (as :func:`~visprompt.config.load_run_config`
    reads it): an option added later does not split one method's runs into variants, unless the method's recipe
    turned it on since, and then the older runs are told apart, as they trained without it. The training fields of a
    method that does not train (:func:`~visprompt.config.untrained_values`) tell none of its runs apart: a config.yaml
    written before they were held may record a schedule that nothing ran.

    A :data:`PROTOCOL_KEYS` value in which the methods of one dataset differ (a method's runs at its recipe's value
    aside) joins the label of every run of that dataset whose method reads it, so no table puts two protocols side
    by side under bare method names: ``coop[data.shots=16]`` and ``visprompt[data.shots=1]``, ``zeroshot`` (its
    epochs hold nothing).
    """
    keys = sorted({k for r in records for k in r.config})
    defaults = _option_defaults() if any(set(keys) - set(r.config) for r in records) else {}

    def value(record: RunRecord, key: str) -> Any:
        return record.config[key] if key in record.config else defaults.get(key)

    by_method: dict[str, list[RunRecord]] = {}
    by_dataset: dict[str, list[RunRecord]] = {}
    for record in records:
        by_method.setdefault(record.method, []).append(record)
        by_dataset.setdefault(record.dataset, []).append(record)
    shown: dict[str, set[str]] = {}  # run -> the keys its label names
    for method, group in by_method.items():
        own = sorted({k for r in group for k in r.config})
        held = untrained_values(method)  # a method that does not train ran the same whatever these said
        varying = {
            k
            for k in own
            if not k.startswith(_NOT_VARIANTS) and k not in held and len({_key(value(r, k)) for r in group}) > 1
        }
        shown.update((r.name, set(varying)) for r in group)
    protocol = [k for k in keys if k.startswith(PROTOCOL_KEYS) and not k.startswith(_NOT_VARIANTS)]
    for group in by_dataset.values():
        for key in protocol:
            reading = [r for r in group if key not in untrained_values(r.method)]
            others = {_key(value(r, key)) for r in reading if not _recipe_value(r.method, key, value(r, key))}
            if len(others) > 1:  # the dataset's methods ran different protocols: every label names its own
                for record in reading:
                    shown[record.name].add(key)
    labels = {}
    for record in records:
        parts = [f"{k}={value(record, k)}" for k in sorted(shown[record.name])]
        labels[record.name] = f"{record.method}[{','.join(parts)}]" if parts else record.method
    return labels


def _recipe_value(method: str, key: str, value: Any) -> bool:
    """Whether ``value`` is what ``method``'s own recipe sets ``key`` to (CoCoOp's ``optim.epochs``: 10)."""
    recipe = METHODS.get(method).recipe if method in METHODS else {}
    return key in recipe and _key(recipe[key]) == _key(value)


def _read_run(run_dir: Path, root: Path) -> RunRecord:
    config = flatten_tree(yaml.safe_load((run_dir / "config.yaml").read_text()) or {})
    status_file, metrics_file, error_file = run_dir / "status", run_dir / "metrics.json", run_dir / "error.txt"
    words = status_file.read_text().split() if status_file.is_file() else []
    status = words[0] if words else None
    metrics = flatten_tree(json.loads(metrics_file.read_text())) if metrics_file.is_file() else {}
    error = None
    if error_file.is_file():
        lines = [line for line in error_file.read_text().splitlines() if line.strip()]
        error = lines[0].strip() if lines else None  # the message (a traceback follows)
    name = run_dir.relative_to(root).as_posix()
    record = RunRecord(run_dir, name, status, config, metrics, list(_read_log(run_dir / "log.jsonl")), error)
    record.noise_spec  # noqa: B018  (an invalid noise section is reported here, not in the middle of a table)
    return record


def _read_log(path: Path) -> Iterable[dict[str, Any]]:
    if not path.is_file():
        return
    for line in path.read_bytes().decode("utf-8", errors="replace").splitlines():
        try:
            yield flatten_tree(json.loads(line))
        except (json.JSONDecodeError, AttributeError):
            continue  # a line torn by a crash (or a stray byte): the rest of the run still counts


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _one_line(exc: Exception) -> str:
    """Why a run could not be read, in one line (a YAML error: the problem and where, without its excerpt)."""
    mark = getattr(exc, "problem_mark", None)
    if isinstance(exc, yaml.MarkedYAMLError) and mark is not None:
        return f"config.yaml: {exc.problem} (line {mark.line + 1}, column {mark.column + 1})"
    if isinstance(exc, json.JSONDecodeError):  # the one JSON file read whole: a log line that is none is dropped
        return f"metrics.json: {exc}"
    return " ".join(str(exc).split()) or type(exc).__name__


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
