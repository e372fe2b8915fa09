"""Search results: what ``Engine.search`` returns and ``query --json`` prints."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .tags import Tag

__all__ = ["SearchHit", "Segment", "results_document"]


@dataclass(frozen=True)
class Segment:
    """A stretch of a video that matches: [start, end] seconds, best frame at ``best``."""

    start: float
    end: float
    best: float
    score: float

    def to_json(self) -> dict[str, float]:
        return {
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "best": round(self.best, 3),
            "score": round(self.score, 4),
        }


@dataclass(frozen=True)
class SearchHit:
    """One ranked file. Videos carry their matching segments, best first."""

    # The file's id in the store (stable while the file is indexed).
    id: int
    path: str
    # The exact OS bytes of the path (names that are not UTF-8 keep them).
    path_bytes: bytes
    score: float
    media_type: str
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    captured_at: float | None = None
    mtime: float | None = None
    partial: bool = False
    segments: tuple[Segment, ...] = field(default=())
    # For frame-level results: the time of this single frame.
    t: float | None = None
    # Ids of near-duplicates folded into this hit (bursts, copies), when collapsing.
    duplicates: tuple[int, ...] = ()
    # Rank among keyword matches on path words and EXIF text (hybrid search), 1 = best.
    keyword_rank: int | None = None
    # The file's own zero-shot tags (not its segments'), both languages, best first.
    tags: tuple[Tag, ...] = ()

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": self.id,
            "path": self.path,
            "score": round(self.score, 4),
            "media_type": self.media_type,
            "width": self.width,
            "height": self.height,
            "captured_at": self.captured_at,
            "mtime": self.mtime,
        }
        if self.partial:
            doc["partial"] = True
        if self.media_type == "video":
            doc["duration"] = self.duration
            doc["segments"] = [s.to_json() for s in self.segments]
            if self.t is not None:
                doc["t"] = round(self.t, 3)
        if self.duplicates:
            doc["duplicates"] = len(self.duplicates)
            doc["duplicate_ids"] = list(self.duplicates)
        if self.keyword_rank is not None:
            doc["keyword_rank"] = self.keyword_rank
        if self.tags:
            doc["tags"] = [t.to_json() for t in self.tags]
        return doc


def results_document(query: str, hits: Sequence[SearchHit]) -> dict[str, Any]:
    """What ``query --json`` prints and ``GET /api/search`` returns."""
    return {"query": query, "results": [h.to_json() for h in hits]}
