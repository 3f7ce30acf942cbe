"""Frozen CLIP backbones, the exact fast text paths, prompt learners and classifiers.

Imports point one way: backbone <- text <- context <- learners (coop, cocoop, film/visprompt) <- classifier.
"""

from visprompt.models.backbone import load_backbone, save_backbone
from visprompt.models.classifier import PromptClassifier, ZeroShotClassifier
from visprompt.models.cocoop import CoCoOpPromptLearner
from visprompt.models.coop import CoOpPromptLearner
from visprompt.models.frozen_clip import FrozenCLIP
from visprompt.models.templates import templates_for
from visprompt.models.text import PromptEmbeddings, TextEncoder
from visprompt.models.visprompt import VisPromptLearner

__all__ = [
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
