"""The training data: a pre-rendered pool of pictures, their captions and augmentation.

The pool is rendered once, in worker processes, by ``xsearch.synth.render_picture``
(``split="train"``); each training step pairs every picked picture with a random caption of
one of its classes (:class:`CaptionBank`) and augments the pixels lightly (:func:`augment`).
"""

from __future__ import annotations

import multiprocessing
from typing import Any

import numpy as np
import torch
from PIL import Image

from xsearch import synth

from .recipe import MEAN, NUM_THREADS, STD, Recipe

# Sizes the pool is rendered at before the bicubic resize to the model's resolution,
# so that training sees the same downsampling as a 224-pixel photo at search time.
RENDER_SIZES = (64, 96, 128, 224)
RENDER_SIZE_PROBS = (0.2, 0.3, 0.3, 0.2)


def _render_chunk(
    args: tuple[np.random.SeedSequence, int, int, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Render ``count`` train pictures, resized to ``image_size``, with multi-hot labels."""
    seed_seq, count, image_size, two_object_prob = args
    rng = np.random.default_rng(seed_seq)
    keys = [cls.key for cls in synth.CLASSES]
    images = np.empty((count, image_size, image_size, 3), dtype=np.uint8)
    labels = np.zeros((count, len(keys)), dtype=bool)
    for i in range(count):
        size = int(rng.choice(RENDER_SIZES, p=RENDER_SIZE_PROBS))
        picture, present = synth.render_picture(
            rng, synth.CLASSES, size, split="train", two_object_prob=two_object_prob
        )
        if size != image_size:
            picture = picture.resize((image_size, image_size), Image.Resampling.BICUBIC)
        images[i] = np.asarray(picture)
        labels[i, [keys.index(key) for key in present]] = True
    return images, labels


def render_pool(recipe: Recipe, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-render the training pool as (N, 3, H, W) uint8 pictures and (N, C) bool labels.

    Chunks have their own seeds, so the pool does not depend on the worker count.
    """
    chunk = 500
    counts = [min(chunk, recipe.pool_size - start) for start in range(0, recipe.pool_size, chunk)]
    seeds = np.random.SeedSequence(recipe.seed).spawn(len(counts))
    jobs = [(s, c, image_size, recipe.two_object_prob) for s, c in zip(seeds, counts, strict=True)]
    with multiprocessing.get_context("fork").Pool(NUM_THREADS) as pool:
        parts = pool.map(_render_chunk, jobs)
    images = torch.from_numpy(np.concatenate([p[0] for p in parts])).permute(0, 3, 1, 2)
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return images.contiguous(), labels


class CaptionBank:
    """Every caption of every class, tokenized once, with per-class samplers."""

    def __init__(self, tokenizer: Any, plain_name_prob: float) -> None:
        self.plain_name_prob = plain_name_prob
        texts: list[str] = []
        # index[(class, language)] = (index of plain name, indices of all captions)
        self.index: dict[tuple[int, str], tuple[int, np.ndarray]] = {}
        for c, cls in enumerate(synth.CLASSES):
            for lang in synth.LANGUAGES:
                caps = synth.captions(cls, lang)
                first = len(texts)
                texts.extend(caps)
                self.index[(c, lang)] = (first, np.arange(first, len(texts)))
        self.texts = texts
        self.tokens: torch.Tensor = tokenizer(texts)
        ends = (self.tokens != 0).sum(dim=1)
        if int(ends.max()) >= self.tokens.shape[1]:
            raise SystemExit("a caption does not fit the context length; raise context_length")

    def sample(
        self, rng: np.random.Generator, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One caption per picture: a class it shows, a random language and template.

        Returns the token ids (B, context) and the caption classes (B,).
        """
        chosen = np.empty(len(labels), dtype=np.int64)
        classes = np.empty(len(labels), dtype=np.int64)
        for i, row in enumerate(labels.numpy()):
            present = np.flatnonzero(row)
            c = int(present[rng.integers(0, len(present))])
            lang = synth.LANGUAGES[int(rng.integers(0, len(synth.LANGUAGES)))]
            plain, every = self.index[(c, lang)]
            use_plain = rng.random() < self.plain_name_prob
            chosen[i] = plain if use_plain else int(every[rng.integers(0, len(every))])
            classes[i] = c
        return self.tokens[torch.from_numpy(chosen)], torch.from_numpy(classes)


def augment(batch: torch.Tensor, rng: np.random.Generator, max_shift: int) -> torch.Tensor:
    """Light augmentation of uint8 pictures, then normalisation with MEAN/STD.

    A random shift (edge pixels repeated) and a mild brightness/contrast change;
    colours are left alone because they tell many emoji apart.
    """
    n, _, h, w = batch.shape
    x = batch.float() / 255.0
    padded = torch.nn.functional.pad(x, (max_shift,) * 4, mode="replicate")
    offsets = rng.integers(0, 2 * max_shift + 1, size=(n, 2))
    x = torch.stack(
        [padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets.tolist())]
    )
    contrast = torch.from_numpy(rng.uniform(0.8, 1.2, size=(n, 1, 1, 1))).float()
    brightness = torch.from_numpy(rng.uniform(-0.08, 0.08, size=(n, 1, 1, 1))).float()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean + brightness).clamp(0, 1)
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
