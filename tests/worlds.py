"""Tiny on-disk worlds shared by the tests that run the engine: a folder dataset and a tiny open_clip config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 60, 220)}


def make_folder_dataset(root: Path, train: int = 6, test: int = 3, size: int = 16, seed: int = 0) -> Path:
    """FOLDER/{train,test}/<class>/*.png: small noisy squares in the class colour."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("test", test)):
        for name, colour in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = np.clip(np.array(colour) + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def tiny_world(base: Path, **images: int) -> dict[str, Path]:
    """A folder dataset under ``base/images`` (``make_folder_dataset``'s sizes) and a tiny ViT config file."""
    from visprompt.models.tiny import tiny_config

    arch = base / "tiny-vit.json"
    arch.write_text(json.dumps(tiny_config("vit")))
    return {"data": make_folder_dataset(base / "images", **images), "arch": arch, "base": base}
