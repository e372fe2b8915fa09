"""What the store holds and what is written to it, as plain values.

Kept apart from the SQL so that the query path (``reader.py``) needs neither SQLAlchemy nor
the write machinery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from ..encoders.base import Vectors

__all__ = [
    "DB_NAME",
    "FileState",
    "FrameVector",
    "HitRow",
    "MediaRecord",
    "StoreModel",
    "WriteBatch",
    "WriteResult",
]

DB_NAME = "xsearch.db"


@dataclass(frozen=True)
class StoreModel:
    """Which model built the store; vectors of another model must not be mixed in."""

    profile: str
    fingerprint: str
    dim: int


class FileState(NamedTuple):
    """What the store remembers of a file, enough to tell whether it changed.

    A named tuple: a re-index makes one per known file (1M of them in 0.3 s; the frozen
    dataclass it was took 2 s).
    """

    id: int
    size: int
    mtime_ns: int
    content_hash: str


@dataclass(frozen=True, kw_only=True)
class MediaRecord:
    """A file's metadata as the indexer writes it."""

    path: bytes
    display_path: str
    size: int
    mtime_ns: int
    content_hash: str
    media_type: str
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    fps: float | None = None
    captured_at: float | None = None
    status: str = "ok"
    note: str | None = None


@dataclass(frozen=True)
class FrameVector:
    """One embedding and the time it stands for (all None for a still image)."""

    vector: Vectors
    t: float | None = None
    t_start: float | None = None
    t_end: float | None = None


@dataclass(frozen=True)
class HitRow:
    """A vector joined with its file: everything a search result needs."""

    vector_id: int
    media_id: int
    path: bytes
    display_path: str
    media_type: str
    width: int | None
    height: int | None
    duration: float | None
    fps: float | None
    captured_at: float | None
    mtime_ns: int
    size: int
    status: str
    t: float | None
    t_start: float | None
    t_end: float | None


@dataclass
class WriteBatch:
    """Changes to apply in one transaction."""

    # New or re-embedded files with their vectors; an existing row of the same path is replaced.
    upserts: list[tuple[MediaRecord, list[FrameVector]]] = field(default_factory=list)
    # (media id, new path, new display path, size, mtime_ns): renamed files keep their vectors.
    moves: list[tuple[int, bytes, str, int, int]] = field(default_factory=list)
    # (media id, size, mtime_ns): content unchanged, only stat data moved on.
    touches: list[tuple[int, int, int]] = field(default_factory=list)
    # Files gone from disk.
    deletes: list[int] = field(default_factory=list)
    # (path, display path, size, mtime_ns, reason, detail)
    failures: list[tuple[bytes, str, int, int, str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.upserts or self.moves or self.touches or self.deletes or self.failures)


@dataclass
class WriteResult:
    """What a write did to the vectors, for the caller to mirror in the vector index."""

    added_ids: list[int] = field(default_factory=list)
    added_vectors: list[Vectors] = field(default_factory=list)
    removed_ids: list[int] = field(default_factory=list)
    generation: int = 0
