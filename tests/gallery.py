"""A small photo library with known contents, for search, server and browser tests.

Pictures come from ``xsearch.synth`` (emoji on held-out backgrounds), so the bundled
toy model recognises them: cats are cats. One folder has a meaningful name ("2023 京都")
that no picture shows, and one video shows a car for four seconds, then a cat.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xsearch import synth
from xsearch.encoders.profiles import get_profile

from .videos import write_video

TOY = "toy-bilingual"
KEYS = ("cat", "dog", "car", "tree", "apple", "fish", "house", "flower")
PER_CLASS = 6
# The cat part of the video starts here (seconds).
CAT_FROM = 4.0


def toy_available() -> bool:
    weights = get_profile(TOY).weights_file
    return weights is not None and weights.exists()


requires_toy = pytest.mark.skipif(
    not toy_available(), reason="the bundled toy model's weights are not built yet"
)


@dataclass(frozen=True)
class Gallery:
    root: Path
    # Every picture with the class keys it shows.
    labels: dict[Path, tuple[str, ...]]
    kyoto: tuple[Path, ...]
    video: Path | None

    def of_class(self, key: str) -> set[Path]:
        return {p for p, keys in self.labels.items() if key in keys}


def _picture(seed: int, key: str, size: int = 96) -> Image.Image:
    rng = np.random.default_rng(seed)
    return synth.render_scene(rng, [synth.class_by_key(key)], size, split="heldout")


def build_gallery(root: Path, *, video: bool = True) -> Gallery:
    classes = [synth.class_by_key(k) for k in KEYS]
    written = synth.generate_folder(
        root / "pictures",
        PER_CLASS * len(KEYS),
        seed=11,
        split="heldout",
        size=96,
        classes=classes,
        two_object_prob=0.0,
    )
    labels = {path: tuple(keys) for path, keys in written}
    kyoto_dir = root / "trips" / "2023 京都"
    kyoto_dir.mkdir(parents=True)
    kyoto = []
    for i in range(2):
        path = kyoto_dir / f"IMG_{i:04d}.jpg"
        _picture(500 + i, "tree").save(path, quality=90)
        labels[path] = ("tree",)
        kyoto.append(path)
    clip = None
    if video:
        clip = root / "videos" / "holiday.mp4"
        clip.parent.mkdir()
        car, cat = _picture(900, "car", 128), _picture(901, "cat", 128)
        write_video(
            clip,
            lambda i, t: car if t < CAT_FROM else cat,
            list(range(0, 80)),
            time_base=Fraction(1, 10),
            rate=10,
        )
    return Gallery(root, labels, tuple(kyoto), clip)
