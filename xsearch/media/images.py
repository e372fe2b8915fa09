"""Decoding still images safely: content sniffing, size guards, orientation, any mode to RGB."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..errors import MediaError

__all__ = ["DecodedImage", "decode_image", "display", "formats_for", "register_plugins", "to_rgb"]

# A header that claims more pixels per byte of file than any real codec achieves is a lie
# (a truncated or crafted file); refusing it keeps memory bounded whatever the header says.
_MAX_PIXELS_PER_BYTE = 2_000
_EXIF_DATETIME_ORIGINAL = 0x9003
_EXIF_DATETIME = 0x0132
_EXIF_IFD = 0x8769
# Pillow formats with a signature of several bytes: content decides, whatever the name.
# (JPEG's opener also returns MPO, the multi-picture JPEG of 3D and some phone cameras.)
_SIGNED_FORMATS = (
    "JPEG",
    "PNG",
    "GIF",
    "BMP",
    "TIFF",
    "WEBP",
    "HEIF",
    "AVIF",
    "JPEG2000",
    "PSD",
    "QOI",
    "DDS",
)
# Formats whose signature is weak or missing, tried only for files named after them.
_FORMATS_BY_EXTENSION = {
    b".ico": ("ICO",),
    b".tga": ("TGA",),
    b".pcx": ("PCX",),
    **dict.fromkeys([b".ppm", b".pgm", b".pbm", b".pnm"], ("PPM",)),
    **dict.fromkeys([b".sgi", b".rgb", b".rgba", b".bw"], ("SGI",)),
}
# A truncated picture of which less than this share of rows decoded is broken, not partial.
MIN_DECODED_FRACTION = 0.1
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
        # Every plugin now, not on demand: ``Image.open(formats=...)`` expects them loaded.
        Image.init()
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
    try:
        return _decode(path, max_pixels, draft_size)
    except ValueError as exc:
        if not _text_over_limit(exc):
            raise
    # A PNG's text metadata (zTXt/iTXt) decompresses past Pillow's limit, a guard against
    # text bombs. The pixels do not need that text: decode again with it dropped.
    with _truncation_allowed():
        return _decode(path, max_pixels, draft_size)


def _decode(path: bytes, max_pixels: int, draft_size: int | None) -> DecodedImage:
    shown = display(path)
    try:
        size = os.stat(path).st_size
        im = Image.open(Path(os.fsdecode(path)), formats=formats_for(path))
    except PermissionError as exc:
        raise MediaError(shown, "unreadable", f"permission denied ({exc.strerror})") from exc
    except UnidentifiedImageError as exc:
        raise MediaError(shown, "unsupported", "not an image format xsearch can read") from exc
    except OSError as exc:
        # An errno is the disk's or the OS's; without one, Pillow is describing the bytes.
        reason = "unreadable" if exc.errno is not None else "broken"
        raise MediaError(shown, reason, str(exc)) from exc
    with im:
        width, height = im.size
        _check_size(shown, width, height, size, max_pixels)
        captured = _capture_time(im)
        fmt = im.format or "?"
        if draft_size and fmt == "JPEG":
            # JPEG can decode at 1/2, 1/4 or 1/8 scale directly: far faster for big photos.
            im.draft("RGB", (draft_size, draft_size))
        partial = _load(im, shown)
        if fmt in ("JPEG", "MPO") and not _jpeg_has_scan_data(path):
            # libjpeg "decodes" a JPEG without entropy-coded data into noise, with a warning
            # Pillow does not pass on.
            raise MediaError(shown, "broken", "no image data after the JPEG headers")
        if partial:
            _check_decoded_enough(shown, to_rgb(im))
        rgb = to_rgb(ImageOps.exif_transpose(im) or im)
    return DecodedImage(rgb, width, height, captured, partial, fmt)


def formats_for(path: bytes) -> tuple[str, ...]:
    """The Pillow formats that may open ``path``.

    Formats with a signature of several bytes are tried whatever the name (a ``.jpg`` that
    is really a PNG is indexed); formats with a weak signature or none (TGA, PPM, SGI, ICO,
    PCX) only for their own extensions, since otherwise any damaged file can pass for one
    and "decode" into noise. Formats xsearch does not index at all (EPS, which would run
    Ghostscript, WMF, FITS, ...) are never tried.
    """
    ext = os.path.splitext(path)[1].lower()
    return _SIGNED_FORMATS + _FORMATS_BY_EXTENSION.get(ext, ())


def _text_over_limit(exc: ValueError) -> bool:
    text = str(exc)
    return "MAX_TEXT_CHUNK" in text or "MAX_TEXT_MEMORY" in text


@contextlib.contextmanager
def _truncation_allowed() -> Iterator[None]:
    """Let Pillow fill in what a truncated file lacks (and drop oversized PNG text).

    Decoders run in worker processes or a single thread, so the module flag is not raced.
    """
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _jpeg_has_scan_data(path: bytes) -> bool:
    """Whether the first scan of a JPEG has entropy-coded bytes after its header.

    Walks the marker segments by their lengths (reading a few bytes per segment, not the
    file); a file that ends inside a segment is truncated, which decoding already reports.
    """
    with open(path, "rb") as fh:
        if fh.read(2) != b"\xff\xd8":
            return True
        while True:
            marker = fh.read(2)
            while marker[:1] == b"\xff" and marker[1:] == b"\xff":  # fill bytes
                marker = marker[1:] + fh.read(1)
            if len(marker) < 2 or marker[0] != 0xFF:
                return True
            if marker[1] == 0xD9:  # EOI before any scan
                return False
            if marker[1] == 0x01 or 0xD0 <= marker[1] <= 0xD7:  # no length
                continue
            length = fh.read(2)
            if len(length) < 2:
                return True
            fh.seek(int.from_bytes(length, "big") - 2, os.SEEK_CUR)
            if marker[1] == 0xDA:
                data = fh.read(2)
                return len(data) == 2 and data != b"\xff\xd9"


def _check_decoded_enough(shown: str, rgb: Image.Image) -> None:
    """Refuse a truncated file of which too little could be decoded to stand for it.

    A truncated load fills the missing rows with one colour. A picture whose decoded part
    is a sliver (a DDS or SGI whose header promises far more than the file holds, an MPO
    with no image data) would otherwise be stored as if it were fine, with a vector of
    mostly fill colour that matches nothing anyone searches for.
    """
    fraction = _decoded_fraction(np.asarray(rgb))
    if fraction < MIN_DECODED_FRACTION:
        raise MediaError(
            shown,
            "broken",
            f"truncated: only {fraction:.0%} of the picture could be decoded "
            f"(at least {MIN_DECODED_FRACTION:.0%} is needed)",
        )


def _decoded_fraction(pixels: np.ndarray) -> float:
    """The share of rows above the uniform fill that closes a truncated picture."""
    bottom = pixels[-1]
    if pixels.size == 0 or not (bottom == bottom[0]).all():
        return 1.0
    filled = (pixels == bottom[0]).all(axis=(1, 2))
    decoded = np.flatnonzero(~filled)
    return 0.0 if decoded.size == 0 else float(decoded[-1] + 1) / pixels.shape[0]


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
        if isinstance(exc, ValueError) and _text_over_limit(exc):
            raise
        if "truncated" not in str(exc) and "broken data stream" not in str(exc):
            raise MediaError(shown, "broken", f"cannot decode: {exc}") from exc
    with _truncation_allowed():
        try:
            im.load()
        except Exception as exc:
            raise MediaError(shown, "broken", f"truncated and not decodable: {exc}") from exc
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
