"""Writing the store: SQLite through SQLAlchemy 2, the source of truth of xsearch.

Every write is one transaction that also bumps the store's *generation*, so the vector
index (a cache) can tell cheaply whether it is still in step with the store. The reads are
:class:`~xsearch.store.reader.StoreReader`'s, which needs no SQLAlchemy (queries stay quick to
start); opening a :class:`Store` also creates the database or migrates it with Alembic.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import Engine, create_engine, delete, event, select, update
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import Session

from ..errors import StoreCorruptError, StoreError, StoreNotFoundError
from . import fts, migrate
from .reader import StoreReader
from .records import DB_NAME, FrameVector, MediaRecord, StoreModel, WriteBatch, WriteResult
from .schema import Failure, Media, StoreMeta, Tag, TaggedMedia, Vector

if TYPE_CHECKING:
    from .. import tags as tagging

__all__ = ["Store"]


def _set_pragmas(dbapi_conn: sqlite3.Connection, _record: object) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets queries read a consistent snapshot while an indexer writes.
    cur.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode never corrupts; at worst a power cut loses the last commits.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


class Store(StoreReader):
    """A store folder's database, to read and write. Thread-safe: each write uses its own
    session."""

    def __init__(self, location: Path, *, create: bool = False) -> None:
        db_path = location / DB_NAME
        if not db_path.exists():
            if not create:
                raise StoreNotFoundError(location)
            try:
                location.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"Cannot create the store folder {location}: {exc}") from exc
        self.engine: Engine = create_engine(
            f"sqlite:///{db_path}",
            connect_args={"timeout": 30, "check_same_thread": False},
        )
        event.listen(self.engine, "connect", _set_pragmas)
        try:
            if not migrate.is_current(self.engine):
                migrate.upgrade(self.engine)
        except (DatabaseError, OperationalError, sqlite3.DatabaseError) as exc:
            # The revision is read on the raw sqlite3 connection (``reader.revision_of``).
            reason = getattr(exc, "orig", None) or exc
            raise StoreCorruptError(
                f"The store database {db_path} cannot be read ({reason}). Move it away "
                "and index again; your media files are untouched."
            ) from exc
        super().__init__(location)

    def close(self) -> None:
        super().close()
        self.engine.dispose()

    # -- writes ----------------------------------------------------------------------------

    def set_meta(self, values: dict[str, str]) -> None:
        with Session(self.engine) as s, s.begin():
            for key, value in values.items():
                s.merge(StoreMeta(key=key, value=value))

    def set_model(self, model: StoreModel) -> None:
        doc = {"profile": model.profile, "fingerprint": model.fingerprint, "dim": model.dim}
        self.set_meta({"model": json.dumps(doc), "created_at": str(time.time())})

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

    # -- tags ------------------------------------------------------------------------------

    def reset_tags(self, tagger: str) -> None:
        """Forget every tag: the store is to be tagged again by ``tagger`` (its identity)."""
        with Session(self.engine) as s, s.begin():
            s.execute(delete(Tag))
            s.execute(delete(TaggedMedia))
            s.merge(StoreMeta(key="tagger", value=tagger))
            fts.clear_tags(s)

    def write_tags(self, tagged: Sequence[tuple[int, Sequence[tagging.Tag]]]) -> None:
        """Replace the tags of files (``(media id, tags)``) and mark them tagged, in one
        transaction; files that left the store meanwhile are skipped."""
        with Session(self.engine) as s, s.begin():
            present = set(s.scalars(select(Media.id).where(Media.id.in_([m for m, _ in tagged]))))
            for media_id, tags in tagged:
                if media_id not in present:
                    continue
                s.execute(delete(Tag).where(Tag.media_id == media_id))
                s.add_all(
                    Tag(
                        media_id=media_id,
                        seg_start=t.start,
                        seg_end=t.end,
                        lang=t.lang,
                        label_key=t.key,
                        label=t.label,
                        score=t.score,
                    )
                    for t in tags
                )
                s.merge(TaggedMedia(media_id=media_id))
                fts.apply_tags(s, media_id, (t.label for t in tags))
