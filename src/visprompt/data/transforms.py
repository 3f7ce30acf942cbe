"""Image transforms of the field's protocol (CoOp's defaults for CLIP).

Training: ``RandomResizedCrop(size, scale=(0.08, 1))`` + horizontal flip; evaluation: resize the shorter side to
``size`` + centre crop. Both bicubic, both convert to RGB first and normalise with the backbone's mean and std
(CLIP's by default).
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image
from torchvision import transforms as T

__all__ = ["CLIP_MEAN", "CLIP_STD", "build_transform"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ToRGB:
    """Convert a PIL image to RGB (palette, greyscale, RGBA and CMYK files occur in every benchmark)."""

    def __call__(self, image: Image.Image) -> Image.Image:
        if image.mode == "RGB":
            return image
        from visprompt.data.imagemodes import to_rgb  # 16-bit, palette and alpha images kept true

        return to_rgb(image)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def build_transform(
    image_size: int,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
    train: bool = False,
) -> T.Compose:
    """The training (augmenting) or evaluation transform, PIL image -> float tensor (3, size, size)."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    bicubic = T.InterpolationMode.BICUBIC
    if train:
        geometry = [T.RandomResizedCrop(image_size, scale=(0.08, 1.0), interpolation=bicubic), T.RandomHorizontalFlip()]
    else:
        geometry = [T.Resize(image_size, interpolation=bicubic), T.CenterCrop(image_size)]
    return T.Compose([ToRGB(), *geometry, T.ToTensor(), T.Normalize(mean=tuple(mean), std=tuple(std))])
