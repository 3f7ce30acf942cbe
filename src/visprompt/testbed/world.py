"""The procedural world of the offline testbed: scene attributes, seeded scene sampling and captions.

A scene is one main object (a shape with a colour, a fill pattern, a size, a position, a small rotation and an
optional mirror) in front of a background, with clutter (thin lines) and distractors (small objects) that
captions never mention. :func:`sample_scenes` draws a batch of N scenes as parallel numpy arrays
(:class:`Scenes`); :func:`captions` writes one caption per scene that names a random subset of the main
object's attributes in varied phrasings. Each attribute is named with its own probability
(:data:`MENTION_PROB`): colour in most captions, the others in only 30-50% of them, which is what makes the
downstream tasks built on those concepts neither trivial nor hopeless for zero-shot transfer (see the model card,
``src/visprompt/testbed/assets/MODEL_CARD.md``).

Everything is a pure function of a ``numpy.random.Generator``: the same seed gives the same scenes and captions.
Rendering lives in :mod:`visprompt.testbed.render`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.12, 0.12),
    "orange": (0.98, 0.55, 0.08),
    "yellow": (0.97, 0.90, 0.15),
    "green": (0.15, 0.70, 0.20),
    "cyan": (0.15, 0.85, 0.90),
    "blue": (0.12, 0.25, 0.90),
    "purple": (0.55, 0.18, 0.75),
    "pink": (0.98, 0.52, 0.75),
    "white": (0.97, 0.97, 0.97),
    "black": (0.06, 0.06, 0.06),
}
SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross", "hexagon", "crescent", "heart", "arrow")
PATTERNS = ("solid", "striped", "dotted", "checkered", "outlined", "gradient", "wavy", "ringed")
SIZES = ("small", "medium", "large")
SIZE_RADIUS_PX = ((8.0, 9.0), (10.0, 11.0), (12.0, 13.0))  # radius range in pixels of a 32 px image
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
POSITION_STEP = 7.0  # pixels between neighbouring position centres (32 px image)
BACKGROUNDS = ("sky", "grass", "sand", "water", "bricks", "wood", "night", "snow", "tiles", "carpet")
PLAIN = "plain"  # a solid random colour; pretraining only, captioned as "a plain background"

# Probability that a caption names each attribute (pretraining). Shape, pattern, size, position and background
# are deliberately under-captioned (30-50%).
MENTION_PROB: dict[str, float] = {
    "colour": 0.75,
    "shape": 0.5,
    "pattern": 0.4,
    "size": 0.35,
    "position": 0.3,
    "background": 0.35,
}

_NOUNS = ("object", "thing", "item")  # what a caption calls an object whose shape it does not name
_PREFIXES = ("", "a photo of ", "an image of ", "a picture of ", "there is ", "this is ", "a rendering of ")
_PATTERN_AFTER = {  # phrasings that follow the noun instead of preceding it
    "solid": "in a solid colour",
    "striped": "with stripes",
    "dotted": "with dots",
    "checkered": "with a checkered pattern",
    "outlined": "drawn as an outline",
    "gradient": "with a gradient",
    "wavy": "with wavy lines",
    "ringed": "with rings",
}
_SIZE_SYNONYMS = {"small": ("small", "tiny"), "medium": ("medium", "medium sized"), "large": ("large", "big")}
_POSITION_PHRASES = {
    "top left": ("in the top left", "at the top left", "in the top left corner"),
    "top": ("at the top", "in the top middle"),
    "top right": ("in the top right", "at the top right", "in the top right corner"),
    "left": ("on the left", "at the left side"),
    "center": ("in the center", "in the middle", "at the center"),
    "right": ("on the right", "at the right side"),
    "bottom left": ("in the bottom left", "at the bottom left", "in the bottom left corner"),
    "bottom": ("at the bottom", "in the bottom middle"),
    "bottom right": ("in the bottom right", "at the bottom right", "in the bottom right corner"),
}
_BACKGROUND_PHRASES = ("on {}", "on a {} background", "in front of {}", "with {} behind it", "against {}")


@dataclass(frozen=True)
class Scenes:
    """N scenes as parallel arrays (index = scene). Categorical fields index the tables above."""

    shape: np.ndarray  # (N,) int, index into SHAPES
    colour: np.ndarray  # (N,) int, index into COLOURS
    pattern: np.ndarray  # (N,) int, index into PATTERNS
    size: np.ndarray  # (N,) int, index into SIZES
    position: np.ndarray  # (N,) int, index into POSITIONS
    background: np.ndarray  # (N,) int, index into BACKGROUNDS; len(BACKGROUNDS) means PLAIN
    rgb: np.ndarray  # (N, 3) float, jittered object colour in [0, 1]
    radius: np.ndarray  # (N,) float, object radius in pixels
    centre: np.ndarray  # (N, 2) float, object centre (x, y) in pixels
    angle: np.ndarray  # (N,) float, rotation in radians
    mirror: np.ndarray  # (N,) bool, mirror the object left-right before rotating
    seed: np.ndarray  # (N,) int, per-scene seed for textures, clutter and corruption

    def __len__(self) -> int:
        return len(self.shape)

    def take(self, idx: np.ndarray) -> Scenes:
        """The scenes at ``idx`` (an index or boolean array)."""
        return Scenes(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})


def sample_scenes(
    rng: np.random.Generator,
    n: int,
    *,
    image_size: int = 32,
    max_angle_deg: float = 30.0,
    plain_prob: float = 0.1,
    hard_negative_frac: float = 0.0,
    fixed: dict[str, int | np.ndarray] | None = None,
) -> Scenes:
    """Draw ``n`` scenes uniformly over the attributes.

    Args:
        rng: the generator every draw comes from.
        n: number of scenes.
        image_size: side of the rendered image in pixels (sizes and positions scale with it from 32 px).
        max_angle_deg: rotations are uniform in [-max_angle_deg, max_angle_deg].
        plain_prob: probability of a plain single-colour background instead of a textured one.
        hard_negative_frac: fraction of scenes (the last ones) whose colours are drawn from only two colours,
            so that a contrastive batch must tell them apart by shape, pattern, size or position.
        fixed: attribute name -> value (or (N,) array) overriding the draw, e.g. ``{"background": 3}``.
    """
    scale = image_size / 32.0
    fixed = fixed or {}

    def draw(name: str, k: int) -> np.ndarray:
        values = rng.integers(0, k, n)
        return np.broadcast_to(np.asarray(fixed[name]), (n,)).astype(np.int64) if name in fixed else values

    shape = draw("shape", len(SHAPES))
    colour = draw("colour", len(COLOURS))
    n_hard = round(hard_negative_frac * n)
    if n_hard and "colour" not in fixed:
        pair = rng.choice(len(COLOURS), 2, replace=False)
        colour[n - n_hard :] = pair[rng.integers(0, 2, n_hard)]
    pattern = draw("pattern", len(PATTERNS))
    size = draw("size", len(SIZES))
    position = draw("position", len(POSITIONS))
    background = draw("background", len(BACKGROUNDS))
    if "background" not in fixed:
        background = np.where(rng.random(n) < plain_prob, len(BACKGROUNDS), background)

    base = np.array(list(COLOURS.values()), dtype=np.float32)[colour]  # (N, 3)
    rgb = np.clip(base + rng.uniform(-0.08, 0.08, (n, 3)), 0.0, 1.0).astype(np.float32)
    lo, hi = np.array(SIZE_RADIUS_PX, dtype=np.float32)[size].T  # (N,), (N,)
    radius = rng.uniform(lo, hi).astype(np.float32) * scale
    grid = np.stack([position % 3 - 1, position // 3 - 1], axis=1).astype(np.float32)  # (N, 2) in {-1, 0, 1}
    centre = image_size / 2 + grid * POSITION_STEP * scale + rng.uniform(-1.5, 1.5, (n, 2)).astype(np.float32) * scale
    angle = np.deg2rad(rng.uniform(-max_angle_deg, max_angle_deg, n)).astype(np.float32)
    mirror = rng.random(n) < 0.5
    seed = rng.integers(0, 2**31 - 1, n)
    return Scenes(shape, colour, pattern, size, position, background, rgb, radius, centre, angle, mirror, seed)


def _article(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou" else "a"


def _caption(
    rng: np.random.Generator,
    shape: int,
    colour: int,
    pattern: int,
    size: int,
    position: int,
    background: int,
    mention_prob: dict[str, float],
) -> str:
    said = {k: rng.random() < p for k, p in mention_prob.items()}
    if not any(said.values()):  # never an empty description
        said["colour"] = True
    words = []
    if said["size"]:
        words.append(_SIZE_SYNONYMS[SIZES[size]][rng.integers(0, 2)])
    colour_name = list(COLOURS)[colour]
    pattern_name = PATTERNS[pattern]
    style = rng.integers(0, 3)  # 0: adjectives before the noun; 1: pattern after; 2: "that is <colour>"
    if said["colour"] and style != 2:
        words.append(colour_name)
    if said["pattern"] and style == 0:
        words.append(pattern_name)
    words.append(SHAPES[shape] if said["shape"] else _NOUNS[rng.integers(0, len(_NOUNS))])
    if said["pattern"] and style != 0:
        words.append(_PATTERN_AFTER[pattern_name])
    if said["colour"] and style == 2:
        words.append(f"that is {colour_name}")
    phrase = " ".join(words)
    text = _PREFIXES[rng.integers(0, len(_PREFIXES))] + f"{_article(phrase)} {phrase}"
    tail = []
    if said["position"]:
        options = _POSITION_PHRASES[POSITIONS[position]]
        tail.append(options[rng.integers(0, len(options))])
    if said["background"]:
        bg = PLAIN if background == len(BACKGROUNDS) else BACKGROUNDS[background]
        tail.append(_BACKGROUND_PHRASES[rng.integers(0, len(_BACKGROUND_PHRASES))].format(bg))
    if len(tail) == 2 and rng.random() < 0.5:
        tail.reverse()
    return " ".join([text, *tail]) + "."


def captions(rng: np.random.Generator, scenes: Scenes, mention_prob: dict[str, float] | None = None) -> list[str]:
    """One caption per scene naming a random subset of its main object's attributes."""
    prob = MENTION_PROB if mention_prob is None else mention_prob
    return [
        _caption(
            rng,
            *(int(getattr(scenes, k)[i]) for k in ("shape", "colour", "pattern", "size", "position", "background")),
            prob,
        )
        for i in range(len(scenes))
    ]


def world_words() -> list[str]:
    """Every phrase a caption, class name or task template can use (the vocabulary is built from these)."""
    words = [*COLOURS, *SHAPES, *PATTERNS, *_NOUNS, *_PREFIXES, PLAIN, *BACKGROUNDS, *POSITIONS]
    words += list(_PATTERN_AFTER.values()) + [w for v in _SIZE_SYNONYMS.values() for w in v]
    words += [w for v in _POSITION_PHRASES.values() for w in v]
    words += [p.format("background") for p in _BACKGROUND_PHRASES] + ["a", "an", "that is", "."]
    return words
