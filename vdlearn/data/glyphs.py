"""The objects of the toy world: real handwritten digits and anti-aliased shapes.

Digits come from scikit-learn's bundled ``load_digits`` (1,797 real handwritten
digits, 8x8 pixels, 16 grey levels), upsampled to the sprite size. Shapes are drawn
analytically at 4x resolution and averaged down, so their edges are anti-aliased.
Every glyph is an alpha mask in [0, 1] of shape ``(S, S)``.

Taught in notebook 01_toy_video_world.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

#: Shapes that can move in videos.
SHAPES = ("circle", "square", "triangle", "cross")
#: Shapes that exist only in the high-quality *image* regime (VideoCrafter2's JDB situation).
IMAGE_ONLY_SHAPES = ("star",)


@functools.lru_cache(maxsize=1)
def _digit_bank() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0  # (1797, 8, 8) in [0, 1]
    return images, digits.target.astype(np.int64)


def digit_glyph_count() -> dict[int, int]:
    """How many handwritten samples each digit has (about 180 each)."""
    _, targets = _digit_bank()
    return {d: int((targets == d).sum()) for d in range(10)}


@functools.lru_cache(maxsize=8)
def digit_glyphs(size: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """All handwritten digits at ``size`` x ``size``.

    Returns ``(bank, by_digit)``: ``bank`` is ``(1797, size, size)`` alpha masks, and
    ``by_digit[d]`` holds the bank indices of digit ``d``.
    """
    images, targets = _digit_bank()
    x = torch.from_numpy(images)[:, None]  # (n, 1, 8, 8)
    x = F.pad(x, (1, 1, 1, 1))  # a little margin so strokes never touch the sprite border
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)[:, 0]  # (n, s, s)
    x = (x * 1.6 - 0.15).clamp(0, 1)  # firmer strokes: the 16 grey levels are soft
    by_digit = [torch.from_numpy(np.flatnonzero(targets == d)) for d in range(10)]
    return x.contiguous(), by_digit


def _shape_mask(name: str, n: int) -> np.ndarray:
    """Boolean mask of a shape on an ``n x n`` grid, coordinates in [-1, 1]."""
    c = (np.arange(n) + 0.5) / n * 2 - 1
    y, x = np.meshgrid(c, c, indexing="ij")  # y grows downward
    if name == "circle":
        return x**2 + y**2 <= 0.8**2
    if name == "square":
        return (np.abs(x) <= 0.68) & (np.abs(y) <= 0.68)
    if name == "triangle":  # pointing up
        return (y <= 0.7) & (y >= -0.8 + 1.75 * np.abs(x))
    if name == "cross":  # a plus sign
        return ((np.abs(x) <= 0.26) & (np.abs(y) <= 0.85)) | ((np.abs(y) <= 0.26) & (np.abs(x) <= 0.85))
    if name == "star":  # five points
        r = np.hypot(x, y)
        a = np.arctan2(x, -y)  # angle from "up"
        k = 5
        sector = np.mod(a, 2 * math.pi / k) - math.pi / k  # angle within a point's sector
        outer, inner = 0.9, 0.38
        # radius of the star outline at angle a: straight edges between outer and inner vertices
        t = np.abs(sector) / (math.pi / k)
        rim = 1.0 / ((1 - t) / outer + t / inner)
        return r <= rim
    raise ValueError(f"Unknown shape {name!r}; known shapes: {SHAPES + IMAGE_ONLY_SHAPES}")


@functools.lru_cache(maxsize=32)
def shape_glyph(name: str, size: int) -> torch.Tensor:
    """An anti-aliased shape as a ``(size, size)`` alpha mask."""
    hi = _shape_mask(name, size * 4).astype(np.float32)
    x = torch.from_numpy(hi)[None, None]
    return F.avg_pool2d(x, 4)[0, 0].contiguous()
