"""Training methods: zero-shot CLIP, CoOp, CoOp+GCE, CoCoOp, NLPrompt, JoAPR, VisPrompt and visprompt-plus.

Each is a builder registered in :data:`METHODS` that composes a classifier (frozen CLIP + prompt learner), a
selection strategy and a loss into a :class:`~visprompt.methods.base.MethodBase`; :func:`build_method` converts a
RunConfig at one boundary (:func:`method_spec`).
"""

from visprompt.methods import joapr, plus, prompt, zeroshot  # noqa: F401  (register the built-in methods)
from visprompt.methods.base import METHODS, MethodBase, TrainView
from visprompt.methods.build import MethodSpec, build_method, method_spec

__all__ = ["METHODS", "MethodBase", "MethodSpec", "TrainView", "build_method", "method_spec"]
