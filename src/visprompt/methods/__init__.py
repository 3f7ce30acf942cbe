"""Training methods: zero-shot CLIP, CoOp, CoOp+GCE, CoCoOp, NLPrompt, JoAPR, VisPrompt and visprompt-plus.

Each is registered in :data:`visprompt.registry.METHODS` with its builder and its whole recipe (``register_method``
next to the builder): the builder composes a classifier (frozen CLIP + prompt learner), a selection strategy and a
loss into a :class:`~visprompt.methods.base.MethodBase`; :func:`build_method` converts a RunConfig at one boundary
(:func:`method_spec`). Importing this package registers the built-in methods.
"""

from visprompt.methods import joapr, plus, prompt, zeroshot  # noqa: F401  (register the built-in methods)
from visprompt.methods.base import MethodBase, TrainView
from visprompt.methods.build import MethodSpec, build_method, method_spec
from visprompt.registry import METHODS

__all__ = ["METHODS", "MethodBase", "MethodSpec", "TrainView", "build_method", "method_spec"]
