"""Frozen CLIP backbones, the exact fast text paths, prompt learners and classifiers.

Imports point one way: backbone <- text <- context <- learners (coop, cocoop, film/visprompt) <- classifier.
"""

from visprompt.models.backbone import load_backbone, save_backbone
from visprompt.models.classifier import PromptClassifier, ZeroShotClassifier
from visprompt.models.frozen_clip import FrozenCLIP
from visprompt.models.prompts import PROMPT_LEARNERS, CoCoOpPromptLearner, CoOpPromptLearner, VisPromptLearner
from visprompt.models.templates import templates_for
from visprompt.models.text import PromptEmbeddings, TextEncoder

__all__ = [
    "PROMPT_LEARNERS",
    "CoCoOpPromptLearner",
    "CoOpPromptLearner",
    "FrozenCLIP",
    "PromptClassifier",
    "PromptEmbeddings",
    "TextEncoder",
    "VisPromptLearner",
    "ZeroShotClassifier",
    "load_backbone",
    "save_backbone",
    "templates_for",
]
