"""open_clip's evaluation transform in PIL and numpy, for encoders that run without torch.

It does what ``open_clip.image_transform(size, is_train=False, ...)`` does for square
inputs, step for step and with the same PIL calls (torchvision's transforms call PIL for PIL
images): resize, centre crop, convert to RGB, scale to [0, 1], normalise. A test checks
that both give the same array for many sizes and image modes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

__all__ = ["SUPPORTED_RESIZE_MODES", "ImagePreprocess"]

#: open_clip's "longest" mode pads with a fill colour; it is left to the torch encoder.
SUPPORTED_RESIZE_MODES = ("shortest", "squash")

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


@dataclass(frozen=True)
class ImagePreprocess:
    """Picture -> float32 array of shape (3, size, size), normalised like the model wants.

    Plain data, so decode worker processes can receive it by pickling.
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_mode: str = "shortest"
    interpolation: str = "bicubic"

    def __post_init__(self) -> None:
        if self.resize_mode not in SUPPORTED_RESIZE_MODES:
            raise ValueError(f"resize mode {self.resize_mode!r} is not supported without torch")
        if self.interpolation not in _RESAMPLE:
            raise ValueError(f"interpolation {self.interpolation!r} is not supported")

    def __call__(self, image: Image.Image) -> npt.NDArray[np.float32]:
        resample = _RESAMPLE[self.interpolation]
        if self.resize_mode == "squash":
            if image.size != (self.size, self.size):
                image = image.resize((self.size, self.size), resample)
        else:
            image = _centre_crop(_resize_shortest(image, self.size, resample), self.size)
        pixels = np.asarray(image.convert("RGB"))
        # A byte has 256 values: each channel's normalised values are looked up, one pass
        # instead of five over the picture, with the same float32 results.
        out: npt.NDArray[np.float32] = np.empty((3, *pixels.shape[:2]), dtype=np.float32)
        for channel in range(3):
            np.take(self._normalised[channel], pixels[..., channel], out=out[channel])
        return out

    @cached_property
    def _normalised(self) -> npt.NDArray[np.float32]:
        """(3, 256): every byte value normalised per channel, by the same float32 operations
        as torchvision's to_tensor and normalize, in order."""
        levels = np.arange(256, dtype=np.float32)[None, :] / np.float32(255)
        mean = np.asarray(self.mean, dtype=np.float32)[:, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None]
        table: npt.NDArray[np.float32] = (levels - mean) / std
        return table

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ImagePreprocess:
        return cls(
            size=int(doc["size"]),
            mean=tuple(float(x) for x in doc["mean"]),  # type: ignore[arg-type]
            std=tuple(float(x) for x in doc["std"]),  # type: ignore[arg-type]
            resize_mode=str(doc["resize_mode"]),
            interpolation=str(doc["interpolation"]),
        )


def _resize_shortest(image: Image.Image, size: int, resample: Image.Resampling) -> Image.Image:
    """The shorter side to ``size``, the longer one scaled and truncated (torchvision's rule)."""
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) == (w, h):
        return image
    return image.resize((new_w, new_h), resample)


def _centre_crop(image: Image.Image, size: int) -> Image.Image:
    """The middle ``size`` square; the image is at least that large after _resize_shortest."""
    w, h = image.size
    top = round((h - size) / 2.0)
    left = round((w - size) / 2.0)
    return image.crop((left, top, left + size, top + size))
