"""Vectorised rendering of testbed scenes (:class:`~visprompt.testbed.world.Scenes`) to uint8 RGB images.

A batch of N scenes is drawn at ``S`` times the output resolution on a pixel grid X, Y (in output pixels) and
averaged down (anti-aliasing). Layers, back to front: the background (one of the named textures, a plain colour
or, under a domain shift, an unseen texture blended in), clutter lines, distractors (small solid objects), the
main object (shape mask in object coordinates u, v, filled with its pattern), then corruption (tint, contrast,
blur, pixel noise). Shape and pattern functions take object coordinates

    u = R(-angle) (x - centre) / radius   (mirrored when ``mirror``), v pointing up,

so the unit disc is the object's extent and patterns rotate with the object. Each scene owns a random stream
(its ``seed``), so an image does not depend on the batch it was rendered in. Per-scene draws are done in a short
Python loop; everything else is numpy over the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from visprompt.testbed.world import BACKGROUNDS, PATTERNS, SHAPES, Scenes

_K = 40  # per-scene uniform scalars drawn from the scene's own stream


@dataclass(frozen=True)
class Style:
    """How far a rendering departs from clean renders (ranges are sampled per image)."""

    noise_prob: float = 0.0  # probability of additive Gaussian pixel noise
    noise_std: tuple[float, float] = (0.0, 0.0)  # its standard deviation range (pixel values in [0, 1])
    blur_prob: float = 0.0  # probability of a [1, 2, 1] blur (applied once or twice)
    tint: float = 0.0  # strength of a random per-channel colour gain
    contrast: tuple[float, float] = (1.0, 1.0)  # contrast factor range around the image mean
    lines: tuple[int, int] = (0, 0)  # number of clutter lines (inclusive range, at most 3)
    distractors: tuple[int, int] = (0, 0)  # number of small distractor objects (inclusive range, at most 3)
    texture_prob: float = 0.0  # probability of blending an unseen texture into the background
    texture_alpha: tuple[float, float] = (0.0, 0.0)  # its blending weight range
    hue: tuple[float, float] = (0.0, 0.0)  # range (degrees) of a rotation of every colour about the grey axis
    grey_prob: float = 0.0  # probability of turning the image to greyscale (a style change)
    gain: tuple[float, float, float] = (1.0, 1.0, 1.0)  # fixed per-channel gain (a white-balance / light cast)


CLEAN = Style()
PRETRAIN = Style(
    noise_prob=0.3,
    noise_std=(0.01, 0.05),
    blur_prob=0.2,
    tint=0.1,
    contrast=(0.85, 1.1),
    lines=(0, 2),
    distractors=(0, 2),
)


# ---------------------------------------------------------------------------------------------- shapes


def _polygon(u: np.ndarray, v: np.ndarray, n: int, radius: float, phase: float) -> np.ndarray:
    """Regular n-gon of circumradius ``radius`` with a vertex at angle ``phase``."""
    rho, theta = np.hypot(u, v), np.arctan2(v, u)
    sector = 2 * np.pi / n
    local = np.mod(theta - phase, sector) - sector / 2  # angle from the nearest edge's normal
    return rho * np.cos(local) <= radius * np.cos(np.pi / n)


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    rho, theta = np.hypot(u, v), np.arctan2(v, u)
    t = np.mod(theta - np.pi / 2, 2 * np.pi / 5) / (2 * np.pi / 5)  # 0 at a tip, 0.5 in a valley
    return rho <= 0.42 + 0.58 * np.abs(2 * t - 1)


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    x, y = u * 1.2, v * 1.2 + 0.15
    return (x * x + y * y - 1) ** 3 - x * x * y**3 <= 0


def _arrow(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    shaft = (u >= -0.95) & (u <= 0.15) & (np.abs(v) <= 0.24)
    head = (u >= 0.1) & (u <= 0.95) & (np.abs(v) <= 0.8 * (0.95 - u) / 0.85)
    return shaft | head


SHAPE_FNS = {
    "circle": lambda u, v: u * u + v * v <= 0.9,
    "square": lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.76,
    "triangle": lambda u, v: _polygon(u, v + 0.2, 3, 1.1, np.pi / 2),
    "diamond": lambda u, v: np.abs(u) / 0.62 + np.abs(v) <= 1.0,
    "star": _star,
    "cross": lambda u, v: ((np.abs(u) < 0.3) & (np.abs(v) < 0.92)) | ((np.abs(v) < 0.3) & (np.abs(u) < 0.92)),
    "hexagon": lambda u, v: _polygon(u, v, 6, 0.95, 0.0),
    "crescent": lambda u, v: (u * u + v * v <= 0.9) & ((u - 0.42) ** 2 + v * v >= 0.55),
    "heart": _heart,
    "arrow": _arrow,
}
assert tuple(SHAPE_FNS) == SHAPES


# -------------------------------------------------------------------------------------------- patterns


def _pattern_mix(name: str, u: np.ndarray, v: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Weight of the second colour (n, h, w) in [0, 1] for a fill pattern; ``phase`` (n, 1, 1) shifts it."""
    if name in ("solid", "outlined"):
        return np.zeros_like(u)
    if name == "striped":
        return (np.sin(np.pi * u / 0.3 + phase) > 0).astype(np.float32)
    if name == "dotted":
        a, b = np.mod(u * 1.7 + phase, 1.0) - 0.5, np.mod(v * 1.7 + phase, 1.0) - 0.5
        return (a * a + b * b < 0.09).astype(np.float32)
    if name == "checkered":
        return (np.mod(np.floor(u / 0.42 + phase) + np.floor(v / 0.42 + phase), 2) > 0).astype(np.float32)
    if name == "gradient":
        return np.clip((u + 0.9) / 1.8, 0.0, 1.0)
    if name == "wavy":
        return (np.sin(np.pi * (v + 0.25 * np.sin(4 * u)) / 0.3 + phase) > 0).astype(np.float32)
    if name == "ringed":
        return (np.sin(np.pi * np.hypot(u, v) / 0.25 + phase) > 0).astype(np.float32)
    raise KeyError(name)


def _second_colour(rgb: np.ndarray) -> np.ndarray:
    """A contrasting colour for patterns: a dark shade of bright colours, a light one of dark colours."""
    bright = rgb @ np.array([0.3, 0.59, 0.11], dtype=np.float32) > 0.45  # (n,)
    return np.where(bright[:, None], rgb * 0.25, rgb * 0.3 + 0.7).astype(np.float32)  # (n, 3)


# ----------------------------------------------------------------------------------------- backgrounds


def _colour(base: tuple[float, float, float], jitter: np.ndarray, amount: float = 0.1) -> np.ndarray:
    """(n, 1, 1, 3) colour ``base`` plus a per-scene jitter of +-amount."""
    return (np.asarray(base, dtype=np.float32) + (jitter - 0.5) * 2 * amount)[:, None, None, :]


def _background(name: str, X: np.ndarray, Y: np.ndarray, p: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Background texture (n, h, w, 3); X, Y (1, h, w) pixel coordinates, p (n, K) uniforms, noise (n, h, w)."""
    jit, ph = p[:, 0:3], (p[:, 3] * 2 * np.pi)[:, None, None]  # (n, 3), (n, 1, 1)
    f = (0.8 + 0.4 * p[:, 4])[:, None, None]  # texture frequency factor (n, 1, 1)
    size = X.shape[-1] + 0.0
    if name == "sky":
        t = (Y / size)[..., None]  # (1, h, w, 1)
        return _colour((0.35, 0.6, 0.95), jit) * (1 - t) + _colour((0.85, 0.92, 1.0), jit, 0.05) * t
    if name == "grass":
        tex = 0.5 * np.sin(X * 2.2 * f + ph + 0.8 * np.sin(Y * 0.5)) + (noise - 0.5)
        return _colour((0.22, 0.55, 0.15), jit) * (1 + 0.3 * tex)[..., None]
    if name == "sand":
        tex = 0.08 * np.sin(Y * 0.7 * f + 0.8 * np.sin(X * 0.35 + ph)) + 0.12 * (noise - 0.5)
        return _colour((0.86, 0.76, 0.52), jit, 0.06) * (1 + tex)[..., None]
    if name == "water":
        tex = 0.25 * np.sin(Y * 1.3 * f + 1.6 * np.sin(X * 0.35 + ph))
        return _colour((0.12, 0.38, 0.72), jit) * (1 + tex)[..., None]
    if name == "bricks":
        yy = Y * f + p[:, 5, None, None] * 5  # (n, h, w)
        row = np.floor(yy / 5)
        mortar = (np.mod(yy, 5) < 1) | (np.mod(X * f + row * 5 + p[:, 6, None, None] * 10, 10) < 1)
        brick = _colour((0.68, 0.28, 0.2), jit) * (1 + 0.15 * (noise - 0.5))[..., None]
        return np.where(mortar[..., None], _colour((0.8, 0.78, 0.72), jit, 0.05), brick)
    if name == "wood":
        tex = 0.18 * np.sin(Y * 1.1 * f + 2.5 * np.sin(X * 0.12 + ph)) + 0.05 * (noise - 0.5)
        return _colour((0.55, 0.36, 0.2), jit, 0.06) * (1 + tex)[..., None]
    if name == "night":
        stars = (noise > 0.975)[..., None]
        return np.where(stars, np.float32(0.95), _colour((0.05, 0.06, 0.17), jit, 0.04))
    if name == "snow":
        speckle = (noise > 0.82)[..., None] * np.array([0.16, 0.12, 0.04], dtype=np.float32)
        return _colour((0.93, 0.95, 0.98), jit, 0.03) - speckle
    if name == "tiles":
        xx, yy = X * f + p[:, 5, None, None] * 8, Y * f + p[:, 6, None, None] * 8
        grout = (np.mod(xx, 8) < 0.8) | (np.mod(yy, 8) < 0.8)
        odd = (np.mod(np.floor(xx / 8) + np.floor(yy / 8), 2) > 0)[..., None]
        tile = np.where(odd, _colour((0.6, 0.63, 0.68), jit, 0.05), _colour((0.88, 0.87, 0.84), jit, 0.05))
        return np.where(grout[..., None], np.float32(0.35), tile)
    if name == "carpet":
        lattice = (np.sin(X * 1.1 * f + ph) * np.sin(Y * 1.1 * f) > 0.45)[..., None]
        return np.where(lattice, _colour((0.85, 0.65, 0.25), jit, 0.08), _colour((0.5, 0.1, 0.2), jit))
    if name == "plain":
        return np.broadcast_to(p[:, None, None, 0:3], (len(p), *X.shape[1:], 3)).copy()
    raise KeyError(name)


def _unseen_texture(X: np.ndarray, Y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """A texture no pretraining image has (random colours; blobs, diagonal stripes or rings): (n, h, w, 3)."""
    c1, c2 = p[:, None, None, 10:13], p[:, None, None, 13:16]  # (n, 1, 1, 3)
    kind = np.floor(p[:, 16] * 3)[:, None, None]
    a, b, ph = (p[:, 17:20] * [0.5, 0.5, 2 * np.pi]).T[..., None, None]  # each (n, 1, 1)
    blobs = 0.5 + 0.5 * np.sin(X * (a + 0.1) + Y * (b + 0.1) + ph) * np.sin(X * (b + 0.15) - Y * (a + 0.05))
    stripes = (np.sin((X + Y) * (0.5 + a) + ph) > 0).astype(np.float32)
    cx, cy = p[:, 20, None, None] * X.shape[-1], p[:, 21, None, None] * X.shape[-1]
    rings = (np.sin(np.hypot(X - cx, Y - cy) * (0.6 + b) + ph) > 0).astype(np.float32)
    t = np.where(kind == 0, blobs, np.where(kind == 1, stripes, rings))[..., None]  # (n, h, w, 1)
    return c1 * (1 - t) + c2 * t


# ----------------------------------------------------------------------------------------------- render


def _object_coords(X, Y, centre, radius, angle, mirror):
    """Object coordinates (u, v), each (n, h, w), of the pixel grid for n objects."""
    dx, dy = X - centre[:, 0, None, None], Y - centre[:, 1, None, None]  # (n, h, w)
    c, s, r = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None], radius[:, None, None]
    u = (dx * c + dy * s) / r
    v = (dx * s - dy * c) / r  # image y points down; v points up
    return np.where(mirror[:, None, None], -u, u), v


def _paint_shapes(img, X, Y, shape, centre, radius, angle, mirror, fill_fn) -> None:
    """Paint objects into ``img`` (n, h, w, 3) in place, one vectorised pass per shape present."""
    for k, name in enumerate(SHAPES):
        idx = np.flatnonzero(shape == k)
        if idx.size == 0:
            continue
        u, v = _object_coords(X, Y, centre[idx], radius[idx], angle[idx], mirror[idx])
        mask, colour = fill_fn(idx, u, v, SHAPE_FNS[name](u, v))
        img[idx] = np.where(mask[..., None], colour, img[idx])


def _blur(img: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1] / 4 blur with edge padding of (n, h, w, 3) images."""
    pad = np.pad(img, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    rows = (pad[:, :-2] + 2 * pad[:, 1:-1] + pad[:, 2:]) / 4  # (n, h, w + 2, 3)
    return (rows[:, :, :-2] + 2 * rows[:, :, 1:-1] + rows[:, :, 2:]) / 4


def render(scenes: Scenes, style: Style = CLEAN, *, image_size: int = 32, supersample: int = 2) -> np.ndarray:
    """Render scenes to uint8 images of shape (N, image_size, image_size, 3)."""
    n, hs = len(scenes), image_size * supersample
    streams = [np.random.default_rng(int(s)) for s in scenes.seed]
    p = np.stack([g.random(_K, dtype=np.float32) for g in streams])  # (N, K) per-scene uniforms
    noise = np.stack([g.random((hs, hs), dtype=np.float32) for g in streams])  # (N, hs, hs)
    extra = np.stack([g.random((6, 8), dtype=np.float32) for g in streams])  # (N, 6, 8): lines, distractors
    gauss = None
    if style.noise_prob > 0:
        gauss = np.stack([g.standard_normal((image_size, image_size, 3), dtype=np.float32) for g in streams])
    grid = ((np.arange(hs, dtype=np.float32) + 0.5) / supersample)[None]  # (1, hs) output pixel coordinates
    X, Y = grid[:, None, :], grid[:, :, None]  # (1, 1, hs), (1, hs, 1)
    X, Y = np.broadcast_to(X, (1, hs, hs)), np.broadcast_to(Y, (1, hs, hs))

    img = np.empty((n, hs, hs, 3), dtype=np.float32)
    for k, name in enumerate((*BACKGROUNDS, "plain")):
        idx = np.flatnonzero(scenes.background == k)
        if idx.size:
            img[idx] = _background(name, X, Y, p[idx], noise[idx])
    if style.texture_prob > 0:
        alpha = np.where(
            p[:, 22] < style.texture_prob,
            style.texture_alpha[0] + p[:, 23] * np.subtract(*style.texture_alpha[::-1]),
            0.0,
        )[:, None, None, None]  # (N, 1, 1, 1)
        img = img * (1 - alpha) + _unseen_texture(X, Y, p) * alpha

    # clutter lines: segments through a random point, thickness ~0.7 px, random colour
    n_lines = style.lines[0] + np.floor(p[:, 24] * (style.lines[1] - style.lines[0] + 1))
    for j in range(min(style.lines[1], 3)):
        g = extra[:, j]  # (N, 8)
        px, py = (g[:, 0] * image_size)[:, None, None], (g[:, 1] * image_size)[:, None, None]
        th = g[:, 2, None, None] * np.pi
        dist = np.abs((X - px) * np.sin(th) - (Y - py) * np.cos(th))
        along = np.abs((X - px) * np.cos(th) + (Y - py) * np.sin(th))
        on = (dist < 0.7) & (along < 4 + g[:, 3, None, None] * image_size / 2) & (j < n_lines)[:, None, None]
        img = np.where(on[..., None], g[:, None, None, 4:7], img)

    # distractors: small solid objects of random shape and colour, behind the main object
    n_dis = style.distractors[0] + np.floor(p[:, 25] * (style.distractors[1] - style.distractors[0] + 1))
    for j in range(min(style.distractors[1], 3)):
        g = extra[:, 3 + j]  # (N, 8)
        active = np.flatnonzero(j < n_dis)
        g = g[active]
        shape = np.floor(g[:, 0] * len(SHAPES)).astype(np.int64)
        centre = g[:, 1:3] * image_size
        radius = (2.5 + 2.0 * g[:, 3]) * image_size / 32
        sub = img[active]
        _paint_shapes(
            sub,
            X,
            Y,
            shape,
            centre,
            radius,
            g[:, 4] * 2 * np.pi,
            g[:, 5] < 0.5,
            lambda idx, u, v, m, g=g: (m, g[idx, None, None, 5:8]),  # colour from slots 5:8
        )
        img[active] = sub

    # main object
    rgb, rgb2 = scenes.rgb, _second_colour(scenes.rgb)
    pattern_names = np.array(PATTERNS)

    def fill(idx: np.ndarray, u: np.ndarray, v: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        colour = np.empty((*u.shape, 3), dtype=np.float32)
        for pat in np.unique(pattern_names[scenes.pattern[idx]]):
            sel = np.flatnonzero(pattern_names[scenes.pattern[idx]] == pat)
            ii = idx[sel]
            t = _pattern_mix(pat, u[sel], v[sel], (p[ii, 26] * 2 * np.pi)[:, None, None])[..., None]
            colour[sel] = rgb[ii, None, None] * (1 - t) + rgb2[ii, None, None] * t
            if pat == "outlined":  # hollow: keep a band inside the border
                k = scenes.shape[ii]
                inner = SHAPE_FNS[SHAPES[k[0]]](u[sel] / 0.62, v[sel] / 0.62)
                mask[sel] &= ~inner
        return mask, colour

    _paint_shapes(img, X, Y, scenes.shape, scenes.centre, scenes.radius, scenes.angle, scenes.mirror, fill)

    img = img.reshape(n, image_size, supersample, image_size, supersample, 3).mean(axis=(2, 4))  # (N, H, W, 3)
    return _corrupt(img, style, p, gauss)


def _hue_rotation(theta: np.ndarray) -> np.ndarray:
    """Rotation matrices (n, 3, 3) by ``theta`` (n,) radians about the grey axis (1, 1, 1) / sqrt(3) (Rodrigues)."""
    k = np.array([[0, -1, 1], [1, 0, -1], [-1, 1, 0]], dtype=np.float32) / np.sqrt(3)  # cross-product matrix
    c, s = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]  # (n, 1, 1)
    return (c * np.eye(3) + (1 - c) * np.full((3, 3), 1 / 3) + s * k).astype(np.float32)


def _corrupt(img: np.ndarray, style: Style, p: np.ndarray, gauss: np.ndarray | None) -> np.ndarray:
    """Hue, greyscale, tint, contrast, blur and noise (per-image draws from ``p``), then quantise to uint8."""
    if style.hue != (0.0, 0.0):
        theta = np.deg2rad(style.hue[0] + p[:, 36] * (style.hue[1] - style.hue[0]))  # (N,)
        img = np.einsum("nhwc,ndc->nhwd", img, _hue_rotation(theta))  # rotate every pixel's colour
    if style.gain != (1.0, 1.0, 1.0):
        img = img * np.asarray(style.gain, dtype=np.float32)
    if style.grey_prob > 0:
        grey = img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # (N, H, W)
        img = np.where((p[:, 37] < style.grey_prob)[:, None, None, None], grey[..., None], img)
    if style.tint > 0:
        img = img * (1 + (p[:, None, None, 27:30] - 0.5) * 2 * style.tint)
    if style.contrast != (1.0, 1.0):
        c = style.contrast[0] + p[:, 30] * (style.contrast[1] - style.contrast[0])
        mean = img.mean(axis=(1, 2, 3), keepdims=True)  # (N, 1, 1, 1)
        img = mean + (img - mean) * c[:, None, None, None]
    if style.blur_prob > 0:
        blurred = _blur(img)
        twice = _blur(blurred)
        level = np.where(p[:, 31] < style.blur_prob, 1 + (p[:, 32] < 0.5), 0)[:, None, None, None]
        img = np.where(level == 1, blurred, np.where(level == 2, twice, img))
    if style.noise_prob > 0:
        std = np.where(
            p[:, 33] < style.noise_prob, style.noise_std[0] + p[:, 34] * np.subtract(*style.noise_std[::-1]), 0.0
        )
        img = img + gauss * std[:, None, None, None]
    return (np.clip(img, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
