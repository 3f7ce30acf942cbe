"""A torch Dataset over :class:`~visprompt.data.records.Sample` records and a seeded DataLoader.

Each item is a dict ``{"image": (3, H, W) float tensor, "label": observed label, "true_label": true label, or a
negative code when its class is unknown (:func:`~visprompt.data.records.true_label_code`), "index": position of the
sample in the sequence given to the dataset}`` (``samples[index].index`` is its index in the full split). An image
that cannot be opened or decoded raises :class:`~visprompt.errors.DataError` naming the file.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from visprompt.data.records import Sample, true_label_code
from visprompt.errors import DataError

__all__ = ["SampleDataset", "load_image", "make_loader", "read_image"]

logger = logging.getLogger(__name__)


def to_rgb(image: Image.Image, path: str = "image") -> Image.Image:
    """8-bit RGB of any mode PIL decodes, values kept true (see :mod:`visprompt.data.imagemodes`)."""
    from visprompt.data.imagemodes import to_rgb as convert

    return convert(image, path)


def read_image(path: str) -> Image.Image:
    """Open and decode an image fully (so a truncated file fails here, not inside a transform), as 8-bit RGB.

    16-bit and 32-bit integer images are scaled to 8 bits (PIL's own conversion clips them to white); palette
    and alpha images are composed over black; animated images give their first frame.
    """
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image, path)
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"image {path} is a directory, not an image file") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"image {path} cannot be read ({type(exc).__name__}: {exc})") from None


load_image = read_image  # alias


class SampleDataset(Dataset):
    """Images of ``samples`` through ``transform``, with their observed and true labels."""

    def __init__(self, samples: Sequence[Sample], transform: Callable[[Image.Image], Any] | None = None) -> None:
        self.samples = tuple(samples)
        self.transform = transform
        self.labels = torch.tensor([s.label for s in self.samples], dtype=torch.long)  # (N,)
        self.true_labels = torch.tensor(  # (N,), negative where the class is unknown (records.true_label_code)
            [true_label_code(s) for s in self.samples], dtype=torch.long
        )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = read_image(self.samples[i].path)
        if self.transform is not None:
            image = self.transform(image)
        return {"image": image, "label": self.labels[i], "true_label": self.true_labels[i], "index": i}


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32  # torch seeds each worker from the loader's generator
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    samples: Sequence[Sample],
    transform: Callable[[Image.Image], Any] | None,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over :class:`SampleDataset` whose sample order is fixed by ``seed``.

    With workers, each worker's torch/numpy/random state (hence the augmentation) is derived from ``seed`` too;
    with ``num_workers=0`` the transforms draw from torch's global generator, which the caller seeds.
    """
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        SampleDataset(samples, transform),
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        generator=generator,
        worker_init_fn=_seed_worker if num_workers > 0 else None,
        persistent_workers=False,
    )
