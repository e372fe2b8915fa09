"""From query vectors to ranked files: search, join metadata, group video frames."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import QueryError
from .hits import SearchHit, Segment
from .index.manager import IndexManager
from .store.repository import HitRow, Store

__all__ = ["SearchRequest", "run_search"]

MEDIA_TYPES = ("image", "video")


@dataclass(frozen=True, kw_only=True)
class SearchRequest:
    limit: int = 20
    media_type: str | None = None
    min_score: float | None = None
    # Return each matching video frame as its own hit instead of grouping by video.
    frames: bool = False
    # Frames whose score is within this of a video's best count as part of a segment.
    segment_margin: float = 0.05

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise QueryError(f"--limit must be at least 1, not {self.limit}.")
        if self.media_type is not None and self.media_type not in MEDIA_TYPES:
            raise QueryError(f"--type must be 'image' or 'video', not {self.media_type!r}.")


def run_search(
    store: Store, index: IndexManager, query: np.ndarray, request: SearchRequest
) -> list[SearchHit]:
    """Rank files for one L2-normalised query vector.

    Over-fetches from the index, doubling until ``limit`` files pass the filters or the
    whole index has been seen, so filters and video grouping never shorten the result.
    """
    total = len(index.sync())
    fetch = min(total, max(request.limit * 4, 64))
    while True:
        scores, ids = index.search(query.reshape(1, -1).astype(np.float32), fetch)
        rows = store.hit_rows([int(i) for i in ids[0] if i >= 0])
        scored = [
            (float(s), rows[int(i)])
            for s, i in zip(scores[0], ids[0], strict=True)
            if int(i) in rows
        ]
        hits = _rank(scored, request, store)
        if len(hits) >= request.limit or fetch >= total:
            return hits[: request.limit]
        fetch = min(total, fetch * 4)


def _passes(row: HitRow, score: float, request: SearchRequest) -> bool:
    if request.media_type is not None and row.media_type != request.media_type:
        return False
    return request.min_score is None or score >= request.min_score


def _rank(
    scored: list[tuple[float, HitRow]], request: SearchRequest, store: Store
) -> list[SearchHit]:
    """Hits in score order (``scored`` is best first); one per file unless frames are asked for."""
    kept = [(score, row) for score, row in scored if _passes(row, score, request)]
    if request.frames:
        return [_hit(row, score, (), frame=True) for score, row in kept]
    groups: dict[int, list[tuple[float, HitRow]]] = {}
    for score, row in kept:
        groups.setdefault(row.media_id, []).append((score, row))
    hits = []
    for group in groups.values():
        best_score, best = group[0]
        segments: tuple[Segment, ...] = ()
        if best.media_type == "video":
            segments = _segments(store.media_vectors(best.media_id), group, request.segment_margin)
        hits.append(_hit(best, best_score, segments, frame=False))
    return hits


def _hit(row: HitRow, score: float, segments: tuple[Segment, ...], *, frame: bool) -> SearchHit:
    return SearchHit(
        id=row.media_id,
        path=row.display_path,
        path_bytes=row.path,
        score=score,
        media_type=row.media_type,
        width=row.width,
        height=row.height,
        duration=row.duration,
        captured_at=row.captured_at,
        mtime=row.mtime_ns / 1e9,
        partial=row.status == "partial",
        segments=segments,
        t=row.t if frame else None,
    )


def _segments(
    timeline: Sequence[HitRow], matched: list[tuple[float, HitRow]], margin: float
) -> tuple[Segment, ...]:
    """Merge neighbouring matching frames of one video into time ranges.

    A frame is "matching" when it is among the fetched hits and scores within ``margin`` of
    the video's best frame; runs of such frames, adjacent on the video's own timeline, form
    one segment. Segments come back best first.
    """
    best_score = matched[0][0]
    good = {row.vector_id: score for score, row in matched if score >= best_score - margin}
    segments: list[Segment] = []
    run: list[tuple[float, HitRow]] = []
    for row in [*timeline, None]:
        if row is not None and row.vector_id in good:
            run.append((good[row.vector_id], row))
            continue
        if run:
            top_score, top = max(run, key=lambda p: p[0])
            segments.append(
                Segment(
                    start=run[0][1].t_start or 0.0,
                    end=run[-1][1].t_end or run[-1][1].t_start or 0.0,
                    best=top.t or 0.0,
                    score=top_score,
                )
            )
            run = []
    segments.sort(key=lambda s: -s.score)
    return tuple(segments)
