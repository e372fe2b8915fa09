"""Images given as queries: a file on this machine, or bytes (an upload).

They are decoded with the same guards as indexed images: by content, with a pixel limit,
upright, as RGB, and JPEGs at a reduced scale when the model looks at small pictures anyway.
"""

from __future__ import annotations

import io
import os

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import MediaError, QueryError
from .media.images import decode_image, register_plugins, to_rgb

__all__ = ["MAX_QUERY_PIXELS", "load_query_image"]

#: The indexer's default limit: a bigger query image is refused rather than decoded.
MAX_QUERY_PIXELS = 178_956_970


def load_query_image(
    source: str | os.PathLike[str] | bytes,
    *,
    draft_size: int | None = None,
    max_pixels: int = MAX_QUERY_PIXELS,
) -> Image.Image:
    """An upright RGB image from a path (``str``/``PathLike``) or from encoded ``bytes``.

    Raises :class:`~xsearch.errors.QueryError` with a message naming the problem.
    """
    if isinstance(source, bytes):
        return _from_bytes(source, draft_size=draft_size, max_pixels=max_pixels)
    path = os.fsencode(source)
    if not os.path.isfile(path):
        raise QueryError(f"The query image {os.fsdecode(path)} does not exist or is not a file.")
    try:
        return decode_image(path, max_pixels=max_pixels, draft_size=draft_size).image
    except MediaError as exc:
        raise QueryError(f"The query image cannot be used: {exc}") from exc


def _from_bytes(data: bytes, *, draft_size: int | None, max_pixels: int) -> Image.Image:
    register_plugins()
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            if width * height > max_pixels:
                raise QueryError(
                    f"The query image has {width}×{height} pixels, over the limit of "
                    f"{max_pixels:,}; send a smaller image."
                )
            if draft_size and im.format == "JPEG":
                im.draft("RGB", (draft_size, draft_size))
            im.load()
            return to_rgb(ImageOps.exif_transpose(im) or im)
    except UnidentifiedImageError as exc:
        raise QueryError("The query image is not in a format xsearch can read.") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise QueryError(f"The query image cannot be decoded: {exc}") from exc
