"""Search filters: media type, folder, capture time and score, and how dates are read.

A file's *time* is its EXIF capture time when it has one, else its modification time.
``after`` is inclusive and ``before`` exclusive, so ``after=2023, before=2024`` is the
year 2023 exactly. Dates without a time zone are local time, like EXIF times.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import QueryError

__all__ = ["MEDIA_TYPES", "SearchFilters", "make_filters", "parse_when", "under_roots"]

MEDIA_TYPES = ("image", "video")

_PARTIAL_DATE = re.compile(r"(\d{4})(?:-(\d{1,2}))?(?:-(\d{1,2}))?")


@dataclass(frozen=True, kw_only=True)
class SearchFilters:
    """Which files may appear in the results. Every field defaults to "no restriction"."""

    # "image" or "video".
    media_type: str | None = None
    # Absolute folder paths (OS bytes): only files at or below one of them.
    under: tuple[bytes, ...] = ()
    # POSIX timestamps: the file's time must be >= after and < before.
    after: float | None = None
    before: float | None = None
    # Cosine similarity below which a result is dropped.
    min_score: float | None = None
    # Tag concept keys (``tag:beach``): a file must have every one of ``tags`` (on the file
    # or a segment) and none of ``without_tags``. Checked by the store, not by ``matches``.
    tags: tuple[str, ...] = ()
    without_tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.media_type is not None and self.media_type not in MEDIA_TYPES:
            raise QueryError(f"--type must be 'image' or 'video', not {self.media_type!r}.")
        if self.after is not None and self.before is not None and self.after >= self.before:
            raise QueryError("--after must be earlier than --before; nothing can match.")

    @property
    def restricts_files(self) -> bool:
        """True when some files are excluded whatever their score."""
        return bool(
            self.media_type
            or self.under
            or self.after is not None
            or self.before is not None
            or self.tags
            or self.without_tags
        )

    def matches(
        self, *, media_type: str, path: bytes, captured_at: float | None, mtime_ns: int
    ) -> bool:
        """Whether a file passes the file filters (the score is checked separately)."""
        if self.media_type is not None and media_type != self.media_type:
            return False
        if self.under and not any(_is_below(path, root) for root in self.under):
            return False
        when = captured_at if captured_at is not None else mtime_ns / 1e9
        if self.after is not None and when < self.after:
            return False
        return not (self.before is not None and when >= self.before)


def _is_below(path: bytes, root: bytes) -> bool:
    base = root.rstrip(b"/") or b"/"
    if base == b"/":
        return path.startswith(b"/")
    return path == base or path.startswith(base + b"/")


def under_roots(folders: Sequence[str | bytes | os.PathLike[str]]) -> tuple[bytes, ...]:
    """Folders as the store spells paths: absolute, as bytes (symlinks are not resolved)."""
    return tuple(os.fsencode(os.path.abspath(os.fsdecode(f))) for f in folders)


def parse_when(value: str, *, option: str = "--after") -> float:
    """A date or time as a POSIX timestamp: ``2023``, ``2023-05``, ``2023-05-17``,
    ``2023-05-17T14:30`` (ISO 8601, with or without a zone), or a number of seconds."""
    text = value.strip()
    m = _PARTIAL_DATE.fullmatch(text)
    try:
        if m:
            year, month, day = int(m.group(1)), int(m.group(2) or 1), int(m.group(3) or 1)
            return dt.datetime(year, month, day).timestamp()
        if re.fullmatch(r"\d+(\.\d+)?", text) and len(text) > 8:
            return float(text)
        return dt.datetime.fromisoformat(text.replace(" ", "T", 1)).timestamp()
    except ValueError:
        pass
    raise QueryError(
        f"{option} {value!r} is not a date. Use 2023, 2023-05, 2023-05-17 or "
        "2023-05-17T14:30 (local time unless a zone is given)."
    )


def make_filters(
    *,
    media_type: str | None = None,
    under: Sequence[str | bytes | os.PathLike[str]] = (),
    after: str | None = None,
    before: str | None = None,
    min_score: float | None = None,
) -> SearchFilters:
    """Filters from the options as people type them (shared by the CLI and the server)."""
    return SearchFilters(
        media_type=media_type or None,
        under=under_roots([u for u in under if u]),
        after=parse_when(after, option="--after") if after else None,
        before=parse_when(before, option="--before") if before else None,
        min_score=min_score,
    )
