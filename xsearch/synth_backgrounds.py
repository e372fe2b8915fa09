"""The backgrounds of the generated emoji pictures, one family of drawers per split.

``xsearch.synth`` paints every picture's background with one of these before it places the
glyphs. The ``"train"`` families (solid colours, linear gradients, pixel noise, random
shapes) draw in independent random colours; the ``"heldout"`` families (radial gradients,
stripes, checkerboards, smooth clouds) draw only from themed palettes that training never
samples, so a held-out evaluation measures recognition of the objects rather than memory
of the backgrounds. Each drawer takes the random generator and the side in pixels, and its
picture depends only on the generator's state.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["BACKGROUNDS"]

_RGB = tuple[int, int, int]
_Background = Callable[[np.random.Generator, int], Image.Image]


def _random_color(rng: np.random.Generator) -> _RGB:
    r, g, b = rng.integers(0, 256, size=3)
    return int(r), int(g), int(b)


def _from_array(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _blend(a: _RGB, b: _RGB, t: np.ndarray) -> np.ndarray:
    """Per-pixel mix of two colours; ``t`` in [0, 1] has shape (H, W)."""
    t3 = t[..., None]
    mixed: np.ndarray = np.asarray(a, np.float32) * (1 - t3) + np.asarray(b, np.float32) * t3
    return mixed


def _solid(rng: np.random.Generator, size: int) -> Image.Image:
    return Image.new("RGB", (size, size), _random_color(rng))


def _linear_gradient(rng: np.random.Generator, size: int) -> Image.Image:
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    t = xs * np.cos(angle) + ys * np.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    return _from_array(_blend(_random_color(rng), _random_color(rng), t))


def _pixel_noise(rng: np.random.Generator, size: int) -> Image.Image:
    """Colour noise around a base colour, per pixel or in square blocks."""
    base = np.asarray(_random_color(rng), dtype=np.float32)
    block = int(rng.choice([1, 1, 2, 4, 8]))
    cells = -(-size // block)
    noise = rng.normal(0, rng.uniform(10, 60), size=(cells, cells, 3))
    noise = noise.repeat(block, axis=0).repeat(block, axis=1)[:size, :size]
    return _from_array(base + noise)


def _random_shapes(rng: np.random.Generator, size: int) -> Image.Image:
    """A few large or many small rectangles, ellipses and lines, as clutter."""
    image = _solid(rng, size)
    draw = ImageDraw.Draw(image)
    small = rng.random() < 0.5
    count, extent = (
        (int(rng.integers(15, 40)), size // 6) if small else (int(rng.integers(3, 12)), size)
    )
    for _ in range(count):
        x, y = (int(v) for v in rng.integers(-size // 8, size, 2))
        w, h = (int(v) for v in rng.integers(2, extent + 2, 2))
        shape = (x, y, x + w, y + h)
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.rectangle(shape, fill=_random_color(rng))
        elif kind == 1:
            draw.ellipse(shape, fill=_random_color(rng))
        else:
            width = int(rng.integers(1, size // 16 + 2))
            draw.line(shape, fill=_random_color(rng), width=width)
    return image


# Held-out palettes: themed colour sets, never sampled by the train split.
_HELDOUT_PALETTES: tuple[tuple[_RGB, ...], ...] = (
    ((244, 222, 203), (209, 169, 134), (122, 86, 60)),  # sepia
    ((12, 44, 84), (30, 110, 160), (150, 210, 230)),  # ocean
    ((30, 10, 40), (255, 0, 140), (0, 255, 200)),  # neon
    ((60, 80, 40), (120, 140, 70), (200, 190, 140)),  # moss
    ((250, 218, 221), (207, 232, 246), (232, 222, 248)),  # pastel
    ((40, 40, 40), (128, 128, 128), (220, 220, 220)),  # greys
)


def _palette_pair(rng: np.random.Generator) -> tuple[_RGB, _RGB]:
    palette = _HELDOUT_PALETTES[int(rng.integers(0, len(_HELDOUT_PALETTES)))]
    first, second = rng.choice(len(palette), size=2, replace=False)
    return palette[int(first)], palette[int(second)]


def _radial_gradient(rng: np.random.Generator, size: int) -> Image.Image:
    cx, cy = rng.uniform(0, size, 2)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    t = np.hypot(xs - cx, ys - cy) / (size * rng.uniform(0.6, 1.4))
    inner, outer = _palette_pair(rng)
    return _from_array(_blend(inner, outer, np.clip(t, 0, 1)))


def _stripes(rng: np.random.Generator, size: int) -> Image.Image:
    angle = rng.uniform(0, np.pi)
    period = size * rng.uniform(0.05, 0.25)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    t = ((xs * np.cos(angle) + ys * np.sin(angle)) // period) % 2
    first, second = _palette_pair(rng)
    return _from_array(_blend(first, second, t))


def _checkerboard(rng: np.random.Generator, size: int) -> Image.Image:
    cell = max(2, int(size * rng.uniform(0.06, 0.2)))
    ys, xs = np.mgrid[0:size, 0:size]
    t = (((xs // cell) + (ys // cell)) % 2).astype(np.float32)
    first, second = _palette_pair(rng)
    return _from_array(_blend(first, second, t))


def _clouds(rng: np.random.Generator, size: int) -> Image.Image:
    coarse = rng.uniform(0, 255, size=(int(rng.integers(3, 8)),) * 2).astype(np.uint8)
    smooth = Image.fromarray(coarse, "L").resize((size, size), Image.Resampling.BICUBIC)
    smooth = smooth.filter(ImageFilter.GaussianBlur(size / 32))
    t = np.asarray(smooth, dtype=np.float32) / 255.0
    first, second = _palette_pair(rng)
    return _from_array(_blend(first, second, t))


BACKGROUNDS: dict[str, tuple[_Background, ...]] = {
    "train": (_solid, _linear_gradient, _pixel_noise, _random_shapes),
    "heldout": (_radial_gradient, _stripes, _checkerboard, _clouds),
}
