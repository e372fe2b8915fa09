"""The metadata store: SQLite through SQLAlchemy 2, the source of truth of xsearch.

Every write is one transaction that also bumps the store's *generation*, so the vector
index (a cache) can tell cheaply whether it is still in step with the store.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    Engine,
    column,
    create_engine,
    delete,
    event,
    func,
    literal_column,
    or_,
    select,
    table,
    text,
    update,
)
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import Session

from ..encoders.base import Vectors
from ..errors import StoreCorruptError, StoreError, StoreNotFoundError
from ..filters import SearchFilters
from . import fts, migrate
from .schema import Failure, Media, StoreMeta, Vector

__all__ = [
    "DB_NAME",
    "FileState",
    "FrameVector",
    "HitRow",
    "MediaRecord",
    "Store",
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


@dataclass(frozen=True)
class FileState:
    """What the store remembers of a file, enough to tell whether it changed."""

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


def _set_pragmas(dbapi_conn: sqlite3.Connection, _record: object) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets queries read a consistent snapshot while an indexer writes.
    cur.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode never corrupts; at worst a power cut loses the last commits.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _prefix_filter(column: Any, roots: Sequence[bytes]) -> Any:
    """Rows whose path is one of ``roots`` or lies below one of them (byte-wise)."""
    clauses = []
    for root in roots:
        base = root.rstrip(b"/")
        clauses.append(column == base)
        # Every path below base/ sorts between "base/" and "base0" ("0" follows "/").
        clauses.append((column > base + b"/") & (column < base + b"0"))
    return or_(*clauses)


class Store:
    """A store folder's database. Thread-safe: each call uses its own session."""

    def __init__(self, location: Path, *, create: bool = False) -> None:
        self.location = location
        self.db_path = location / DB_NAME
        if not self.db_path.exists():
            if not create:
                raise StoreNotFoundError(location)
            try:
                location.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"Cannot create the store folder {location}: {exc}") from exc
        self.engine: Engine = create_engine(
            f"sqlite:///{self.db_path}",
            connect_args={"timeout": 30, "check_same_thread": False},
        )
        event.listen(self.engine, "connect", _set_pragmas)
        try:
            if not migrate.is_current(self.engine):
                migrate.upgrade(self.engine)
        except (DatabaseError, OperationalError) as exc:
            raise StoreCorruptError(
                f"The store database {self.db_path} cannot be read ({exc.orig}). Move it away "
                "and index again; your media files are untouched."
            ) from exc

    def close(self) -> None:
        self.engine.dispose()

    # -- facts about the store -------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        with Session(self.engine) as s:
            return {row.key: row.value for row in s.scalars(select(StoreMeta))}

    def set_meta(self, values: dict[str, str]) -> None:
        with Session(self.engine) as s, s.begin():
            for key, value in values.items():
                s.merge(StoreMeta(key=key, value=value))

    def model(self) -> StoreModel | None:
        raw = self.meta().get("model")
        if raw is None:
            return None
        doc = json.loads(raw)
        return StoreModel(profile=doc["profile"], fingerprint=doc["fingerprint"], dim=doc["dim"])

    def set_model(self, model: StoreModel) -> None:
        doc = {"profile": model.profile, "fingerprint": model.fingerprint, "dim": model.dim}
        self.set_meta({"model": json.dumps(doc), "created_at": str(time.time())})

    def generation(self) -> int:
        with Session(self.engine) as s:
            value = s.scalar(select(StoreMeta.value).where(StoreMeta.key == "generation"))
        return int(value) if value is not None else 0

    def counts(self) -> dict[str, int]:
        with Session(self.engine) as s:
            by_type = dict(
                s.execute(select(Media.media_type, func.count()).group_by(Media.media_type)).all()
            )
            return {
                "images": int(by_type.get("image", 0)),
                "videos": int(by_type.get("video", 0)),
                "vectors": int(s.scalar(select(func.count()).select_from(Vector)) or 0),
                "failures": int(s.scalar(select(func.count()).select_from(Failure)) or 0),
                "partial": int(
                    s.scalar(
                        select(func.count()).select_from(Media).where(Media.status == "partial")
                    )
                    or 0
                ),
            }

    # -- reads for the indexer -------------------------------------------------------------

    def states_under(self, roots: Sequence[bytes]) -> dict[bytes, FileState]:
        """Every indexed file at or below ``roots``, by path."""
        stmt = select(Media.path, Media.id, Media.size, Media.mtime_ns, Media.content_hash).where(
            _prefix_filter(Media.path, roots)
        )
        with Session(self.engine) as s:
            return {
                row.path: FileState(row.id, row.size, row.mtime_ns, row.content_hash)
                for row in s.execute(stmt)
            }

    def failures_under(self, roots: Sequence[bytes]) -> dict[bytes, tuple[int, int, str]]:
        """Files that failed before, at or below ``roots``: path → (size, mtime_ns, reason)."""
        stmt = select(Failure.path, Failure.size, Failure.mtime_ns, Failure.reason).where(
            _prefix_filter(Failure.path, roots)
        )
        with Session(self.engine) as s:
            return {row.path: (row.size, row.mtime_ns, row.reason) for row in s.execute(stmt)}

    # -- vectors ---------------------------------------------------------------------------

    def vector_ids(self) -> np.ndarray:
        with Session(self.engine) as s:
            ids = s.scalars(select(Vector.id).order_by(Vector.id)).all()
        return np.asarray(ids, dtype=np.int64)

    def iter_vectors(
        self, ids: Iterable[int] | None = None, *, chunk: int = 50_000
    ) -> Iterator[tuple[np.ndarray, Vectors]]:
        """Stored vectors as (ids, matrix) chunks, all of them or only ``ids``."""
        dim = self._dim()
        if ids is None:
            last = 0
            while True:
                stmt = (
                    select(Vector.id, Vector.embedding)
                    .where(Vector.id > last)
                    .order_by(Vector.id)
                    .limit(chunk)
                )
                with Session(self.engine) as s:
                    rows = s.execute(stmt).all()
                if not rows:
                    return
                last = rows[-1].id
                yield _unpack(rows, dim)
        else:
            wanted = list(ids)
            for start in range(0, len(wanted), chunk):
                part = wanted[start : start + chunk]
                with Session(self.engine) as s:
                    rows = s.execute(
                        select(Vector.id, Vector.embedding).where(Vector.id.in_(part))
                    ).all()
                if rows:
                    yield _unpack(rows, dim)

    def _dim(self) -> int:
        model = self.model()
        if model is None:
            raise StoreError(
                f"The store at {self.location} has no model yet; index something first."
            )
        return model.dim

    def hit_rows(self, vector_ids: Sequence[int]) -> dict[int, HitRow]:
        """Vectors joined with their files, by vector id; ids no longer stored are left out."""
        stmt = select(
            Vector.id.label("vector_id"),
            Vector.t,
            Vector.t_start,
            Vector.t_end,
            Media.id.label("media_id"),
            Media.path,
            Media.display_path,
            Media.media_type,
            Media.width,
            Media.height,
            Media.duration,
            Media.fps,
            Media.captured_at,
            Media.mtime_ns,
            Media.size,
            Media.status,
        ).join(Media, Media.id == Vector.media_id)
        out: dict[int, HitRow] = {}
        ids = [int(i) for i in vector_ids]
        with Session(self.engine) as s:
            for start in range(0, len(ids), 900):
                for row in s.execute(stmt.where(Vector.id.in_(ids[start : start + 900]))):
                    out[row.vector_id] = HitRow(**row._asdict())
        return out

    def media_vectors(self, media_id: int) -> list[HitRow]:
        """All vectors of one file, in time order."""
        with Session(self.engine) as s:
            ids = s.scalars(select(Vector.id).where(Vector.media_id == media_id)).all()
        rows = self.hit_rows(ids)
        return sorted(rows.values(), key=lambda r: (r.t or 0.0, r.vector_id))

    def media_by_id(self, media_id: int) -> HitRow | None:
        rows = self.media_vectors(media_id)
        return rows[0] if rows else None

    # -- reads for filtered and keyword search -----------------------------------------------

    def matching_vector_ids(self, filters: SearchFilters) -> np.ndarray:
        """The ids of the vectors of files that pass ``filters`` (the score aside)."""
        stmt = select(Vector.id).join(Media, Media.id == Vector.media_id)
        with Session(self.engine) as s:
            ids = s.scalars(stmt.where(*_media_conditions(filters))).all()
        return np.asarray(ids, dtype=np.int64)

    def media_timelines(self, media_ids: Sequence[int]) -> dict[int, list[HitRow]]:
        """All vectors of several files at once, each file's in time order."""
        ids: list[int] = []
        wanted = [int(m) for m in media_ids]
        with Session(self.engine) as s:
            for start in range(0, len(wanted), 900):
                part = wanted[start : start + 900]
                ids += s.scalars(select(Vector.id).where(Vector.media_id.in_(part))).all()
        out: dict[int, list[HitRow]] = {m: [] for m in wanted}
        for row in self.hit_rows(ids).values():
            out[row.media_id].append(row)
        for rows in out.values():
            rows.sort(key=lambda r: (r.t or 0.0, r.vector_id))
        return out

    def keyword_media(self, words: str, filters: SearchFilters, limit: int) -> list[int]:
        """Ids of files whose path or EXIF words match ``words``, best (BM25) first."""
        words_table = table(fts.FTS_TABLE, column("rowid"))
        rank = func.bm25(literal_column(fts.FTS_TABLE))
        with Session(self.engine) as s:
            expr = fts.informative_expression(s, words)
            if expr is None:
                return []
            stmt = (
                select(Media.id)
                .select_from(words_table)
                .join(Media, Media.id == words_table.c.rowid)
                .where(text(f"{fts.FTS_TABLE} MATCH :expr"), *_media_conditions(filters))
                .order_by(rank, Media.id)
                .limit(limit)
            )
            return [int(row[0]) for row in s.execute(stmt, {"expr": expr})]

    # -- writes ----------------------------------------------------------------------------

    def write(self, batch: WriteBatch) -> WriteResult:
        """Apply ``batch`` in one transaction and bump the generation."""
        result = WriteResult()
        now = time.time()
        # Keyword-search words are gathered first: that reads EXIF text from the files.
        words = fts.documents(
            ((r.path, r.display_path, r.media_type) for r, _ in batch.upserts),
            ((path, display) for _, path, display, _, _ in batch.moves),
        )
        with Session(self.engine) as s, s.begin():
            for media_id in batch.deletes:
                result.removed_ids += self._delete_media(s, media_id)
            for media_id, path, display, size, mtime_ns in batch.moves:
                s.execute(
                    update(Media)
                    .where(Media.id == media_id)
                    .values(path=path, display_path=display, size=size, mtime_ns=mtime_ns)
                )
            for media_id, size, mtime_ns in batch.touches:
                s.execute(
                    update(Media).where(Media.id == media_id).values(size=size, mtime_ns=mtime_ns)
                )
            for record, frames in batch.upserts:
                result.removed_ids += self._upsert(s, record, frames, now, result)
            for path, display, size, mtime_ns, reason, detail in batch.failures:
                s.merge(
                    Failure(
                        path=path,
                        display_path=display,
                        size=size,
                        mtime_ns=mtime_ns,
                        reason=reason,
                        detail=detail,
                        failed_at=now,
                    )
                )
            fts.apply(s, words)
            result.generation = self._bump_generation(s)
        return result

    def _delete_media(self, s: Session, media_id: int) -> list[int]:
        ids = list(s.scalars(select(Vector.id).where(Vector.media_id == media_id)))
        s.execute(delete(Vector).where(Vector.media_id == media_id))
        s.execute(delete(Media).where(Media.id == media_id))
        return ids

    def _upsert(
        self,
        s: Session,
        record: MediaRecord,
        frames: list[FrameVector],
        now: float,
        result: WriteResult,
    ) -> list[int]:
        removed: list[int] = []
        old = s.scalar(select(Media.id).where(Media.path == record.path))
        if old is not None:
            removed = self._delete_media(s, old)
        s.execute(delete(Failure).where(Failure.path == record.path))
        media = Media(**record.__dict__, indexed_at=now)
        s.add(media)
        s.flush()
        rows = [
            Vector(
                media_id=media.id,
                t=f.t,
                t_start=f.t_start,
                t_end=f.t_end,
                embedding=np.ascontiguousarray(f.vector, dtype=np.float32).tobytes(),
            )
            for f in frames
        ]
        s.add_all(rows)
        s.flush()
        result.added_ids += [row.id for row in rows]
        result.added_vectors += [f.vector for f in frames]
        return removed

    def _bump_generation(self, s: Session) -> int:
        current = s.scalar(select(StoreMeta.value).where(StoreMeta.key == "generation"))
        value = (int(current) if current else 0) + 1
        s.merge(StoreMeta(key="generation", value=str(value)))
        return value

    def clear_failures(self, paths: Sequence[bytes]) -> None:
        if not paths:
            return
        with Session(self.engine) as s, s.begin():
            for start in range(0, len(paths), 900):
                s.execute(delete(Failure).where(Failure.path.in_(paths[start : start + 900])))


def _media_conditions(filters: SearchFilters) -> list[Any]:
    """SQL conditions on ``media`` equivalent to :meth:`SearchFilters.matches`."""
    conditions: list[Any] = []
    if filters.media_type is not None:
        conditions.append(Media.media_type == filters.media_type)
    if filters.under:
        conditions.append(_prefix_filter(Media.path, filters.under))
    when = func.coalesce(Media.captured_at, Media.mtime_ns / 1e9)
    if filters.after is not None:
        conditions.append(when >= filters.after)
    if filters.before is not None:
        conditions.append(when < filters.before)
    return conditions


def _unpack(rows: Sequence[Any], dim: int) -> tuple[np.ndarray, Vectors]:
    ids = np.fromiter((r.id for r in rows), dtype=np.int64, count=len(rows))
    matrix = np.frombuffer(b"".join(r.embedding for r in rows), dtype=np.float32).reshape(-1, dim)
    return ids, matrix
