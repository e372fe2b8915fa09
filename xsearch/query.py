"""From a query vector to ranked files: search, filter, group video frames, fuse, collapse.

Filters never shorten the result: the index is over-fetched until ``limit`` files pass,
and when only a small share of the store can pass at all, those few vectors are scored
exactly instead (a selector), which is both faster and complete.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from .errors import QueryError
from .filters import MEDIA_TYPES, SearchFilters
from .hits import SearchHit, Segment
from .index.manager import IndexManager
from .store.reader import StoreReader
from .store.records import HitRow

__all__ = ["MEDIA_TYPES", "SearchRequest", "SubsetCache", "run_search"]

# Score the passing vectors exactly when they are at most this share of the store ...
_EXACT_SHARE = 0.05
# ... or at most this many; but never more than the ceiling: past it, reading their vectors
# from SQLite costs more than over-fetching the index (bench/sqlite_scale.py, 10M files).
_EXACT_MAX = 4096
_EXACT_CEILING = 50_000
# How many files of each ranking take part in reciprocal rank fusion.
_FUSION_DEPTH = 100

Scored = list[tuple[float, HitRow]]


@dataclass(frozen=True, kw_only=True)
class SearchRequest:
    limit: int = 20
    filters: SearchFilters = field(default_factory=SearchFilters)
    # Return each matching video frame as its own hit instead of grouping by video.
    frames: bool = False
    # Frames whose score is within this of a video's best count as part of a segment.
    segment_margin: float = 0.05
    # Fuse keyword matches (path words, EXIF text) with the vector ranking.
    hybrid: bool = False
    # The constant of reciprocal rank fusion: 1 / (rrf_k + rank); 60 is the usual choice.
    rrf_k: int = 60
    # Fold results whose vectors are at least this similar into one hit with a count.
    collapse: bool = False
    collapse_threshold: float = 0.95

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise QueryError(f"--limit must be at least 1, not {self.limit}.")
        if self.frames and (self.hybrid or self.collapse):
            raise QueryError(
                "--frames ranks single frames; it cannot be combined with "
                "--hybrid or --collapse, which rank whole files."
            )


@dataclass(frozen=True)
class _Ranked:
    hit: SearchHit
    # The vector of the hit's best frame (what collapsing compares).
    vector_id: int
    # A video's matching frames, best first. Its segments are drawn from them only once it
    # is among the results, since that reads the video's whole timeline.
    frames: Scored = field(default_factory=list)


@dataclass(frozen=True)
class _Subset:
    """The vectors that pass a file filter; ``matrix`` is None when too many pass to score
    them exactly (the index is over-fetched instead)."""

    ids: np.ndarray
    matrix: np.ndarray | None

    @property
    def nbytes(self) -> int:
        return self.ids.nbytes + (self.matrix.nbytes if self.matrix is not None else 0)


class SubsetCache:
    """The vectors of recently used file filters, valid while the store's generation holds.

    A server sees the same filters again and again ("videos only", one folder). Finding
    the vectors that pass costs a scan of the store; keeping them makes the next query
    with that filter as cheap as an unfiltered one. Thread-safe; bounded by ``max_bytes``.
    """

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._items: OrderedDict[Hashable, _Subset] = OrderedDict()

    def get(self, key: Hashable) -> _Subset | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: Hashable, subset: _Subset) -> None:
        with self._lock:
            self._items[key] = subset
            while sum(s.nbytes for s in self._items.values()) > self.max_bytes:
                self._items.popitem(last=False)


def _subset(
    store: StoreReader, filters: SearchFilters, total: int, cache: SubsetCache | None
) -> _Subset:
    key = (store.location, store.generation(), replace(filters, min_score=None))
    found = cache.get(key) if cache is not None else None
    if found is not None:
        return found
    few = int(min(max(total * _EXACT_SHARE, _EXACT_MAX), _EXACT_CEILING))
    # One more than ``few`` is enough to tell: the ids of many passing vectors are not kept.
    ids = store.matching_vector_ids(filters, limit=few + 1)
    matrix = None
    if len(ids) <= few:
        chunks = list(store.iter_vectors(ids.tolist()))
        ids = np.concatenate([c[0] for c in chunks]) if chunks else ids[:0]
        matrix = np.vstack([c[1] for c in chunks]) if chunks else np.zeros((0, 0), np.float32)
    else:
        ids = ids[:0]
    subset = _Subset(ids, matrix)
    if cache is not None:
        cache.put(key, subset)
    return subset


class _Candidates:
    """Vector ids best first: from the index, or by exact scoring of the few that pass."""

    def __init__(
        self,
        store: StoreReader,
        index: IndexManager,
        query: np.ndarray,
        filters: SearchFilters,
        cache: SubsetCache | None,
    ) -> None:
        self.store = store
        self.index = index
        self.query = query.reshape(1, -1).astype(np.float32)
        self.min_score = filters.min_score
        self.total = len(index.sync())
        self.exact: tuple[np.ndarray, np.ndarray] | None = None
        # Where the index is over-fetched, tag filters are checked on the store for each
        # batch of candidates: tags are not among the fields that ``SearchFilters.matches``
        # checks on each hit.
        self.tag_filters: SearchFilters | None = None
        if filters.restricts_files and self.total:
            subset = _subset(store, filters, self.total, cache)
            if subset.matrix is not None:
                self.exact = _rank_exactly(subset.ids, subset.matrix, self.query)
                self.total = len(subset.ids)
            elif filters.tags or filters.without_tags:
                self.tag_filters = filters

    def top(self, k: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """The best ``k`` (scores, ids), and whether nothing further could be found."""
        k = min(k, self.total)
        if self.exact is not None:
            scores, ids = self.exact[0][:k], self.exact[1][:k]
        else:
            found_scores, found_ids = self.index.search(self.query, k)
            scores = np.asarray(found_scores[0], dtype=np.float32)
            ids = np.asarray(found_ids[0], dtype=np.int64)
            keep = ids >= 0
            if self.tag_filters is not None:
                passing = self.store.with_passing_tags(ids[keep].tolist(), self.tag_filters)
                keep &= np.isin(ids, passing)
            scores, ids = scores[keep], ids[keep]
        done = k >= self.total or (
            self.min_score is not None and len(scores) > 0 and scores[-1] < self.min_score
        )
        return scores, ids, done


def _rank_exactly(
    ids: np.ndarray, matrix: np.ndarray, query: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    if not len(ids):
        return np.zeros(0, np.float32), ids
    scores = matrix @ query[0]
    order = np.lexsort((ids, -scores))
    return scores[order], ids[order]


def run_search(
    store: StoreReader,
    index: IndexManager,
    query: np.ndarray,
    request: SearchRequest,
    *,
    keywords: str = "",
    cache: SubsetCache | None = None,
) -> list[SearchHit]:
    """Rank files for one L2-normalised query vector (and, for hybrid search, its words)."""
    candidates = _Candidates(store, index, query, request.filters, cache)
    if candidates.total == 0:
        return []
    want = request.limit * (4 if request.collapse else 1)
    if request.hybrid:
        want = max(want, _FUSION_DEPTH)
    while True:
        ranked, done = _vector_ranking(store, candidates, request, want)
        if request.hybrid and keywords.strip():
            ranked = _fuse(store, query, ranked, keywords, request)
        if request.collapse:
            ranked = _collapse(store, ranked, request.collapse_threshold)
        if len(ranked) >= request.limit or done:
            return _with_segments(store, ranked[: request.limit], request)
        want *= 4


def _vector_ranking(
    store: StoreReader, candidates: _Candidates, request: SearchRequest, want: int
) -> tuple[list[_Ranked], bool]:
    """At least ``want`` hits that pass the filters, unless fewer exist; and whether all did."""
    fetch = max(want * 4, 64)
    while True:
        scores, ids, done = candidates.top(fetch)
        rows = store.hit_rows(ids.tolist())
        scored = [
            (float(s), rows[int(i)]) for s, i in zip(scores, ids, strict=True) if int(i) in rows
        ]
        ranked = _rank(scored, request, store)
        if len(ranked) >= want or done:
            return ranked, done
        fetch *= 4


def _passes(row: HitRow, score: float, filters: SearchFilters) -> bool:
    if filters.min_score is not None and score < filters.min_score:
        return False
    return filters.matches(
        media_type=row.media_type,
        path=row.path,
        captured_at=row.captured_at,
        mtime_ns=row.mtime_ns,
    )


def _rank(scored: Scored, request: SearchRequest, store: StoreReader) -> list[_Ranked]:
    """Hits in score order (``scored`` is best first); one per file unless frames are asked for."""
    kept = [(score, row) for score, row in scored if _passes(row, score, request.filters)]
    if request.frames:
        return [_Ranked(_hit(row, score, (), frame=True), row.vector_id) for score, row in kept]
    groups: dict[int, Scored] = {}
    for score, row in kept:
        groups.setdefault(row.media_id, []).append((score, row))
    return [_file_hit(group) for group in groups.values()]


def _file_hit(group: Scored) -> _Ranked:
    """One file's hit from its matching frames (best first)."""
    best_score, best = group[0]
    frames = group if best.media_type == "video" else []
    return _Ranked(_hit(best, best_score, (), frame=False), best.vector_id, frames)


def _with_segments(
    store: StoreReader, ranked: list[_Ranked], request: SearchRequest
) -> list[SearchHit]:
    videos = [r.hit.id for r in ranked if r.frames] if not request.frames else []
    timelines = store.media_timelines(videos) if videos else {}
    return [
        replace(
            r.hit,
            segments=_segments(timelines[r.hit.id], r.frames, request.segment_margin),
        )
        if r.hit.id in timelines
        else r.hit
        for r in ranked
    ]


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


def _segments(timeline: Sequence[HitRow], matched: Scored, margin: float) -> tuple[Segment, ...]:
    """Merge neighbouring matching frames of one video into time ranges.

    A frame is "matching" when it is among the fetched hits and scores within ``margin`` of
    the video's best frame; runs of such frames, adjacent on the video's own timeline, form
    one segment. Segments come back best first.
    """
    best_score = matched[0][0]
    good = {row.vector_id: score for score, row in matched if score >= best_score - margin}
    segments: list[Segment] = []
    run: Scored = []
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


# -- hybrid search ---------------------------------------------------------------------------


def _fuse(
    store: StoreReader,
    query: np.ndarray,
    ranked: list[_Ranked],
    keywords: str,
    request: SearchRequest,
) -> list[_Ranked]:
    """Reciprocal rank fusion of the vector ranking with the keyword ranking.

    Each file scores the sum of 1 / (k + rank) over the rankings it appears in. A file
    found only by its words gets its vector score computed, so every hit still reports a
    cosine similarity, and ``min_score`` still applies to it.
    """
    keyword_ids = store.keyword_media(keywords, request.filters, _FUSION_DEPTH)
    if not keyword_ids:
        return ranked
    by_media = {r.hit.id: r for r in ranked[:_FUSION_DEPTH]}
    missing = [m for m in keyword_ids if m not in by_media]
    for extra in _score_media(store, query, missing, request):
        by_media[extra.hit.id] = extra
    fused: dict[int, float] = {}
    for rank, r in enumerate(ranked[:_FUSION_DEPTH], 1):
        fused[r.hit.id] = 1.0 / (request.rrf_k + rank)
    keyword_rank: dict[int, int] = {}
    for rank, media_id in enumerate(keyword_ids, 1):
        if media_id in by_media:
            keyword_rank[media_id] = rank
            fused[media_id] = fused.get(media_id, 0.0) + 1.0 / (request.rrf_k + rank)
    order = sorted(fused, key=lambda m: -fused[m])
    head = [
        replace(by_media[m], hit=replace(by_media[m].hit, keyword_rank=keyword_rank.get(m)))
        for m in order
    ]
    return head + ranked[_FUSION_DEPTH:]


def _score_media(
    store: StoreReader, query: np.ndarray, media_ids: Sequence[int], request: SearchRequest
) -> list[_Ranked]:
    """Hits for given files, scored against ``query`` frame by frame."""
    timelines = store.media_timelines(media_ids)
    every = [r.vector_id for rows in timelines.values() for r in rows]
    scores = dict(_vector_scores(store, every, query)) if every else {}
    out = []
    for timeline in timelines.values():
        group = sorted(
            ((scores[r.vector_id], r) for r in timeline if r.vector_id in scores),
            key=lambda p: -p[0],
        )
        if group and _passes(group[0][1], group[0][0], request.filters):
            out.append(_file_hit(group))
    return out


def _vector_scores(
    store: StoreReader, ids: Sequence[int], query: np.ndarray
) -> list[tuple[int, float]]:
    out: list[tuple[int, float]] = []
    for chunk_ids, vectors in store.iter_vectors(ids):
        out += zip(chunk_ids.tolist(), (vectors @ query.reshape(-1)).tolist(), strict=True)
    return out


# -- collapsing near-duplicates --------------------------------------------------------------


def _collapse(store: StoreReader, ranked: list[_Ranked], threshold: float) -> list[_Ranked]:
    """Fold each hit into the first better-ranked hit whose vector is near-identical."""
    vectors: dict[int, np.ndarray] = {}
    for ids, matrix in store.iter_vectors([r.vector_id for r in ranked]):
        vectors.update(zip(ids.tolist(), matrix, strict=True))
    if not vectors:
        return ranked
    # A hit whose vector vanished (deleted meanwhile) is kept and matches nothing.
    nothing = np.zeros_like(next(iter(vectors.values())))
    kept: list[_Ranked] = []
    kept_vectors: list[np.ndarray] = []
    folded: list[list[int]] = []
    for r in ranked:
        v = vectors.get(r.vector_id, nothing)
        if kept_vectors:
            sims = np.stack(kept_vectors) @ v
            best = int(np.argmax(sims))
            if sims[best] >= threshold:
                folded[best] += [r.hit.id, *r.hit.duplicates]
                continue
        kept.append(r)
        kept_vectors.append(v)
        folded.append(list(r.hit.duplicates))
    return [
        replace(r, hit=replace(r.hit, duplicates=tuple(extra)))
        for r, extra in zip(kept, folded, strict=True)
    ]
