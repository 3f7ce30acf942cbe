"""Zero-shot prompt templates: the per-dataset sentences of the prompt-learning literature.

One hand-written template per benchmark dataset (the choices CoOp's zero-shot baseline made, written out here
as our own table), plus two ImageNet ensembles: a 7-template selection and OpenAI's 80 templates (read from
the installed open_clip). Keys are matched case-insensitively, ignoring ``_``, ``-`` and spaces.
"""

from __future__ import annotations

from visprompt.errors import UnknownNameError

DEFAULT_TEMPLATE = "a photo of a {}."

DATASET_TEMPLATES: dict[str, str] = {
    "Caltech101": "a photo of a {}.",
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "{} texture.",
    "DTD": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a photo of {}, a type of food.",
    "Food101N": "a photo of {}, a type of food.",
    "SUN397": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
}

IMAGENET_SELECT_TEMPLATES: tuple[str, ...] = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def imagenet_openai_templates() -> list[str]:
    """OpenAI's 80 ImageNet templates, as format strings (from open_clip's zero-shot metadata)."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return [fn("{}") for fn in OPENAI_IMAGENET_TEMPLATES]


def templates_for(dataset: str, ensemble: str | None = None) -> list[str]:
    """Templates for a dataset: its own sentence, or an ImageNet ensemble.

    Args:
        dataset: a dataset name (unknown names get ``"a photo of a {}."``).
        ensemble: None, ``"select"`` (7 templates) or ``"openai"`` (80 templates).
    """
    if ensemble is None:
        table = {_key(k): v for k, v in DATASET_TEMPLATES.items()}
        return [table.get(_key(dataset), DEFAULT_TEMPLATE)]
    if ensemble == "select":
        return list(IMAGENET_SELECT_TEMPLATES)
    if ensemble == "openai":
        return imagenet_openai_templates()
    raise UnknownNameError(f"unknown template ensemble {ensemble!r} (expected 'select' or 'openai')")
