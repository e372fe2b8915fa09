"""Thumbnails of indexed files for the web gallery, cached under ``<store>/thumbs/``.

A cached thumbnail is named by the file's id, modification time, the size and (for videos)
the time of the frame, so a changed file never shows a stale picture. The folder is a
cache: deleting it is always safe.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

from .errors import MediaError
from .imagequery import MAX_QUERY_PIXELS
from .media.images import decode_image
from .media.video import video_thumbnail
from .store.records import HitRow

__all__ = ["THUMBS_DIR", "make_thumbnail", "thumbnail"]

THUMBS_DIR = "thumbs"
_MIN_SIZE, _MAX_SIZE = 32, 1024
# The thumbnail of a video without a requested time shows this far into it.
_VIDEO_POSTER_SHARE = 0.1


def thumbnail(store_dir: Path, media: HitRow, *, size: int = 320, t: float | None = None) -> bytes:
    """A JPEG of ``media`` at most ``size`` pixels on its long side; videos at ``t`` seconds.

    Raises :class:`~xsearch.errors.MediaError` when the file can no longer be read.
    """
    if not os.path.isfile(media.path):
        raise MediaError(media.display_path, "missing", "the file is no longer there; index again")
    size = max(_MIN_SIZE, min(_MAX_SIZE, size))
    at = _frame_time(media, t)
    frame = f"-{round(at * 10)}" if at is not None else ""
    cached = store_dir / THUMBS_DIR / f"{media.media_id}-{media.mtime_ns}-{size}{frame}.jpg"
    try:
        return cached.read_bytes()
    except OSError:
        pass
    data = make_thumbnail(media.path, media.media_type, size=size, t=at)
    _write_atomically(cached, data)
    return data


def _frame_time(media: HitRow, t: float | None) -> float | None:
    if media.media_type != "video":
        return None
    duration = media.duration or 0.0
    at = duration * _VIDEO_POSTER_SHARE if t is None else t
    # Tenths of a second are as fine as a thumbnail needs, and keep the cache small.
    return round(max(0.0, min(at, max(duration - 0.05, 0.0))), 1)


def make_thumbnail(path: bytes, media_type: str, *, size: int, t: float | None = None) -> bytes:
    """A fresh (uncached) JPEG thumbnail of the file at ``path``."""
    if media_type == "video":
        return video_thumbnail(path, t or 0.0, size=size)
    # Indexing applied the same pixel limit, so an indexed file passes it.
    image = decode_image(path, max_pixels=MAX_QUERY_PIXELS, draft_size=size).image
    image.thumbnail((size, size))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def _write_atomically(target: Path, data: bytes) -> None:
    """Best effort: a read-only store still serves thumbnails, just without caching them."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
