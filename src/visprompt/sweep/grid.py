"""Grid files: a base configuration and axes whose cartesian product is the list of runs of a sweep.

A grid file is YAML with four keys::

    name: paper-rn50                 # optional (default: the file's stem)
    out_dir: runs/paper-rn50         # optional (default: runs/<name>), relative to the working directory
    base:                            # settings shared by every run
      backbone: rn50                 #   presets, as the train command's flags: dataset, backbone, method
      config: [extra.yaml]           #   YAML layers, relative to the grid file
      data.shots: 16                 #   any dotted config key (nested mappings are flattened)
    grid:                            # axes: every combination of their values is one run
      dataset: [caltech101, dtd]
      method: [coop, visprompt]
      noise.type: [sym, asym]
      noise.rate: [0.25, 0.5]
      run.seed: [1, 2, 3]

``grid`` may also be a list of such mappings: the runs are then the union of their products (for example
the clean setting once, plus the noisy settings per noise type). Layers resolve in the order of the
``train`` command: presets, then ``config`` files, then dotted keys (``base`` first, the run's axes last).
``--set KEY=VALUE`` (``overrides``) extends ``base``; a key that an axis also sets is refused, since one of the two
would be lost without a word. A ``dataset``, ``method`` or ``backbone`` axis whose field a dotted key of the base (or
of the same grid, or for a backbone preset a ``config`` file) sets too is refused: the dotted key would win, and the
axis's value would not reach its runs.

Each run gets a deterministic, readable directory under ``out_dir``::

    <dataset>/<method>/<noise>-<rate>/[<other axis>-<value>/...]seed<k>

(``pairs<k>`` or ``pairs<k>-flip`` replaces ``<noise>-<rate>`` for the pairs-per-class protocol), so a
restarted sweep finds the runs it already finished.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visprompt.config import RunConfig, flatten_tree, load_config, parse_override, read_yaml
from visprompt.engine.sameconfig import flat_config
from visprompt.errors import ConfigError
from visprompt.registry import BACKBONES

log = logging.getLogger(__name__)

__all__ = ["PRESET_KEYS", "SweepRun", "SweepSpec", "expand_sweep", "load_sweep", "resolve_run_config", "run_name"]

PRESET_KEYS = ("dataset", "backbone", "method")  # loaded as presets, like the train command's flags
SHORTHANDS = {"dataset": "data.dataset", "method": "method.name", "backbone": "backbone.arch"}  # the field each sets
RESERVED_KEYS = ("run.name", "run.out_dir")  # set by the sweep itself
# Keys already part of the run directory name.
NAMED_KEYS = {"dataset", "method", "data.dataset", "method.name", "noise.type", "noise.rate", "run.seed",
              "noise.false_per_class", "noise.pair_flip", "noise.open_set_classes"}  # fmt: skip
_NAME_KEYS = ("run.name", "run.out_dir")  # a run's directory: the rest of its config is what it is (threads included)
PATH_KEYS = ("root", "path")  # data.root and data.path are made absolute, since Ray workers may run elsewhere


@dataclass(frozen=True)
class SweepSpec:
    """A parsed grid file."""

    name: str
    out_dir: Path  # absolute
    base: dict[str, Any]  # preset keys and dotted config keys shared by every run
    config_files: tuple[Path, ...]  # extra YAML layers (absolute paths)
    grids: tuple[dict[str, list[Any]], ...]  # axes -> values, one mapping per product
    source: Path | None = None  # the grid file


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: its directory name, the axis values that define it, and its resolved config."""

    name: str  # run directory relative to the sweep's out_dir, e.g. "dtd/coop/sym-0.5/seed1"
    assignment: dict[str, Any] = field(compare=False)  # axis -> value for this run
    config: RunConfig = field(compare=False)

    @property
    def path(self) -> Path:
        return Path(self.config.run.out_dir) / self.name


def load_sweep(path: str | Path, out_dir: str | Path | None = None, overrides: Iterable[str] = ()) -> SweepSpec:
    """Read a grid file; ``out_dir`` replaces the file's, ``overrides`` (``key=value``) extend its ``base``."""
    path = Path(path)
    where = f"grid file {path}"
    raw = read_yaml(path, what="grid file", expected="a mapping with keys base, grid, out_dir, name")
    unknown = sorted(set(raw) - {"name", "out_dir", "base", "grid"})
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (expected name, out_dir, base, grid)")
    name = str(raw.get("name") or path.stem)
    base = _flatten(raw.get("base") or {}, f"{where}: base")
    files = base.pop("config", [])
    files = [files] if isinstance(files, str) else files
    if not isinstance(files, list):
        raise ConfigError(f"{where}: base.config: expected a file or a list of files, got {files!r}")
    config_files = tuple((path.parent / f).resolve() for f in files)
    for file in config_files:
        if not file.is_file():
            raise ConfigError(f"{where}: base.config: {file} does not exist")
    overridden = dict(parse_override(item) for item in overrides)
    base.update(overridden)
    grids = raw.get("grid") or {}
    grids = [grids] if isinstance(grids, dict) else grids
    if not isinstance(grids, list) or not all(isinstance(g, dict) for g in grids):
        raise ConfigError(f"{where}: grid: expected a mapping of axis -> list of values, or a list of them")
    parsed = tuple(_parse_axes(g, f"{where}: grid") for g in grids)
    for key in [*base, *(k for g in parsed for k in g)]:
        _check_key(key, where)
    for key, value in overridden.items():
        _check_override(key, value, parsed, where)
    out = Path(out_dir if out_dir is not None else raw.get("out_dir") or Path("runs") / name)
    return SweepSpec(name, out.resolve(), base, config_files, parsed, source=path.resolve())


def expand_sweep(spec: SweepSpec) -> list[SweepRun]:
    """Every run of the sweep, in grid order, each with its resolved RunConfig; names are checked unique, and a run
    whose resolved configuration an earlier run of the grid already has (e.g. zero-shot under a schedule axis, which
    it does not read) is left out with a warning: one configuration is one run."""
    runs: list[SweepRun] = []
    seen: dict[str, dict[str, Any]] = {}
    named: dict[str, str] = {}  # the resolved settings (outside where a run runs) -> the run's name
    where = f"grid file {spec.source}" if spec.source else f"sweep {spec.name}"
    _check_shadowed_axes(spec, where)
    varying = [k for g in spec.grids for k, values in g.items() if len(values) > 1]
    extra_axes = list(dict.fromkeys(k for k in varying if k not in NAMED_KEYS))
    for grid in spec.grids:
        keys = list(grid)
        for values in itertools.product(*(grid[k] for k in keys)):
            assignment = dict(zip(keys, values, strict=True))
            try:
                cfg = resolve_run_config({**spec.base, **assignment}, spec.config_files, spec.out_dir)
            except ConfigError as exc:
                raise ConfigError(f"{where}: run {_describe(assignment)}: {exc}") from None
            name = run_name(cfg, {k: _axis_value(k, assignment, spec.base, cfg) for k in extra_axes})
            if name in seen:
                if seen[name] == assignment:
                    continue  # the same combination listed twice (overlapping grids): run it once
                raise ConfigError(
                    f"{where}: runs {_describe(seen[name])} and {_describe(assignment)} share the directory {name}"
                )
            seen[name] = assignment
            settings = repr(sorted((k, v) for k, v in flat_config(cfg).items() if k not in _NAME_KEYS))
            if (other := named.setdefault(settings, name)) != name:  # e.g. zero-shot under a schedule axis
                differ = [k for k in {**seen[other], **assignment} if seen[other].get(k) != assignment.get(k)]
                log.warning(
                    "%s: run %s has the settings of run %s (%s and %s resolve to one configuration): run once, as %s",
                    where, name, other, _describe({k: seen[other].get(k) for k in differ}),
                    _describe({k: assignment.get(k) for k in differ}), other,
                )  # fmt: skip
                continue
            cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, name=name))
            runs.append(SweepRun(name, assignment, cfg))
    return runs


def resolve_run_config(settings: Mapping[str, Any], config_files: Iterable[Path], out_dir: Path) -> RunConfig:
    """The train command's layers (:func:`~visprompt.config.load_config`): presets, ``config_files``, then the
    dotted keys of ``settings``; ``run.out_dir`` set to ``out_dir``, relative data paths made absolute."""
    values = {k: v for k, v in settings.items() if k not in PRESET_KEYS}
    presets = {k: None if settings.get(k) is None else str(settings[k]) for k in PRESET_KEYS}
    cfg = load_config(config_files, {**values, "run.out_dir": str(out_dir)}, **presets)
    data = cfg.data  # relative data paths are relative to where the sweep starts, not to the workers
    absolute = {key: str(Path(getattr(data, key)).expanduser().resolve()) for key in PATH_KEYS if getattr(data, key)}
    return dataclasses.replace(cfg, data=dataclasses.replace(data, **absolute))


def run_name(cfg: RunConfig, extra: Mapping[str, Any]) -> str:
    """``<dataset>/<method>/<noise>/[<axis>-<value>/...]seed<k>`` for a resolved config."""
    parts = [cfg.data.dataset, cfg.method.name, cfg.noise.tag]
    parts += [f"{key}-{_fmt(value)}" for key, value in extra.items()]
    parts.append(f"seed{cfg.run.seed}")
    return "/".join(_safe(p) for p in parts)


# ----------------------------------------------------------------------------------------------- helpers


def _axis_value(key: str, assignment: Mapping[str, Any], base: Mapping[str, Any], cfg: RunConfig) -> Any:
    """An axis's value for a run: its own, the base's (where it reaches the resolved config: a dotted axis of the
    run's grid can override a preset), or (an axis of another grid) the resolved config's."""
    if key in assignment:
        return assignment[key]
    if key in base:
        flat = flat_config(cfg)
        if all(flat.get(f) == v for f, v in _fields(key, base[key]).items()):
            return base[key]
    if key in PRESET_KEYS:
        return {"dataset": cfg.data.dataset, "backbone": cfg.backbone.arch, "method": cfg.method.name}[key]
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part, None)
    return node


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _safe(part: str) -> str:
    return part.replace("/", "-").replace(" ", "_") or "_"


def _describe(assignment: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f"{k}={_fmt(v)}" for k, v in assignment.items()) + "}"


def _flatten(tree: Any, where: str) -> dict[str, Any]:
    """``{data: {shots: 16}, method: coop}`` -> ``{"data.shots": 16, "method": "coop"}``."""
    if not isinstance(tree, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys to values, got {tree!r}")
    return flatten_tree(tree)


def _parse_axes(grid: Mapping[str, Any], where: str) -> dict[str, list[Any]]:
    axes: dict[str, list[Any]] = {}
    for key, values in _flatten(grid, where).items():
        values = values if isinstance(values, list) else [values]
        if not values:
            raise ConfigError(f"{where}.{key}: expected a non-empty list of values")
        axes[key] = values
    return axes


def _fields(key: str, value: Any) -> dict[str, Any]:
    """The dotted config fields (-> values) that ``key: value`` sets, in base or on an axis: a dotted key its own, a
    shorthand (``dataset``, ``method``, ``backbone`` naming no preset) its field, a backbone preset each of its."""
    if key not in PRESET_KEYS:
        return {key: value}
    if value is None:  # as if not given
        return {}
    if key == "backbone" and str(value).lower() in BACKBONES:
        return dict(BACKBONES.get(str(value).lower()))
    return {SHORTHANDS[key]: value}


def _check_override(key: str, value: Any, grids: Iterable[Mapping[str, list[Any]]], where: str) -> None:
    """Refuse ``--set key=value`` where an axis sets one of its fields: each run would keep the axis's value (a
    dotted axis wins over the base) or lose it (a base key wins over an axis's preset or shorthand), silently."""
    fields = _fields(key, value)
    for grid in grids:
        for axis, values in grid.items():
            both = [f for v in values for f in _fields(axis, v) if f in fields]
            if both:
                raise ConfigError(
                    f"{where}: --set {key}={_fmt(value)}: the grid's axis {axis} sets {both[0]} too, and each run "
                    f"would take one of the two; change that axis in the grid file instead"
                )


def _check_shadowed_axes(spec: SweepSpec, where: str) -> None:
    """Refuse a preset or shorthand axis (``dataset``, ``method``, ``backbone``) whose value sets a field that a
    dotted key of the base or of the same grid sets too (or, for a backbone preset, a ``config`` file: a lower
    layer than the shorthands, above the presets): that key wins, so the runs named by the axis's values would all
    get its value (a base ``backbone.arch: testbed`` under an axis ``backbone: [rn50, vit-b-16]``)."""
    files: dict[str, str] = {}
    for file in spec.config_files:
        for key in flatten_tree(read_yaml(file)):
            files.setdefault(key, f"base.config {file.name}")
    dotted = {key: "base" for key in spec.base if key not in PRESET_KEYS}
    for grid in spec.grids:
        others = {**dotted, **{key: f"axis {key}" for key in grid if key not in PRESET_KEYS}}
        for axis in (key for key in PRESET_KEYS if key in grid):
            for value in grid[axis]:
                preset = axis == "backbone" and value is not None and str(value).lower() in BACKBONES
                for key in _fields(axis, value):
                    source = others.get(key) or (files.get(key) if preset else None)
                    if source:
                        raise ConfigError(
                            f"{where}: axis {axis}: {axis} {_fmt(value)} sets {key}, and so does {source}, which wins "
                            f"over a {'preset' if preset else 'shorthand'}: the axis's value would not reach the runs; "
                            f"set {key} in one place"
                        )


def _check_key(key: str, where: str) -> None:
    if key in RESERVED_KEYS:
        raise ConfigError(f"{where}: {key} is set by the sweep (use out_dir for the folder)")
    if "." not in key and key not in PRESET_KEYS:
        raise ConfigError(f"{where}: unknown key {key!r} (expected {', '.join(PRESET_KEYS)} or a dotted config key)")
