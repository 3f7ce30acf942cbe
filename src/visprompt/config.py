"""Run configuration: one frozen dataclass per part, YAML files and dotted overrides resolved into a RunConfig.

A run's configuration is resolved in layers, later layers winning:

1. the dataclass defaults below (the paper's protocol, DESIGN.md section 2);
2. YAML files, usually one per dataset, backbone and method (``configs/`` inside the package), then the user's;
3. dotted overrides from the command line: ``optim.lr=0.001``, ``method.selection.eps=0.05``.

Values are parsed as YAML scalars (``true``, ``1e-3``, ``null``, ``[1, 2]``) and checked against the field's
type; an unknown key or a bad value raises :class:`~visprompt.errors.ConfigError` with one line naming the key
and, for typos, the closest valid keys. Components never read this module: they take explicit arguments, and
the methods/engine layer converts a RunConfig into those arguments.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from visprompt.errors import ConfigError

__all__ = [
    "BackboneConfig",
    "DataConfig",
    "ExecConfig",
    "LossConfig",
    "MethodConfig",
    "NoiseConfig",
    "OptimConfig",
    "PromptConfig",
    "RunConfig",
    "SelectionConfig",
    "config_dir",
    "load_config",
    "to_dict",
    "to_yaml",
]

NoiseType = Literal["none", "sym", "asym", "pairs-per-class", "asym-semantic", "instance", "open-set"]


def _check(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {message}")


@dataclass(frozen=True)
class DataConfig:
    """Which images a run trains and evaluates on."""

    dataset: str = "testbed-backgrounds"  # a registered dataset name, or "folder" / "csv" for the user's own data
    root: str = "DATA"  # folder holding one sub-folder per dataset (the CoOp layout)
    path: str | None = None  # image folder or CSV file when dataset is "folder" or "csv"
    shots: int | Literal["all"] = 16  # K labelled training images per class (sampled before noise); "all": every one
    augment: bool = True  # random-resized-crop + flip on training images
    num_workers: int = 0  # data-loader worker processes

    def __post_init__(self) -> None:
        _check(
            self.shots == "all" or self.shots >= 1, "data.shots", f"expected an integer >= 1 or all, got {self.shots}"
        )
        _check(self.num_workers >= 0, "data.num_workers", f"expected an integer >= 0, got {self.num_workers}")
        _check(
            self.dataset not in ("folder", "csv") or bool(self.path),
            "data.path",
            f"required when data.dataset is {self.dataset!r}",
        )


@dataclass(frozen=True)
class NoiseConfig:
    """Synthetic label noise applied to the few-shot training split only (validation and test stay clean).

    Types: none | sym (uniform over the other classes) | asym (y -> y+1 mod C) | pairs-per-class (PTNL/JoAPR) |
    asym-semantic (y -> the class whose CLIP text embedding is nearest) | instance (instance-dependent, Xia et al.
    2020, from the frozen CLIP's image features) | open-set (images from held-out classes under in-set labels).
    """

    type: NoiseType = "sym"  # see the class docstring and visprompt.data.noise
    rate: float = 0.0  # fraction of training samples noised: exactly floor(rate * N); instance: the mean flip rate
    false_per_class: int = 0  # pairs-per-class: number of false labels per class (the PTNL/JoAPR protocol)
    pair_flip: bool = False  # pairs-per-class: flip to the next class instead of a uniform other class
    open_set_classes: int = 0  # open-set: the last k classes leave the task; their training images are the noise

    def __post_init__(self) -> None:
        _check(0.0 <= self.rate < 1.0, "noise.rate", f"expected a value in [0, 1), got {self.rate}")
        _check(self.false_per_class >= 0, "noise.false_per_class", f"expected >= 0, got {self.false_per_class}")
        least = 1 if self.type == "open-set" else 0
        when = " with noise.type=open-set" if least else ""
        _check(self.open_set_classes >= least, "noise.open_set_classes",
               f"expected an integer >= {least}{when}, got {self.open_set_classes}")  # fmt: skip


@dataclass(frozen=True)
class BackboneConfig:
    """The frozen CLIP: an open_clip architecture and where its weights come from."""

    arch: str = "RN50-quickgelu"  # open_clip model name; OpenAI weights need the -quickgelu variants
    weights: str | None = "openai"  # a file path, an open_clip pretrained tag looked up offline, or null (random)
    sha256: str | None = None  # expected checksum of the weights file, checked when given
    cache_dir: str | None = None  # open_clip's cache folder (default: its own)


@dataclass(frozen=True)
class PromptConfig:
    """The learnable prompt: CoOp context, CoCoOp meta-net and VisPrompt's cross-modal FiLM block."""

    n_ctx: int = 16  # M, number of context tokens
    ctx_init: str = ""  # initialise the context from this phrase ("" = N(0, 0.02^2))
    csc: bool = False  # class-specific context
    class_token_position: Literal["end", "middle", "front"] = "end"
    vis_tokens: Literal["patch", "global"] = "patch"  # visual keys/values: spatial tokens or the pooled embedding
    film_mode: Literal["tokenwise", "global"] = "tokenwise"  # FiLM parameters per context token or from the mean
    use_ffn: bool = True  # the FFN after the gated residual
    gate: Literal["learned", "off", "zero"] = "learned"  # learned sigmoid gate, off (g = 1), zero (g = 0)
    visual_guidance: bool = True  # False: no image conditioning (plain CoOp prompt)
    init: Literal["default", "identity"] = "default"  # identity: FiLM/FFN outputs zero-initialised, negative gate bias
    num_heads: int = 8  # attention heads of the cross-modal block
    dropout: float = 0.1  # attention dropout of the cross-modal block

    def __post_init__(self) -> None:
        _check(self.n_ctx >= 1, "prompt.n_ctx", f"expected an integer >= 1, got {self.n_ctx}")
        _check(0.0 <= self.dropout < 1.0, "prompt.dropout", f"expected a value in [0, 1), got {self.dropout}")
        _check(self.num_heads >= 1, "prompt.num_heads", f"expected an integer >= 1, got {self.num_heads}")


@dataclass(frozen=True)
class SelectionConfig:
    """How the training set is split into reliable and unreliable samples."""

    kind: Literal["none", "ot", "gmm"] = "ot"
    scope: Literal["minibatch", "full"] = "minibatch"  # OT per training mini-batch (authors) or over the set
    cost: Literal["neglogp", "negp"] = "neglogp"  # -log p (ours) or -p (NLPrompt's effective cost)
    eps: float = 0.01  # entropic regularisation of the OT problem
    tol: float = 1e-6  # stop when the marginal error (L1) falls below this
    max_iter: int = 20000  # iteration cap; non-convergence is warned about and logged
    budget: float = 1.0  # curriculum: keep only this top fraction by OT confidence as clean
    gmm_threshold: float = 0.5  # gmm: clean if the posterior of the low-loss component exceeds this

    def __post_init__(self) -> None:
        _check(self.eps > 0, "method.selection.eps", f"expected a value > 0, got {self.eps}")
        _check(self.tol > 0, "method.selection.tol", f"expected a value > 0, got {self.tol}")
        _check(self.max_iter >= 1, "method.selection.max_iter", f"expected an integer >= 1, got {self.max_iter}")
        _check(0.0 < self.budget <= 1.0, "method.selection.budget", f"expected a value in (0, 1], got {self.budget}")
        _check(
            0.0 < self.gmm_threshold < 1.0,
            "method.selection.gmm_threshold",
            f"expected a value in (0, 1), got {self.gmm_threshold}",
        )


@dataclass(frozen=True)
class LossConfig:
    """L = alpha * clean_loss(clean) + (1 - alpha) * noisy_loss(noisy), both on the given labels."""

    clean: Literal["ce", "gce", "mae", "sce"] = "ce"
    noisy: Literal["ce", "gce", "mae", "sce", "none"] = "gce"
    alpha: float = 0.5  # weight of the clean-set loss
    q: float = 0.5  # GCE exponent (q = 1 is MAE up to a constant)
    schedule: Literal["joint", "sequential"] = "joint"  # one loss per batch, or clean then noisy passes (authors)

    def __post_init__(self) -> None:
        _check(0.0 <= self.alpha <= 1.0, "method.loss.alpha", f"expected a value in [0, 1], got {self.alpha}")
        _check(0.0 < self.q <= 1.0, "method.loss.q", f"expected a value in (0, 1], got {self.q}")


@dataclass(frozen=True)
class MethodConfig:
    """The training method: a registered name plus its selection and loss settings."""

    name: str = "visprompt"  # zeroshot | coop | coop-gce | cocoop | nlprompt | joapr | visprompt | visprompt-clean-only
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    mixup_alpha: float = 0.001  # joapr: mixup weights drawn from Beta(alpha, alpha) (JoAPR's released value)
    templates: Literal["dataset", "ensemble", "plain"] = "dataset"  # zeroshot: per-dataset or ImageNet ensemble


@dataclass(frozen=True)
class OptimConfig:
    """SGD with momentum, cosine schedule after a constant warm-up (stepped once per epoch, as CoOp does)."""

    lr: float = 0.002
    momentum: float = 0.9
    weight_decay: float = 5e-4
    epochs: int = 100
    warmup_epochs: int = 1
    warmup_lr: float = 1e-5  # constant learning rate during warm-up
    batch_size: int = 16
    eval_batch_size: int = 100
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU

    def __post_init__(self) -> None:
        _check(self.lr > 0, "optim.lr", f"expected a value > 0, got {self.lr}")
        _check(self.epochs >= 1, "optim.epochs", f"expected an integer >= 1, got {self.epochs}")
        _check(self.warmup_epochs >= 0, "optim.warmup_epochs", f"expected >= 0, got {self.warmup_epochs}")
        _check(self.batch_size >= 1, "optim.batch_size", f"expected an integer >= 1, got {self.batch_size}")
        _check(self.eval_batch_size >= 1, "optim.eval_batch_size", f"expected >= 1, got {self.eval_batch_size}")


@dataclass(frozen=True)
class ExecConfig:
    """Where a run writes, how it is seeded and on which device it runs."""

    name: str | None = None  # run directory name under out_dir (default: derived from the config)
    out_dir: str = "runs"
    seed: int = 1  # seeds few-shot sampling, noise, initialisation and data order
    device: str = "auto"  # auto (cuda if available), cpu, cuda, cuda:1, ...
    cache_features: bool = True  # cache the frozen image encoder's outputs when no augmentation is used
    threads: int = 0  # torch CPU threads for the run (0: torch's default, from OMP_NUM_THREADS or the cores)

    def __post_init__(self) -> None:
        _check(self.threads >= 0, "run.threads", f"expected an integer >= 0 (0: torch's default), got {self.threads}")


@dataclass(frozen=True)
class RunConfig:
    """The resolved configuration of one run."""

    data: DataConfig = field(default_factory=DataConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: ExecConfig = field(default_factory=ExecConfig)


# --------------------------------------------------------------------------------------------------- resolving

C = TypeVar("C")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def config_dir() -> Path:
    """The folder of the YAML files shipped with the package (``datasets/``, ``backbones/``, ``methods/``)."""
    return Path(str(resources.files("visprompt") / "configs"))


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain nested dict of a config dataclass."""
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Any) -> str:
    """The config as YAML, in field order."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False)


def load_config(
    files: Iterable[str | Path] = (),
    overrides: Iterable[str] = (),
    base: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Resolve defaults, then ``base`` (a nested dict), then each YAML file, then ``key=value`` overrides."""
    tree: dict[str, Any] = {}
    if base:
        _merge(tree, dict(base), "")
    for file in files:
        _merge(tree, _read_yaml(Path(file)), "")
    for item in overrides:
        key, value = parse_override(item)
        _merge(tree, _nest(key, value), "")
    return _build(RunConfig, tree, "")


def parse_override(item: str) -> tuple[str, Any]:
    """Split ``a.b=value`` into the dotted key and the YAML-parsed value."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. optim.lr=0.001")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads "1e-3" (no dot) as a string
    return key, value


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        loaded = yaml.safe_load(path.read_bytes().decode("utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path}{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path}: expected a mapping of sections, got {type(loaded).__name__}")
    return loaded


def _nest(dotted: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def _merge(into: dict[str, Any], new: Mapping[str, Any], prefix: str) -> None:
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value, f"{prefix}{key}.")
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value


def _build(cls: type[C], tree: Mapping[str, Any], prefix: str) -> C:
    """Instantiate dataclass ``cls`` from a nested mapping, checking names and types."""
    if not isinstance(tree, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {tree!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = _type_hints(cls)
    for key in tree:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(prefix + c for c in close)}?" if close else ""
            raise ConfigError(f"unknown config key {prefix}{key}{hint} (valid: {', '.join(fields)})")
    kwargs = {}
    for name, value in tree.items():
        kwargs[name] = _coerce(value, hints[name], f"{prefix}{name}")
    return cls(**kwargs)


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against type ``tp`` (converting int -> float and str paths where harmless)."""
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".")
    origin = get_origin(tp)
    if origin is Literal:
        allowed = get_args(tp)
        if isinstance(value, bool) and ("off" if value is False else "on") in allowed:
            value = "off" if value is False else "on"  # YAML 1.1 reads a bare off/on as a boolean
        if value not in allowed:
            close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{key}: expected one of {', '.join(map(repr, allowed))}, got {value!r}{hint}")
        return value
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            raise ConfigError(f"{key}: a value is required, got null")
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value  # pragma: no cover - every field type is handled above
