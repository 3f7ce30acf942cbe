"""Image modes: what visprompt does with each mode PIL decodes, so that no image turns silently into another.

PIL's ``convert("RGB")`` clips 16- and 32-bit integer images to 0..255: a 16-bit PNG comes out pure white. Here
integer images are scaled from their bit depth to 8 bits, float images (mode ``F``) from 0..1, palette and
alpha images are composed over black (their transparent parts read as background), CMYK and YCbCr go through
PIL's conversion. Animated images (GIF, APNG, multi-page TIFF) give their first frame; ``data verify`` lists them.

Mode ``I`` (32-bit integers) does not say what range its values use. A PNG (16 bits at most) or a TIFF that
records 16 bits per sample is 16-bit data; otherwise values in 256..65535 are read as 16-bit data (8-bit data
cannot reach them), all zeros are black, and values all in 1..255 are refused
(:class:`~visprompt.errors.DataError` naming the file): 8-bit data would read as black if taken for 16 bits, a dark
16-bit image 257 times too bright if taken for 8, and nothing in the file tells the two apart. Negative values or
values above 65535 have no known range and are refused too.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from visprompt.errors import DataError

__all__ = ["UNUSUAL_MODES", "describe_unusual", "to_rgb"]

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
UNUSUAL_MODES = frozenset({*_SIXTEEN_BIT, "I", "F", "CMYK", "P", "PA", "LA", "RGBA", "La", "RGBa", "1", "YCbCr",
                           "LAB", "HSV"})  # fmt: skip


def _declared_bits(image: Image.Image) -> int | None:
    """Bits per sample the file records (PNG: 16, its deepest greyscale; PGM/PPM: 16, since one opens as a 32-bit
    mode only when its header's maxval exceeds 255; TIFF: its BitsPerSample), else None."""
    if image.format in ("PNG", "PPM"):
        return 16
    if image.format == "TIFF":
        bits = getattr(image, "tag_v2", {}).get(258)  # BitsPerSample
        return int(bits[0] if isinstance(bits, tuple) else bits) if bits else None
    return None


def _integer_to_l(image: Image.Image) -> Image.Image:
    arr = np.asarray(image)
    low, high = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if image.mode not in _SIXTEEN_BIT:  # mode I: the range is the file's bit depth, or read from the values
        if low < 0 or high > 65535:
            raise ValueError(f"32-bit integer image with values {low}..{high}: no known range")
        if _declared_bits(image) != 16 and 0 < high <= 255:
            raise ValueError(
                f"32-bit integer image with values {low}..{high}, all below 256: 8-bit data or a dark 16-bit "
                "image, the file does not say (save it as 8-bit L or 16-bit I;16)"
            )
    scale = 65535.0  # 16-bit data (PNG 16-bit greyscale opens as "I;16", or "I" in older Pillow)
    return Image.fromarray(np.clip(np.rint(arr.astype(np.float64) * (255.0 / scale)), 0, 255).astype(np.uint8), "L")


def to_rgb(image: Image.Image, path: str = "image") -> Image.Image:
    """8-bit RGB of ``image`` (its current frame); a mode without a known value range is a :class:`DataError`."""
    mode = image.mode
    if mode == "RGB":
        return image.copy()
    try:
        if mode in _SIXTEEN_BIT or mode == "I":
            return _integer_to_l(image).convert("RGB")
        if mode == "F":
            arr = np.asarray(image, dtype=np.float64)
            if not np.isfinite(arr).all() or arr.min(initial=0) < 0 or arr.max(initial=0) > 1:
                raise ValueError("float image with values outside 0..1 (or NaN): no known range")
            return Image.fromarray(np.rint(arr * 255).astype(np.uint8), "L").convert("RGB")
        if mode in ("P", "PA") or "A" in mode or "a" in mode:
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return image.convert("RGB")
    except ValueError as exc:
        raise DataError(f"image {path} (mode {mode}): {exc}") from None


def describe_unusual(image: Image.Image) -> str | None:
    """A short note when ``image`` is not plain 8-bit L/RGB (bit depth, colour model, palette, frames), else None."""
    notes = []
    if image.mode in UNUSUAL_MODES:
        notes.append(f"mode {image.mode}")
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        notes.append(f"{frames} frames (the first is used)")
    return ", ".join(notes) or None
