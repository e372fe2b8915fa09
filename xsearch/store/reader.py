"""Reading the store: plain SQL over the standard library's ``sqlite3``.

Every query, ``xsearch info`` and the index's reconciliation only read, and importing
SQLAlchemy costs about 0.25 s of every cold command on a small CPU, a third of a cold
query. So the reads are written here once, against the schema that the Alembic migrations
create; :class:`~xsearch.store.repository.Store` adds the writes (through SQLAlchemy) and
the migrations on top of these reads.

Each thread gets its own connection, in autocommit mode: every statement reads the newest
committed snapshot (WAL), and no read transaction is left open to hold back a writer.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..encoders.base import Vectors
from ..errors import StoreCorruptError, StoreError, StoreNotFoundError
from ..filters import SearchFilters
from ..tags import Tag
from . import fts
from .records import DB_NAME, FileState, HitRow, StoreModel

__all__ = ["KNOWN_HEAD", "StoreReader", "revision_of"]

#: The newest revision in migrations/versions. A store at this revision is read without
#: importing alembic or SQLAlchemy; any other is migrated first (``repository.Store``). A test
#: checks it against alembic's own answer.
KNOWN_HEAD = "0004"

# SQLite's historical limit on bound parameters per statement is 999.
_IN_CHUNK = 900
# Counts kept for keyword search (by generation, statement and parameters).
_COUNTS_KEPT = 4096

_HIT_COLUMNS = (
    "v.id, v.t, v.t_start, v.t_end, m.id, m.path, m.display_path, m.media_type, m.width, "
    "m.height, m.duration, m.fps, m.captured_at, m.mtime_ns, m.size, m.status"
)


def revision_of(conn: sqlite3.Connection) -> str | None:
    """The schema revision of a database; None for an empty one.

    Read straight from alembic's one-row version table, as alembic itself reads it for a
    history without branches.
    """
    has_table = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
    ).fetchone()
    if has_table is None:
        return None
    rows = [row[0] for row in conn.execute("SELECT version_num FROM alembic_version")]
    if len(rows) > 1:
        raise StoreError(f"The store's schema has several heads ({', '.join(rows)}).")
    return rows[0] if rows else None


class StoreReader:
    """Read access to a store folder's database. Thread-safe; cheap to open."""

    def __init__(self, location: Path) -> None:
        self.location = location
        self.db_path = location / DB_NAME
        if not self.db_path.exists():
            raise StoreNotFoundError(location)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._counts: dict[tuple[int, str, tuple[Any, ...]], Any] = {}

    def close(self) -> None:
        with self._connections_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    # -- connections -----------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.db_path, timeout=30, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA query_only = ON")
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(exc) from exc
        return conn

    def _corrupt(self, exc: sqlite3.DatabaseError) -> StoreCorruptError:
        return StoreCorruptError(
            f"The store database {self.db_path} cannot be read ({exc}). Move it away and "
            "index again; your media files are untouched."
        )

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "no such" not in str(exc):
                raise StoreError(f"Cannot read the store {self.db_path}: {exc}") from exc
            raise self._corrupt(exc) from exc

    def _value(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self._rows(sql, params)
        return rows[0][0] if rows else None

    def _counted(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """``_value``, remembered while the store's generation holds: the counts that keyword
        search asks for (every file; the files of a word) cost 0.6 s each at 10M files."""
        key = (self.generation(), sql, tuple(params))
        with self._connections_lock:
            if key in self._counts:
                return self._counts[key]
        value = self._value(sql, params)
        with self._connections_lock:
            if len(self._counts) >= _COUNTS_KEPT or any(k[0] != key[0] for k in self._counts):
                self._counts.clear()
            self._counts[key] = value
        return value

    def schema_revision(self) -> str | None:
        try:
            return revision_of(self._conn())
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(exc) from exc

    def schema_is_current(self) -> bool:
        return self.schema_revision() == KNOWN_HEAD

    # -- facts about the store -------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        return dict(self._rows("SELECT key, value FROM store_meta"))

    def model(self) -> StoreModel | None:
        raw = self._value("SELECT value FROM store_meta WHERE key = 'model'")
        if raw is None:
            return None
        doc = json.loads(raw)
        return StoreModel(profile=doc["profile"], fingerprint=doc["fingerprint"], dim=doc["dim"])

    def generation(self) -> int:
        value = self._value("SELECT value FROM store_meta WHERE key = 'generation'")
        return int(value) if value is not None else 0

    def counts(self) -> dict[str, int]:
        by_type = dict(self._rows("SELECT media_type, count(*) FROM media GROUP BY media_type"))
        return {
            "images": int(by_type.get("image", 0)),
            "videos": int(by_type.get("video", 0)),
            "vectors": int(self._value("SELECT count(*) FROM vectors")),
            "failures": int(self._value("SELECT count(*) FROM failures")),
            "partial": int(self._value("SELECT count(*) FROM media WHERE status = 'partial'")),
        }

    # -- reads for the indexer -------------------------------------------------------------

    def states_under(self, roots: Sequence[bytes]) -> dict[bytes, FileState]:
        """Every indexed file at or below ``roots``, by path."""
        where, params = _prefix_filter("path", roots)
        rows = self._rows(
            f"SELECT path, id, size, mtime_ns, content_hash FROM media WHERE {where}", params
        )
        return {path: FileState(i, size, mtime, digest) for path, i, size, mtime, digest in rows}

    def stats_under(self, roots: Sequence[bytes]) -> dict[bytes, tuple[int, int]]:
        """(size, mtime_ns) of every indexed file at or below ``roots``, by path: all that
        the stat fast path of a re-index compares."""
        where, params = _prefix_filter("path", roots)
        rows = self._rows(f"SELECT path, size, mtime_ns FROM media WHERE {where}", params)
        return {path: (size, mtime) for path, size, mtime in rows}

    def states_of(self, paths: Sequence[bytes]) -> dict[bytes, FileState]:
        """The stored state of the files at ``paths`` (those not stored are left out)."""
        out: dict[bytes, FileState] = {}
        for start in range(0, len(paths), _IN_CHUNK):
            part = list(paths[start : start + _IN_CHUNK])
            rows = self._rows(
                "SELECT path, id, size, mtime_ns, content_hash FROM media "
                f"WHERE path IN ({_marks(part)})",
                part,
            )
            out.update((p, FileState(i, size, mtime, digest)) for p, i, size, mtime, digest in rows)
        return out

    def failures_under(self, roots: Sequence[bytes]) -> dict[bytes, tuple[int, int, str]]:
        """Files that failed before, at or below ``roots``: path → (size, mtime_ns, reason)."""
        where, params = _prefix_filter("path", roots)
        rows = self._rows(
            f"SELECT path, size, mtime_ns, reason FROM failures WHERE {where}", params
        )
        return {path: (size, mtime_ns, reason) for path, size, mtime_ns, reason in rows}

    # -- vectors ---------------------------------------------------------------------------

    def vector_ids(self) -> np.ndarray:
        rows = self._rows("SELECT id FROM vectors ORDER BY id")
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def iter_vectors(
        self, ids: Iterable[int] | None = None, *, chunk: int = 50_000
    ) -> Iterator[tuple[np.ndarray, Vectors]]:
        """Stored vectors as (ids, matrix) chunks, all of them or only ``ids``."""
        dim = self._dim()
        if ids is None:
            last = 0
            while True:
                rows = self._rows(
                    "SELECT id, embedding FROM vectors WHERE id > ? ORDER BY id LIMIT ?",
                    (last, chunk),
                )
                if not rows:
                    return
                last = rows[-1][0]
                yield _unpack(rows, dim)
        else:
            wanted = [int(i) for i in ids]
            for start in range(0, len(wanted), chunk):
                rows = []
                for part in _chunks(wanted[start : start + chunk]):
                    rows += self._rows(
                        f"SELECT id, embedding FROM vectors WHERE id IN ({_marks(part)})", part
                    )
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
        return {row.vector_id: row for row in self._hits("v.id", vector_ids)}

    def _hits(self, key: str, values: Sequence[int]) -> list[HitRow]:
        out: list[HitRow] = []
        for part in _chunks([int(v) for v in values]):
            rows = self._rows(
                f"SELECT {_HIT_COLUMNS} FROM vectors v JOIN media m ON m.id = v.media_id "
                f"WHERE {key} IN ({_marks(part)})",
                part,
            )
            out += [_hit_row(row) for row in rows]
        return out

    def media_vectors(self, media_id: int) -> list[HitRow]:
        """All vectors of one file, in time order."""
        return self.media_timelines([media_id])[int(media_id)]

    def media_by_id(self, media_id: int) -> HitRow | None:
        rows = self.media_vectors(media_id)
        return rows[0] if rows else None

    # -- reads for filtered and keyword search -----------------------------------------------

    def matching_vector_ids(self, filters: SearchFilters, limit: int | None = None) -> np.ndarray:
        """The ids of the vectors of files that pass ``filters`` (the score aside): all of
        them, or any ``limit`` of them (enough to tell that more pass than a query can use:
        listing 10M ids costs seconds)."""
        where, params = _media_conditions(filters)
        sql = f"SELECT v.id FROM vectors v JOIN media m ON m.id = v.media_id WHERE {where}"
        if limit is not None:
            sql, params = sql + " LIMIT ?", [*params, limit]
        rows = self._rows(sql, params)
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def with_passing_tags(self, vector_ids: Sequence[int], filters: SearchFilters) -> np.ndarray:
        """Those of ``vector_ids`` whose files pass the tag filters of ``filters`` (the
        other filters are :meth:`SearchFilters.matches`'s, checked on the rows)."""
        # Correlated, so that SQLite starts from the few ids rather than from every file
        # of a common tag.
        has = "EXISTS (SELECT 1 FROM tags t WHERE t.label_key = ? AND t.media_id = v.media_id)"
        conditions = [has] * len(filters.tags) + ["NOT " + has] * len(filters.without_tags)
        where = " AND ".join(conditions) or "1"
        params = [*filters.tags, *filters.without_tags]
        out: list[int] = []
        for part in _chunks([int(v) for v in vector_ids]):
            rows = self._rows(
                f"SELECT v.id FROM vectors v WHERE v.id IN ({_marks(part)}) AND {where}",
                [*part, *params],
            )
            out += [r[0] for r in rows]
        return np.asarray(out, dtype=np.int64)

    def media_timelines(self, media_ids: Sequence[int]) -> dict[int, list[HitRow]]:
        """All vectors of several files at once, each file's in time order."""
        wanted = [int(m) for m in media_ids]
        out: dict[int, list[HitRow]] = {m: [] for m in wanted}
        for row in self._hits("v.media_id", wanted):
            out[row.media_id].append(row)
        for rows in out.values():
            rows.sort(key=lambda r: (r.t or 0.0, r.vector_id))
        return out

    def keyword_media(self, words: str, filters: SearchFilters, limit: int) -> list[int]:
        """Ids of files whose path or EXIF words match ``words``, best (BM25) first."""
        expr = fts.informative_expression(self._counted, words)
        if expr is None:
            return []
        where, params = _media_conditions(filters)
        table = fts.FTS_TABLE
        rows = self._rows(
            f"SELECT m.id FROM {table} JOIN media m ON m.id = {table}.rowid "
            f"WHERE {table} MATCH ? AND {where} ORDER BY bm25({table}), m.id LIMIT ?",
            (expr, *params, limit),
        )
        return [int(r[0]) for r in rows]

    # -- tags ------------------------------------------------------------------------------

    def tagger(self) -> str | None:
        """The identity of the tagger that made the stored tags (None: never tagged)."""
        value = self._value("SELECT value FROM store_meta WHERE key = 'tagger'")
        return str(value) if value is not None else None

    def untagged_media_ids(self) -> list[int]:
        """Files that the current tagger has not tagged yet, in id order."""
        rows = self._rows(
            "SELECT m.id FROM media m LEFT JOIN tagged_media t ON t.media_id = m.id "
            "WHERE t.media_id IS NULL ORDER BY m.id"
        )
        return [int(r[0]) for r in rows]

    def media_under(self, roots: Sequence[bytes] | None) -> list[HitRow]:
        """One row per file at or below ``roots`` (every file for None), in path order."""
        where, params = _prefix_filter("m.path", roots) if roots is not None else ("1", [])
        rows = self._rows(
            f"SELECT {_HIT_COLUMNS} FROM media m JOIN vectors v ON v.id = "
            "(SELECT min(id) FROM vectors WHERE media_id = m.id) "
            f"WHERE {where} ORDER BY m.path",
            params,
        )
        return [_hit_row(row) for row in rows]

    def tags_of(self, media_ids: Sequence[int]) -> dict[int, list[Tag]]:
        """The stored tags of files: the file's own first (best first), then segments."""
        out: dict[int, list[Tag]] = {int(m): [] for m in media_ids}
        for part in _chunks(list(out)):
            rows = self._rows(
                "SELECT media_id, label_key, label, lang, score, seg_start, seg_end FROM tags "
                f"WHERE media_id IN ({_marks(part)}) "
                "ORDER BY media_id, seg_start IS NOT NULL, seg_start, score DESC, id",
                part,
            )
            for media_id, *fields in rows:
                out[media_id].append(Tag(*fields))
        return out

    def tag_counts(self, roots: Sequence[bytes] | None) -> list[tuple[str, str, str, int]]:
        """(key, language, label, number of files) of the tags at or below ``roots``,
        most frequent first."""
        where, params = _prefix_filter("m.path", roots) if roots is not None else ("1", [])
        rows = self._rows(
            "SELECT t.label_key, t.lang, t.label, count(DISTINCT t.media_id) AS n "
            f"FROM tags t JOIN media m ON m.id = t.media_id WHERE {where} "
            "GROUP BY t.label_key, t.lang, t.label ORDER BY n DESC, t.label_key, t.lang",
            params,
        )
        return [(str(k), str(lang), str(label), int(n)) for k, lang, label, n in rows]


def _prefix_filter(column: str, roots: Sequence[bytes]) -> tuple[str, list[bytes]]:
    """Rows whose path is one of ``roots`` or lies below one of them (byte-wise)."""
    clauses, params = [], []
    for root in roots:
        base = root.rstrip(b"/")
        # Every path below base/ sorts between "base/" and "base0" ("0" follows "/").
        clauses.append(f"({column} = ? OR ({column} > ? AND {column} < ?))")
        params += [base, base + b"/", base + b"0"]
    return ("(" + " OR ".join(clauses) + ")" if clauses else "0"), params


def _media_conditions(filters: SearchFilters) -> tuple[str, list[Any]]:
    """A condition on ``media m`` equivalent to :meth:`SearchFilters.matches`."""
    conditions: list[str] = []
    params: list[Any] = []
    if filters.media_type is not None:
        conditions.append("m.media_type = ?")
        params.append(filters.media_type)
    if filters.under:
        where, under = _prefix_filter("m.path", filters.under)
        conditions.append(where)
        params += under
    for key in filters.tags:
        conditions.append("m.id IN (SELECT media_id FROM tags WHERE label_key = ?)")
        params.append(key)
    for key in filters.without_tags:
        # Correlated, through the (label_key, media_id) index: a NOT IN list would first
        # gather every file of the tag, millions of rows for a common one.
        conditions.append(
            "NOT EXISTS (SELECT 1 FROM tags t WHERE t.label_key = ? AND t.media_id = m.id)"
        )
        params.append(key)
    when = "coalesce(m.captured_at, m.mtime_ns / 1e9)"
    if filters.after is not None:
        conditions.append(f"{when} >= ?")
        params.append(filters.after)
    if filters.before is not None:
        conditions.append(f"{when} < ?")
        params.append(filters.before)
    return (" AND ".join(conditions) or "1"), params


def _chunks(values: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(values), _IN_CHUNK):
        yield values[start : start + _IN_CHUNK]


def _marks(values: Sequence[object]) -> str:
    return ",".join("?" * len(values))


def _hit_row(row: Sequence[Any]) -> HitRow:
    (vector_id, t, t_start, t_end, media_id, path, display_path, media_type, width, height,
     duration, fps, captured_at, mtime_ns, size, status) = row  # fmt: skip
    return HitRow(
        vector_id=vector_id,
        media_id=media_id,
        path=path,
        display_path=display_path,
        media_type=media_type,
        width=width,
        height=height,
        duration=duration,
        fps=fps,
        captured_at=captured_at,
        mtime_ns=mtime_ns,
        size=size,
        status=status,
        t=t,
        t_start=t_start,
        t_end=t_end,
    )


def _unpack(rows: Sequence[Any], dim: int) -> tuple[np.ndarray, Vectors]:
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(-1, dim)
    return ids, matrix
