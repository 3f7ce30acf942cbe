"""Small named registries that fail loudly with the closest names, and the project's registries of methods,
noise types and backbone presets (datasets and testbed tasks: :data:`visprompt.data.datasets.DATASETS`)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from visprompt.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to objects, filled with the :meth:`register` decorator.

    >>> LOSSES: Registry[Callable] = Registry("loss")
    >>> @LOSSES.register("ce")
    ... def cross_entropy(logits, target): ...
    >>> LOSSES.get("cd")  # raises UnknownNameError: unknown loss 'cd'; did you mean 'ce'? ...
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering its argument under ``name``; a name can be registered once."""

        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        """The object registered as ``name``; an unknown name raises with the closest matches."""
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._items), n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{hint} (known: {', '.join(sorted(self._items))})"
            ) from None

    def items(self) -> list[tuple[str, T]]:
        """(name, object) pairs, sorted by name."""
        return [(name, self._items[name]) for name in self.names()]

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


# ------------------------------------------------------------------------------------------ the registries
# Every built-in is registered when ``import visprompt`` runs (see ``visprompt/__init__.py``); plugins register
# theirs through the ``visprompt.plugins`` entry point group or by calling the ``register_*`` functions.


@dataclass(frozen=True)
class MethodDef:
    """A training method: its builder and its whole recipe, registered under one name.

    ``recipe`` maps dotted config keys to the method's published defaults (``method.selection.kind``,
    ``method.loss.alpha``, ``prompt.n_ctx``, ``optim.epochs``, ...). Whatever layer names the method (a flag,
    ``--set method.name=...``, a YAML file, a sweep axis, Python), the resolver puts this recipe under the user's
    own layers, so the run trains exactly this method with the user's individual changes on top.
    """

    name: str
    build: Callable[..., Any]  # (clip, classnames, spec: MethodSpec) -> MethodBase
    recipe: Mapping[str, Any]  # dotted config key -> value
    summary: str  # one line for --help, `visprompt methods` and the docs
    variant_of: str | None = None  # an ablation variant: the named method's builder and recipe, changed by ``recipe``
    trains: bool = True  # False: evaluated only (zero-shot)
    # the prompt / method.selection / method.loss fields the builder reads: dotted keys, or a section ("method.loss")
    # for all of its fields; any other field of those sections must keep the recipe's value (or the default).
    # None: not declared (not checked), for plugins registered before the declaration existed
    reads: tuple[str, ...] | None = None


@dataclass(frozen=True)
class NoiseTypeDef:
    """A synthetic label-noise type: which NoiseSpec fields it reads, what it needs from the run, its function.

    ``apply(labels, spec, num_classes, rng, inputs) -> noisy labels`` is pure and seeded; ``inputs`` holds what
    ``needs`` names: ``"targets"`` (a (C,) class map from the frozen CLIP's text features), ``"features"`` ((N, d)
    frozen image features of the training samples) or ``"pool"`` (images outside the label set).
    """

    name: str
    fields: tuple[str, ...]  # the NoiseSpec fields it reads besides ``type`` (the others must stay at defaults)
    summary: str
    apply: Callable[..., Any] | None = None  # None: a type handled by the data pipeline itself (open-set)
    needs: tuple[str, ...] = ()  # run inputs: "targets", "features", "pool"
    short: str = ""  # the run-directory and table name (default: the type name)
    depends_on_backbone: bool = False  # its labels depend on the frozen CLIP (part of the split cache key)


METHODS: Registry[MethodDef] = Registry("method")
NOISE_TYPES: Registry[NoiseTypeDef] = Registry("noise type")
BACKBONES: Registry[Mapping[str, Any]] = Registry("backbone preset")  # name -> dotted ``backbone.*`` values


def register_method(
    name: str,
    *,
    recipe: Mapping[str, Any],
    summary: str,
    trains: bool = True,
    reads: Iterable[str] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a method builder with its recipe (dotted config keys -> values) and the prompt,
    selection and loss fields it reads (``reads``; see :attr:`MethodDef.reads`)."""
    declared = tuple(reads) if reads is not None else None

    def add(build: Callable[..., Any]) -> Callable[..., Any]:
        METHODS.register(name)(MethodDef(name, build, dict(recipe), summary, trains=trains, reads=declared))
        return build

    return add


def register_variant(name: str, *, of: str, changes: Mapping[str, Any], summary: str) -> MethodDef:
    """Register an ablation variant: method ``of`` with ``changes`` on top of its recipe, under its own name."""
    base = METHODS.get(of)
    variant = MethodDef(
        name, base.build, {**base.recipe, **changes}, summary, variant_of=of, trains=base.trains, reads=base.reads
    )
    METHODS.register(name)(variant)
    return variant
