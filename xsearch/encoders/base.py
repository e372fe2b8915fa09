"""The encoder port: images and texts in, L2-normalised float32 vectors out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from PIL import Image

if TYPE_CHECKING:  # the port itself needs no torch; its adapters import it
    import torch

__all__ = ["Encoder", "Vectors", "l2_normalise"]

Vectors = npt.NDArray[np.float32]


@runtime_checkable
class Encoder(Protocol):
    """A CLIP-style pair of towers that map images and texts into one space.

    ``preprocess`` is pure and picklable, so decode workers can run it away from the model;
    ``encode_images`` takes a batch of preprocessed tensors stacked on dim 0.
    Both encode methods return L2-normalised float32 arrays of shape ``(n, dim)``.
    """

    @property
    def profile_name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def fingerprint(self) -> str:
        """Identifies architecture, weights and preprocessing; stored with the vectors."""
        ...

    @property
    def preprocess(self) -> Callable[[Image.Image], torch.Tensor]: ...

    def encode_images(self, pixels: torch.Tensor) -> Vectors: ...

    def encode_texts(self, texts: Sequence[str]) -> Vectors: ...


def l2_normalise(x: npt.NDArray[np.floating]) -> Vectors:
    """Rows scaled to unit length; all-zero rows stay zero instead of becoming NaN."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    out: Vectors = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    return out
