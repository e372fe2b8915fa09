"""Decoding still images safely: content sniffing, size guards, orientation, any mode to RGB."""

from __future__ import annotations

import datetime as dt
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..errors import MediaError

__all__ = ["DecodedImage", "decode_image", "display", "register_plugins", "to_rgb"]

# A header that claims more pixels per byte of file than any real codec achieves is a lie
# (a truncated or crafted file); refusing it keeps memory bounded whatever the header says.
_MAX_PIXELS_PER_BYTE = 2_000
_EXIF_DATETIME_ORIGINAL = 0x9003
_EXIF_DATETIME = 0x0132
_EXIF_IFD = 0x8769
_plugins_lock = threading.Lock()
_plugins_registered = False


def register_plugins() -> None:
    """Teach Pillow HEIC/HEIF (and AVIF, where Pillow lacks it) through pillow-heif, once."""
    global _plugins_registered
    with _plugins_lock:
        if _plugins_registered:
            return
        try:
            import pillow_heif

            pillow_heif.register_heif_opener()
            if "AVIF" not in Image.registered_extensions().values() and hasattr(
                pillow_heif, "register_avif_opener"
            ):
                pillow_heif.register_avif_opener()
        except ImportError:
            pass
        # xsearch does its own, clearer pixel-limit check before decoding.
        Image.MAX_IMAGE_PIXELS = None
        _plugins_registered = True


def display(path: bytes) -> str:
    """A printable form of an OS path; undecodable bytes become U+FFFD."""
    return path.decode("utf-8", errors="replace")


@dataclass
class DecodedImage:
    image: Image.Image
    width: int
    height: int
    captured_at: float | None
    partial: bool
    format: str


def decode_image(path: bytes, *, max_pixels: int, draft_size: int | None = None) -> DecodedImage:
    """Open ``path`` by its content (not its name) and return an upright RGB image.

    Raises :class:`MediaError` with reason ``unsupported``, ``too-large``, ``broken`` or
    ``unreadable``. A truncated file that Pillow can still decode in part comes back with
    ``partial=True``.
    """
    register_plugins()
    shown = display(path)
    try:
        size = os.stat(path).st_size
        im = Image.open(Path(os.fsdecode(path)))
    except PermissionError as exc:
        raise MediaError(shown, "unreadable", f"permission denied ({exc.strerror})") from exc
    except UnidentifiedImageError as exc:
        raise MediaError(shown, "unsupported", "not an image format xsearch can read") from exc
    except OSError as exc:
        raise MediaError(shown, "unreadable", str(exc)) from exc
    with im:
        width, height = im.size
        _check_size(shown, width, height, size, max_pixels)
        captured = _capture_time(im)
        fmt = im.format or "?"
        if draft_size and fmt == "JPEG":
            # JPEG can decode at 1/2, 1/4 or 1/8 scale directly: far faster for big photos.
            im.draft("RGB", (draft_size, draft_size))
        partial = _load(im, shown)
        rgb = to_rgb(ImageOps.exif_transpose(im) or im)
    return DecodedImage(rgb, width, height, captured, partial, fmt)


def _check_size(shown: str, width: int, height: int, file_size: int, max_pixels: int) -> None:
    pixels = width * height
    if pixels > max_pixels:
        raise MediaError(
            shown,
            "too-large",
            f"{width}×{height} = {pixels:,} pixels is over the limit of {max_pixels:,} "
            "(raise it with --max-pixels)",
        )
    if pixels > max(file_size, 1) * _MAX_PIXELS_PER_BYTE:
        raise MediaError(
            shown,
            "broken",
            f"header claims {width}×{height} pixels but the file has only {file_size} bytes",
        )


def _load(im: Image.Image, shown: str) -> bool:
    """Decode pixel data; returns True when only part of a truncated file could be decoded."""
    try:
        im.load()
        return False
    except (OSError, SyntaxError, ValueError) as exc:
        if "truncated" not in str(exc) and "broken data stream" not in str(exc):
            raise MediaError(shown, "broken", f"cannot decode: {exc}") from exc
    # Decoders run in worker processes or a single thread, so the module flag is not raced.
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        im.load()
    except Exception as exc:
        raise MediaError(shown, "broken", f"truncated and not decodable: {exc}") from exc
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    return True


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB; transparency is laid over white."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        grey = np.clip(arr / top * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if (im.mode == "P" and "transparency" in im.info) or im.mode in (
        "RGBA",
        "LA",
        "PA",
        "La",
        "RGBa",
    ):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return im.convert("RGB")


def _capture_time(im: Image.Image) -> float | None:
    """EXIF DateTimeOriginal (else DateTime) as a POSIX timestamp, read as local time."""
    try:
        exif = im.getexif()
        raw = exif.get_ifd(_EXIF_IFD).get(_EXIF_DATETIME_ORIGINAL) or exif.get(_EXIF_DATETIME)
    except Exception:  # malformed EXIF must never fail the image
        return None
    if not isinstance(raw, str):
        return None
    try:
        return dt.datetime.strptime(raw.strip("\x00 "), "%Y:%m:%d %H:%M:%S").timestamp()
    except ValueError:
        return None
