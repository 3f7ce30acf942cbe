"""Run configuration: one frozen dataclass per part, and the one resolver (:func:`load_config`) of its layers.

A run's configuration is resolved in layers, later layers winning:

1. the dataclass defaults below (the paper's protocol; the method fields default to plain cross-entropy);
2. presets: a backbone preset (:data:`~visprompt.registry.BACKBONES`) and the recipe of the method that the
   user's layers name (:data:`~visprompt.registry.METHODS`), whichever layer names it;
3. the user's layers: a base mapping, YAML files, shorthands (dataset, method, backbone) and dotted overrides
   from the command line: ``optim.lr=0.001``, ``method.selection.eps=0.05``.

An override's text is read by the field's type: a number as a plain decimal (``010``, ``1:30`` and ``0x1e``, which
YAML 1.1 reads as 8, 90 and 30, are refused), a string as written (``--name 010`` is "010"), anything else as a YAML
scalar (``true``, ``null``, ``[1, 2]``); a config file's numbers must be written in decimal too. Values are checked
against the field's type; an unknown key or a bad value raises :class:`~visprompt.errors.ConfigError` with one line
naming the key and, for typos, the closest valid keys. Components never read this module: they take explicit
arguments, and the methods/engine layer converts a RunConfig into those arguments.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import logging
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from visprompt.errors import ConfigError, UnknownNameError
from visprompt.registry import BACKBONES, METHODS, NOISE_TYPES, NoiseTypeDef

__all__ = [
    "TRAINING_FIELDS",
    "BackboneConfig",
    "DataConfig",
    "ExecConfig",
    "LossConfig",
    "MethodConfig",
    "NoiseSpec",
    "OptimConfig",
    "PromptConfig",
    "RunConfig",
    "SelectionConfig",
    "flatten_tree",
    "load_config",
    "load_run_config",
    "merge_tree",
    "nest_tree",
    "parse_override",
    "read_yaml",
    "setting_label",
    "to_dict",
    "to_yaml",
    "unread_fields",
    "untrained_values",
]

log = logging.getLogger(__name__)

CLEAN = "clean"  # the setting name of every spec that changes no label


def _check(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {message}")


@dataclass(frozen=True)
class DataConfig:
    """Which images a run trains and evaluates on."""

    dataset: str = "testbed-backgrounds"  # a registered dataset name (an alias becomes it), or "folder" / "csv"
    root: str = "DATA"  # folder holding one sub-folder per dataset (the CoOp layout)
    path: str | None = None  # image folder or CSV file when dataset is "folder" or "csv"
    shots: int | Literal["all"] = 16  # K labelled training images per class (sampled before noise); "all": every one
    augment: bool = True  # random-resized-crop + flip on training images
    num_workers: int = 0  # data-loader worker processes

    def __post_init__(self) -> None:
        # One name per dataset: an alias (`pets`, `DescribableTextures`) becomes the registered name, so run names,
        # zero-shot templates, split caches and reports see the same run whichever name the user gave.
        from visprompt.data.datasets import DATASETS, canonical_name

        if isinstance(self.dataset, str):
            object.__setattr__(self, "dataset", canonical_name(self.dataset))
        # a dataset read from data.root ignores data.path: config.yaml would name images the run never saw
        reads_path = self.dataset not in DATASETS or DATASETS.get(self.dataset).reads_path  # unknown: load says so
        _check(self.path is None or reads_path, "data.path",
               f"not read by dataset {self.dataset!r}, which is read from data.root ({self.root}); leave it unset "
               "(data.path is the images of --dataset folder or csv)")  # fmt: skip
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
class NoiseSpec:
    """A synthetic label-noise setting, applied to the few-shot training split only (validation and test stay clean).

    One object for every noise type (:data:`visprompt.registry.NOISE_TYPES` lists them with what each reads);
    a field the type does not read must stay at its default, so two specs that differ in any field describe
    different noisy training sets. :attr:`tag` names run directories and split caches, :attr:`setting` and
    :attr:`label` group and name them in reports.
    """

    type: str = "sym"  # a registered noise type: none, sym, asym, pairs-per-class, asym-semantic, instance, open-set
    rate: float = 0.0  # fraction of training samples noised: exactly floor(rate * N); instance: the mean flip rate
    false_per_class: int = 0  # pairs-per-class: number of false labels per class (the PTNL/JoAPR protocol)
    pair_flip: bool = False  # pairs-per-class: flip to the next class instead of a uniform other class
    open_set_classes: int = 0  # open-set: the last k classes leave the task; their training images are the noise

    def __post_init__(self) -> None:
        kind = self.definition  # an unknown type raises here, with the closest names
        _check(0.0 <= self.rate < 1.0, "noise.rate", f"expected a value in [0, 1), got {self.rate}")
        _check(self.false_per_class >= 0, "noise.false_per_class", f"expected >= 0, got {self.false_per_class}")
        least = 1 if self.type == "open-set" else 0
        when = " with noise.type=open-set" if least else ""
        _check(self.open_set_classes >= least, "noise.open_set_classes",
               f"expected an integer >= {least}{when}, got {self.open_set_classes}")  # fmt: skip
        for name in ("rate", "false_per_class", "pair_flip", "open_set_classes"):
            default = NoiseSpec.__dataclass_fields__[name].default
            _check(name in kind.fields or getattr(self, name) == default, f"noise.{name}",
                   f"not used by noise.type={self.type} (leave it at {default!r}; it reads "
                   f"{', '.join(kind.fields) or 'nothing'})")  # fmt: skip

    @property
    def definition(self) -> NoiseTypeDef:
        """The registered noise type."""
        try:
            return NOISE_TYPES.get(self.type)
        except UnknownNameError as exc:
            raise ConfigError(f"noise.type: {exc}") from None

    @property
    def is_clean(self) -> bool:
        """True when no label can change: type none, or a zero rate/count (open-set never: it changes the task)."""
        if self.type == "open-set":
            return False
        return self.type == "none" or (self.false_per_class == 0 if self.type == "pairs-per-class" else self.rate == 0)

    @property
    def setting(self) -> tuple[str, float]:
        """The report's group key: (setting name, amount), e.g. ``("sym", 0.5)``, ``("pairs-flip", 4.0)``,
        ``("open-set-k2", 0.25)``; every clean spec is ``("clean", 0.0)``."""
        if self.is_clean:
            return CLEAN, 0.0
        name = self.definition.short or self.type
        if self.pair_flip:
            name += "-flip"
        if "open_set_classes" in self.definition.fields:
            name += f"-k{self.open_set_classes}"
        amount = float(self.false_per_class) if "false_per_class" in self.definition.fields else self.rate
        return name, amount

    @property
    def tag(self) -> str:
        """A path-safe name unique to every distinct spec: ``sym-0.5``, ``pairs4-flip``, ``open-set-0.25-k2``."""
        name = self.definition.short or self.type
        if "false_per_class" in self.definition.fields:
            name += str(self.false_per_class)
        if "rate" in self.definition.fields:
            name += f"-{self.rate:g}"
        if self.pair_flip:
            name += "-flip"
        if "open_set_classes" in self.definition.fields:
            name += f"-k{self.open_set_classes}"
        return name

    @property
    def label(self) -> str:
        """The table heading: ``clean``, ``sym 50%``, ``pairs-flip 4/class``, ``open-set-k2 25%``."""
        return setting_label(*self.setting)


def setting_label(name: str, amount: float) -> str:
    """The heading of a noise setting (:attr:`NoiseSpec.setting`): ``clean``, ``sym 12.5%``, ``pairs 2/class``."""
    if name == CLEAN:
        return CLEAN
    if name.startswith("pairs"):
        return f"{name} {amount:g}/class"
    return f"{name} {100 * amount:g}%"


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

    n_ctx: int = 16  # M, number of context tokens; unread with ctx_init, whose token count is M
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
    # the learned gate's own learning rate, as a multiple of optim.lr (its weight and bias in a parameter group of
    # their own; the schedule and warm-up apply at the same multiple); 1: one group for every parameter
    gate_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        _check(self.n_ctx >= 1, "prompt.n_ctx", f"expected an integer >= 1, got {self.n_ctx}")
        _check(not self.ctx_init or self.ctx_init.replace("_", " ").strip() != "", "prompt.ctx_init",
               f"expected a phrase with words (its tokens are the context), got {self.ctx_init!r}")  # fmt: skip
        _check(self.gate_lr_scale > 0, "prompt.gate_lr_scale", f"expected a value > 0, got {self.gate_lr_scale}")
        _check(self.gate_lr_scale == 1.0 or (self.gate == "learned" and self.visual_guidance), "prompt.gate_lr_scale",
               f"{self.gate_lr_scale} scales a learned gate's learning rate, and this prompt has none (prompt.gate "
               f"{self.gate!r}, prompt.visual_guidance {self.visual_guidance}); leave it at 1.0")  # fmt: skip
        _check(0.0 <= self.dropout < 1.0, "prompt.dropout", f"expected a value in [0, 1), got {self.dropout}")
        _check(self.num_heads >= 1, "prompt.num_heads", f"expected an integer >= 1, got {self.num_heads}")


@dataclass(frozen=True)
class SelectionConfig:
    """How the training set is split into reliable and unreliable samples."""

    kind: Literal["none", "ot", "gmm"] = "none"
    # minibatch: one OT per training step on that step's own train-mode forward (the online split);
    # epoch: at each epoch's start, in eval mode, one OT per mini-batch of a shuffled pass over the training set,
    #   then clean-only and noisy-only batches (the VisPrompt authors' loop, with loss.schedule=sequential);
    # full: one OT over the whole training set per epoch (NLPrompt)
    scope: Literal["minibatch", "epoch", "full"] = "minibatch"
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
        # the fields a kind does not read stay at their defaults, so config.yaml never lists a setting that did nothing
        ot_fields = ("scope", "cost", "eps", "tol", "max_iter", "budget")
        unread = {"none": (*ot_fields, "gmm_threshold"), "ot": ("gmm_threshold",), "gmm": ot_fields}[self.kind]
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for option in unread:
            default = defaults[option]
            _check(getattr(self, option) == default, f"method.selection.{option}",
                   f"not read by selection kind {self.kind!r} (leave it at {default!r})")  # fmt: skip


@dataclass(frozen=True)
class LossConfig:
    """L = alpha * clean_loss(clean) + (1 - alpha) * noisy_loss(noisy), both on the given labels."""

    clean: Literal["ce", "gce", "mae", "sce"] = "ce"
    noisy: Literal["ce", "gce", "mae", "sce", "none"] = "none"
    alpha: float = 1.0  # weight of the clean-set loss
    q: float = 0.5  # GCE exponent (q = 1 is MAE up to a constant)
    schedule: Literal["joint", "sequential"] = "joint"  # one loss per batch, or clean then noisy passes (authors)
    # joint schedule: divide both weights by alpha, so a clean sample's gradient equals CoOp's at the same lr
    # (alpha = 0.5 otherwise halves every sample's step against CoOp, CoOp+GCE and NLPrompt)
    normalize_alpha: bool = False

    def __post_init__(self) -> None:
        _check(0.0 <= self.alpha <= 1.0, "method.loss.alpha", f"expected a value in [0, 1], got {self.alpha}")
        _check(0.0 < self.q <= 1.0, "method.loss.q", f"expected a value in (0, 1], got {self.q}")
        _check(not self.normalize_alpha or self.alpha > 0, "method.loss.normalize_alpha",
               f"needs method.loss.alpha > 0, got {self.alpha}")  # fmt: skip
        _check("gce" in (self.clean, self.noisy) or self.q == 0.5, "method.loss.q",
               f"the GCE exponent is not read without a gce loss (clean {self.clean!r}, noisy {self.noisy!r}); "
               "leave it at 0.5")  # fmt: skip


@dataclass(frozen=True)
class MethodConfig:
    """The training method: a registered name plus its selection and loss settings.

    The field defaults here are plain cross-entropy with no selection; a method's own values come from its
    registered recipe (:data:`visprompt.registry.METHODS`), which :func:`load_config` layers under the user's.
    """

    name: str = "visprompt"  # a registered method (`visprompt methods` lists them); its recipe is applied
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    mixup_alpha: float = 0.001  # joapr: mixup weights drawn from Beta(alpha, alpha) (JoAPR's released value)
    templates: Literal["dataset", "ensemble", "plain"] = "dataset"  # zeroshot: per-dataset or ImageNet ensemble
    # visprompt-plus: logits = learned + prior_weight * zero-shot logits (the dataset's templates), in training,
    # in the split and at test time; 0 = no zero-shot prior
    prior_weight: float = 0.0
    # visprompt-plus: train a sample the epoch's OT split calls noisy on its OT pseudo-label instead of its given
    # label, when the current model gives that pseudo-label at least relabel_min_prob (else it gets no loss)
    relabel: bool = False
    relabel_min_prob: float = 0.5  # see relabel
    # visprompt-plus, with relabel: "model" thresholds the model's probability of the pseudo-label (the samples below
    # get no loss); "posterior" its probability once the given label is weighed by the label noise the split
    # estimates (its odds against any one other class: NOISY_WEIGHTS' (C - 1) k / (1 - k) while the rejections
    # spread, k / (1 - k) for a pair flip), and the samples below keep their given label as the noisy part;
    # "posterior-zeroshot" as posterior, and only where the frozen zero-shot CLIP's class is the pseudo-label too
    relabel_by: Literal["model", "posterior", "posterior-zeroshot"] = "model"
    # visprompt-plus, with relabel: relabel only in the epochs whose split keeps at most this fraction of the training
    # set (estimates at least 1 - relabel_max_kept of the labels wrong); the other epochs train every sample on its
    # given label, as without relabel. 1 = every epoch
    relabel_max_kept: float = 1.0
    # visprompt-plus: the noisy part's loss weight; "kept" multiplies it by the fraction of the training set the
    # epoch's split keeps as clean (a proxy for 1 - the noise rate: the more labels the split rejects, the less
    # the rejected samples' given labels are trusted); "kept-squared" by its square; "kept-odds" by the squared odds
    # kept / (1 - kept), at most 1 (full weight while the split keeps at least half the labels); "kept-spread"
    # "kept-odds" while the given labels of the rejected samples spread over the other classes (symmetric noise),
    # "kept-squared" while they concentrate on one label per OT pseudo-label (a pair flip), linear between;
    # "kept-spread-classes" as "kept-spread" with the spread part's odds taken against one other class, so that
    # with many classes (where each wrong label is rare) the rejected labels keep more weight (= "kept-spread" at 10)
    noisy_weight: Literal["fixed", "kept", "kept-squared", "kept-odds", "kept-spread", "kept-spread-classes"] = "fixed"
    # visprompt-plus: "noise" multiplies prior_weight by 1 - the kept fraction of the epoch's split (the noise
    # estimate), in the next epoch's training and split and at test time; "noise-squared" by its square (a weak
    # prior at low noise, a strong one at high noise); "fixed" keeps prior_weight
    prior_schedule: Literal["fixed", "noise", "noise-squared"] = "fixed"
    # visprompt-plus: what a sample the epoch's split calls noisy is trained towards: "given" (its given label, with
    # method.loss.noisy), "zeroshot" (the frozen zero-shot CLIP's class distribution for its image, by
    # cross-entropy; the dataset's templates) or "mixed" (both: kept fraction x the given label's loss + (1 - kept
    # fraction) x the cross-entropy to zero-shot; method.noisy_weight's factor applies on top)
    noisy_target: Literal["given", "zeroshot", "mixed"] = "given"
    # visprompt-plus: "kept" multiplies the FiLM block's gate by the kept fraction of the epoch's split (1 - the
    # noise estimate), in that epoch's training and at test time; "kept-squared" by its square (the visual branch
    # injects less the more labels the split rejects); "fixed" leaves the gate as learned
    gate_schedule: Literal["fixed", "kept", "kept-squared"] = "fixed"
    # visprompt-plus: "noise" sets the noisy part's GCE q to 1 - the kept fraction of the epoch's split (at least
    # 0.05), each epoch: near the cross-entropy when the split keeps most labels, near MAE when it rejects most;
    # "fixed" keeps method.loss.q. Needs method.loss.noisy=gce and method.loss.clean=ce (q would change it too)
    q_schedule: Literal["fixed", "noise"] = "fixed"

    def __post_init__(self) -> None:
        try:
            recipe = METHODS.get(self.name).recipe
        except UnknownNameError as exc:
            raise ConfigError(f"method.name: {exc}") from None
        # A method-specific option that the named method's recipe does not set is one it does not read: a value
        # other than the default would be written into config.yaml and mean nothing (a label that lies).
        for option in dataclasses.fields(self):
            key = f"method.{option.name}"
            if option.name in ("name", "selection", "loss") or key in recipe:
                continue
            _check(getattr(self, option.name) == option.default, key,
                   f"not read by method {self.name} (leave it at {option.default!r}; `visprompt methods "
                   f"{self.name}` lists what it sets)")  # fmt: skip
        _check(self.prior_weight >= 0, "method.prior_weight", f"expected a value >= 0, got {self.prior_weight}")
        _check(self.mixup_alpha > 0, "method.mixup_alpha", f"expected a value > 0, got {self.mixup_alpha}")
        _check(0.0 <= self.relabel_min_prob <= 1.0, "method.relabel_min_prob",
               f"expected a value in [0, 1], got {self.relabel_min_prob}")  # fmt: skip
        _check(0.0 <= self.relabel_max_kept <= 1.0, "method.relabel_max_kept",
               f"expected a value in [0, 1], got {self.relabel_max_kept}")  # fmt: skip
        _check(self.relabel or self.relabel_max_kept == 1.0, "method.relabel_max_kept",
               f"{self.relabel_max_kept} says when samples are relabelled: it needs method.relabel=true (without "
               "relabelling leave it at 1.0)")  # fmt: skip
        _check(self.relabel or self.relabel_by == "model", "method.relabel_by",
               f"{self.relabel_by!r} chooses how samples are relabelled: it needs method.relabel=true (without "
               "relabelling leave it at 'model')")  # fmt: skip
        _check(not (self.relabel and self.noisy_target != "given"), "method.noisy_target",
               f"{self.noisy_target!r} sets the noisy part's target, as method.relabel=true does: set one")  # fmt: skip


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
    # persistent store of un-augmented frozen image outputs shared across runs: "auto" (<out_dir>/.features),
    # a folder, or null (none); results are bit-identical with and without it
    feature_store: str | None = "auto"
    threads: int = 0  # torch CPU threads for the run (0: torch's default, from OMP_NUM_THREADS or the cores)
    # the text encoder runs at most this many classes per pass (null: all at once): bounds a step's memory at many
    # classes (docs/performance.md, section 5); logits change in the last digits (~1e-6), so it is part of the run
    class_chunk: int | None = None

    def __post_init__(self) -> None:
        _check(self.threads >= 0, "run.threads", f"expected an integer >= 0 (0: torch's default), got {self.threads}")
        _check(self.class_chunk is None or self.class_chunk >= 1, "run.class_chunk",
               f"expected an integer >= 1 or null (all classes at once), got {self.class_chunk}")  # fmt: skip


@dataclass(frozen=True)
class RunConfig:
    """The resolved configuration of one run."""

    data: DataConfig = field(default_factory=DataConfig)
    noise: NoiseSpec = field(default_factory=NoiseSpec)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: ExecConfig = field(default_factory=ExecConfig)

    def __post_init__(self) -> None:
        _hold_training_fields(self)
        _check_method_reads(self)
        p = self.prompt
        _check(self.method.gate_schedule == "fixed" or (p.visual_guidance and p.gate != "zero"),
               "method.gate_schedule", f"{self.method.gate_schedule!r} scales the FiLM block's gate, and this prompt "
               f"injects nothing (prompt.gate {p.gate!r}, prompt.visual_guidance {p.visual_guidance}); leave it "
               "at 'fixed'")  # fmt: skip
        loss = self.method.loss
        _check(self.method.q_schedule == "fixed" or (loss.noisy == "gce" and loss.clean == "ce"),
               "method.q_schedule", f"{self.method.q_schedule!r} sets the noisy part's GCE q; it needs "
               f"method.loss.noisy 'gce' and method.loss.clean 'ce' (got {loss.noisy!r}, {loss.clean!r})")  # fmt: skip


#: The fields only training reads: the optimiser, its schedule, the training batches and the training images'
#: augmentation and feature cache. Evaluation reads optim.eval_batch_size, optim.precision, data.num_workers and the
#: run's placement. A method that does not train holds them at fixed values (:func:`untrained_values`).
TRAINING_FIELDS = ("optim.lr", "optim.momentum", "optim.weight_decay", "optim.epochs", "optim.warmup_epochs",
                   "optim.warmup_lr", "optim.batch_size", "data.augment", "run.cache_features")  # fmt: skip


def untrained_values(method: str) -> dict[str, Any]:
    """The values of :data:`TRAINING_FIELDS` that a method that does not train (:attr:`MethodDef.trains
    <visprompt.registry.MethodDef.trains>` false: zero-shot CLIP) runs with, whatever the layers give: its recipe's,
    else the default. ``{}`` for a method that trains, or an unknown name."""
    if method not in METHODS or METHODS.get(method).trains:
        return {}
    recipe = METHODS.get(method).recipe
    sections = {"data": DataConfig, "optim": OptimConfig, "run": ExecConfig}
    defaults = {f"{name}.{f.name}": f.default for name, cls in sections.items() for f in dataclasses.fields(cls)}
    return {key: recipe.get(key, defaults[key]) for key in TRAINING_FIELDS}


def _hold_training_fields(cfg: RunConfig) -> None:
    """Give a method that does not train its :func:`untrained_values` (in place): a value a layer gives one of them
    trains nothing, and config.yaml, run reuse and the report's label would tell otherwise identical runs apart by it.

    Held rather than refused (as :func:`_check_method_reads` refuses a prompt or loss field): a grid's or a command's
    base gives every method of a comparison its schedule (``optim.epochs: 30`` for zero-shot CLIP and CoOp alike, a
    ``--set optim.epochs=5`` on a grid without an epochs axis), which no other layer could express; and a config.yaml
    saved with such values reads back as the run it is.
    """
    held = untrained_values(cfg.method.name)
    for section in ("data", "optim", "run"):
        values = {key.partition(".")[2]: value for key, value in held.items() if key.startswith(f"{section}.")}
        current = getattr(cfg, section)
        if any(getattr(current, name) != value for name, value in values.items()):
            object.__setattr__(cfg, section, dataclasses.replace(current, **values))


def _check_method_reads(cfg: RunConfig) -> None:
    """Refuse a prompt, selection or loss field the method's builder does not read, set to a value other than the
    one its recipe (or the default) gives: the run would train without it while config.yaml records it.

    What a builder reads is declared at registration (:attr:`visprompt.registry.MethodDef.reads`); of the fields it
    declares, those the resolved settings leave unread (:func:`unread_fields`) are held to the same rule. A method
    registered without a declaration (``reads=None``) is not checked.
    """
    definition = METHODS.get(cfg.method.name)
    if definition.reads is None:
        return
    unread = unread_fields(cfg)
    sections = {"prompt": cfg.prompt, "method.selection": cfg.method.selection, "method.loss": cfg.method.loss}
    for prefix, section in sections.items():
        for option in dataclasses.fields(section):
            key = f"{prefix}.{option.name}"
            declared = any(key == r or key.startswith(r.rstrip(".") + ".") for r in definition.reads)
            if declared and key not in unread:
                continue
            expected = definition.recipe.get(key, option.default)
            value = getattr(section, option.name)
            if declared:
                _check(value in (expected, _SAYS_UNUSED.get(key, expected)), key,
                       f"not read with {unread[key]}; leave it at {expected!r}")  # fmt: skip
                continue
            _check(value == expected, key, f"not read by method {cfg.method.name} (leave it at {expected!r}; "
                   f"`visprompt methods {cfg.method.name}` lists what it reads)")  # fmt: skip


#: Values that say a field trains nothing (no noisy-part loss): accepted where the settings leave the field unread.
_SAYS_UNUSED = {"method.loss.noisy": "none"}


def unread_fields(cfg: RunConfig) -> dict[str, str]:
    """The prompt and loss fields that the resolved settings leave unread in a learner that reads them (a context
    prompt learner, :class:`~visprompt.methods.objective.SplitLoss`), each with the setting that does it. Whatever the
    method declares, such a field must keep its recipe's value (or the default), or take the value that says it
    trains nothing (``method.loss.noisy=none``): config.yaml would otherwise record a change that trained nothing.
    """
    loss = cfg.method.loss
    unread: dict[str, str] = {}
    if cfg.prompt.ctx_init:  # the phrase's token count is the number of context tokens (models.context.PromptContext)
        unread["prompt.n_ctx"] = f"prompt.ctx_init={cfg.prompt.ctx_init!r}, whose tokens are the context"
    if loss.schedule == "sequential":  # each part of a batch is its own step, its loss a plain mean
        for name in ("alpha", "normalize_alpha"):
            unread[f"method.loss.{name}"] = "method.loss.schedule=sequential, where each part's loss is a plain mean"
    noisy_part = None
    if cfg.method.selection.kind == "none":
        noisy_part = "method.selection.kind=none, where every sample is clean (no noisy part)"
    elif cfg.method.noisy_target == "zeroshot":
        noisy_part = "method.noisy_target=zeroshot, where the noisy part is trained towards zero-shot CLIP"
    if noisy_part:
        unread["method.loss.noisy"] = noisy_part
        if loss.clean != "gce":
            unread["method.loss.q"] = noisy_part
    if cfg.method.q_schedule != "fixed":
        unread["method.loss.q"] = f"method.q_schedule={cfg.method.q_schedule}, where each epoch sets q from its split"
    return unread


# --------------------------------------------------------------------------------------------------- resolving

C = TypeVar("C")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
# what an override's number must look like: decimal digits, no leading zero (YAML 1.1: 010 is octal 8), no colon
# (1:30 is sexagesimal 90), no 0x/0b prefix, no underscore
_DECIMAL_INT = re.compile(r"[-+]?(0|[1-9]\d*)")
_DECIMAL_FLOAT = re.compile(r"[-+]?((0|[1-9]\d*)(\.\d*)?|\.\d+)([eE][-+]?\d+)?")
_NULL_TEXT = ("null", "Null", "NULL", "~")  # YAML's null


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain nested dict of a config dataclass."""
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Any) -> str:
    """The config as YAML, in field order."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False)


def load_config(
    files: Iterable[str | Path] = (),
    overrides: Iterable[str] | Mapping[str, Any] = (),
    base: Mapping[str, Any] | None = None,
    *,
    dataset: str | None = None,
    backbone: str | None = None,
    method: str | None = None,
) -> RunConfig:
    """The one resolver: defaults, presets, ``base``, YAML ``files``, the shorthands, then ``key=value`` overrides.

    Layers, later winning: the dataclass defaults; the backbone preset (``backbone``, when it names one of
    :data:`~visprompt.registry.BACKBONES`) and the recipe of the method the user's layers name (``method.name``
    from any layer, else ``method``, else the default); then the user's layers: ``base`` (a nested or dotted
    mapping), each file, the shorthands (``dataset`` -> ``data.dataset``, ``method`` -> ``method.name``,
    ``backbone`` -> ``backbone.arch`` when it is not a preset) and the overrides (``key=value`` strings, or a
    mapping of dotted keys to values). A switch the user's layers turn off takes the recipe's values for the fields
    only it reads with it (:data:`SWITCHED_FIELDS`). A resolved ``config.yaml``
    names every field, so reading one back gives exactly the saved configuration.
    """
    user: dict[str, Any] = {}
    if base:
        merge_tree(user, nest_tree(base))
    for file in files:
        merge_tree(user, read_yaml(Path(file)))
    shorthands = {"data.dataset": dataset, "method.name": method}
    if backbone is not None and backbone.lower() not in BACKBONES:
        shorthands["backbone.arch"] = backbone
    merge_tree(user, nest_tree({k: v for k, v in shorthands.items() if v is not None}))
    pairs = overrides.items() if isinstance(overrides, Mapping) else map(parse_override, overrides)
    for key, value in pairs:
        merge_tree(user, nest_tree({key: value}))
    tree: dict[str, Any] = {}
    if backbone is not None and backbone.lower() in BACKBONES:
        merge_tree(tree, nest_tree(BACKBONES.get(backbone.lower())))
    name = _method_name(user)
    if name in METHODS:  # an unknown name is reported by MethodConfig, with the closest names
        merge_tree(tree, nest_tree(_unswitched(METHODS.get(name).recipe, user)))
    merge_tree(tree, user)
    cfg = _build(RunConfig, tree, "")
    given = flatten_tree(user)
    held = untrained_values(cfg.method.name)
    changed = [key for key, value in held.items() if key in given and given[key] != value]
    if changed:
        kept = ", ".join(f"{key}={held[key]}" for key in changed)
        _note_once(f"method {cfg.method.name} does not train: its config keeps {kept}, whatever the layers set")
    return cfg


@functools.cache
def _note_once(message: str) -> None:
    """Log ``message`` once per process (a sweep resolves the same setting for many runs)."""
    log.info(message)


#: Method switches and the fields only the switch's on state reads. Where the user's layers turn a switch off, a
#: recipe's values for those fields go with it (back to their defaults), so ``method.relabel=false`` alone turns
#: ``visprompt-plus``'s relabelling off; a value the user gives one of them is kept, and refused as usual.
SWITCHED_FIELDS: dict[str, tuple[str, ...]] = {
    "method.relabel": ("method.relabel_by", "method.relabel_min_prob", "method.relabel_max_kept"),
}


def _unswitched(recipe: Mapping[str, Any], user: Mapping[str, Any]) -> dict[str, Any]:
    """The dotted ``recipe`` without the fields of the switches the user's layers turn off (:data:`SWITCHED_FIELDS`)."""
    user_flat = flatten_tree(user)
    off = {key for switch, fields in SWITCHED_FIELDS.items() if user_flat.get(switch) is False for key in fields}
    return {key: value for key, value in recipe.items() if key not in off}


def load_run_config(path: str | Path) -> RunConfig:
    """A run's saved ``config.yaml``, resolved as that run was configured.

    A field the file lacks was added after the run was written; it takes the option's own default, which is what
    every version before the option did (options are added with a default that keeps the earlier behaviour), not
    the value today's recipe of the method gives it: a recipe may turn a new option on (``visprompt-plus``'s
    ``method.q_schedule=noise``), and an older run did not train with it. No preset or recipe layer is applied;
    everything else the file names is taken as it is.

    A run saved under a dataset alias whose zero-shot template differs from its registered name's (``pets``, before
    aliases were resolved to the registered name) is refused: rebuilt today, its prompts would not be the ones it
    trained and was scored with.
    """
    tree = read_yaml(Path(path), "run config")
    _refuse_renamed_dataset(tree, path)
    return _build(RunConfig, tree, "")


def _refuse_renamed_dataset(tree: Mapping[str, Any], path: str | Path) -> None:
    from visprompt.data.datasets import canonical_name
    from visprompt.models.templates import templates_for

    data = tree.get("data")
    name = data.get("dataset") if isinstance(data, Mapping) else None
    if not isinstance(name, str) or (registered := canonical_name(name)) == name:
        return
    then, now = templates_for(name)[0], templates_for(registered)[0]
    if then != now:
        raise ConfigError(
            f"run config {path}: data.dataset {name!r} is an alias of {registered!r}, whose zero-shot template is "
            f"now {now!r}; the run was made with {then!r}, so it cannot be evaluated or resumed as it trained "
            f"(train it again with --dataset {registered})"
        )


def _method_name(tree: Mapping[str, Any]) -> Any:
    section = tree.get("method")
    name = section.get("name") if isinstance(section, Mapping) else None
    return MethodConfig.name if name is None else name


def parse_override(item: str) -> tuple[str, Any]:
    """Split ``a.b=value`` into the dotted key and its value, read by the field's type (:func:`_parse_text`)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. optim.lr=0.001")
    tp = _field_type(key)
    return key, _yaml_scalar(raw) if tp is None else _parse_text(raw, tp, key)


def _yaml_scalar(raw: str) -> Any:
    """Text as a YAML value (``true``, ``null``, ``[1, 2]``, ``1e-3``); text that is not YAML stays text."""
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads "1e-3" (no dot) as a string
    return value


def _field_type(key: str) -> Any:
    """The type of the RunConfig field at dotted ``key``; None where the key names no field (an unknown key, a
    section, a sweep's preset key), which :func:`load_config` reports or handles."""
    tp: Any = RunConfig
    for name in key.split("."):
        if not dataclasses.is_dataclass(tp):
            return None
        tp = _type_hints(tp).get(name)
    return None if dataclasses.is_dataclass(tp) else tp


def _parse_text(raw: str, tp: Any, key: str) -> Any:
    """Override text ``raw`` of a field of type ``tp``: YAML's null words as None, a choice as written, an int or
    float field's number as a plain decimal, a string field's text as written (without surrounding blanks and
    quotes), anything else (booleans, a choice misspelt) as a YAML scalar."""
    options = get_args(tp) if get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    text = raw.strip()
    if text in _NULL_TEXT:
        return None  # a field that cannot be null says so in _coerce
    if any(get_origin(option) is Literal and text in get_args(option) for option in options):
        return text
    for kind, pattern, what in ((int, _DECIMAL_INT, "integer"), (float, _DECIMAL_FLOAT, "number")):
        if kind not in options:
            continue
        if pattern.fullmatch(text):
            if kind is float and not math.isfinite(float(text)):
                raise ConfigError(f"{key}: expected a finite number, got {text}")
            return kind(text)
        value = _yaml_scalar(raw)
        if isinstance(value, int if kind is int else (int, float)) and not isinstance(value, bool):
            raise ConfigError(f"{key}: expected a plain decimal {what}, got {text} (YAML 1.1 reads it as {value})")
        if re.fullmatch(r"[-+]?0\d[\d_]*", text):  # 08, 09: not octal, and YAML keeps them as text
            raise ConfigError(f"{key}: expected a plain decimal {what}, got {text} (a leading zero)")
        return value  # not a number of this kind: _coerce says what was expected
    if str in options:
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":  # a quoted string: the text inside
            value = _yaml_scalar(text)
            return value if isinstance(value, str) else text
        return text
    return _yaml_scalar(raw)


class _NotDecimal(yaml.MarkedYAMLError):
    """A number in a YAML file written other than in decimal digits."""


class _DecimalLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s reading, except that a number YAML 1.1 reads other than as its decimal digits (``010``
    octal 8, ``0x1e``, ``0b11``, ``1:30`` sexagesimal 90) is an error: a file meant the digits, and its text is gone
    once loaded. Quoted, it is text (``name: "010"``)."""


def _decimal_only(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    value = loader.construct_yaml_int(node) if node.tag.endswith(":int") else loader.construct_yaml_float(node)
    text = str(node.value)
    if ":" in text or (node.tag.endswith(":int") and not re.fullmatch(r"[-+]?(0|[1-9][0-9_]*)", text)):
        raise _NotDecimal(problem=f"{text} is not a plain decimal number (YAML 1.1 reads it as {value}); write it in "
                          "decimal digits, or quote it for text", problem_mark=node.start_mark)  # fmt: skip
    return value


_DecimalLoader.add_constructor("tag:yaml.org,2002:int", _decimal_only)
_DecimalLoader.add_constructor("tag:yaml.org,2002:float", _decimal_only)


def read_yaml(path: Path, what: str = "config file", expected: str = "a mapping of sections") -> dict[str, Any]:
    """The mapping in YAML file ``path``; a missing file, bad YAML, a number not written in decimal digits
    (:class:`_DecimalLoader`) or another value is a one-line ConfigError."""
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=_DecimalLoader) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path}: not UTF-8 text") from None
    except _NotDecimal as exc:
        raise ConfigError(f"{what} {path} line {exc.problem_mark.line + 1}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{what} {path}{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{what} {path}: expected {expected}, got {type(loaded).__name__}")
    return loaded


def nest_tree(tree: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys to nested sections: ``{"optim.lr": 1, "data": {"shots": 2}}`` -> ``{"optim": {"lr": 1}, ...}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        *sections, name = str(key).split(".")
        node = out
        for section in sections:
            node = node.setdefault(section, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config key {key}: {section} is a value, not a section")
        merge_tree(node, {name: nest_tree(value) if isinstance(value, Mapping) else value})
    return out


def merge_tree(into: dict[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Merge nested mapping ``new`` into ``into`` in place (sections merged, values replaced); returns ``into``."""
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            merge_tree(into[key], value)
        else:
            into[key] = copy.deepcopy(dict(value) if isinstance(value, Mapping) else value)
    return into


def flatten_tree(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections to dotted keys: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten_tree(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


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
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads "1e-3" (no dot) as a string
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value  # pragma: no cover - every field type is handled above
