"""The query path's SQL uses indexes: checked on the query plans of a small store.

Timings at 10M files are ``bench/sqlite_scale.py``'s; what can be held on a small store is the
plan SQLite picks, since a plan that scans ``media`` or ``vectors`` is what made a filter cost
seconds at 10M. Each statement is captured as the reader runs it and explained again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from xsearch.filters import SearchFilters
from xsearch.store import migrate
from xsearch.store.reader import StoreReader
from xsearch.store.records import DB_NAME
from xsearch.store.repository import Store


@pytest.fixture()
def store(tmp_path: Path) -> StoreReader:
    Store(tmp_path, create=True).close()
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        for i in range(1, 21):
            conn.execute(
                "INSERT INTO media (id, path, display_path, size, mtime_ns, content_hash, "
                "media_type, captured_at, status, indexed_at) VALUES (?, ?, ?, 1, ?, ?, ?, ?, "
                "'ok', 0)",
                (i, f"/p/a{i % 3}/{i}.jpg".encode(), f"/p/a{i % 3}/{i}.jpg", i * 10**9,
                 f"h{i}", "video" if i % 4 == 0 else "image", None if i % 2 else float(i)),
            )  # fmt: skip
            conn.execute("INSERT INTO vectors (media_id, embedding) VALUES (?, ?)", (i, b"\0" * 8))
            conn.execute(
                "INSERT INTO tags (media_id, lang, label_key, label, score) "
                "VALUES (?, 'en', ?, ?, 0.5)",
                (i, "dog" if i % 2 else "cat", "dog" if i % 2 else "cat"),
            )
            conn.execute(
                "INSERT INTO media_fts (rowid, words) VALUES (?, ?)", (i, f"p a{i % 3} {i} jpg")
            )
        conn.execute(
            "INSERT INTO store_meta VALUES ('model', "
            '\'{"profile": "x", "fingerprint": "x", "dim": 2}\')'
        )
    reader = StoreReader(tmp_path)
    yield reader
    reader.close()


def _plans(reader: StoreReader, call: Callable[[StoreReader], Any]) -> list[str]:
    """The query plan of every statement that ``call`` runs on the reader."""
    seen: list[tuple[str, list[Any]]] = []
    original = reader._rows

    def recording(sql: str, params: Any = ()) -> list[Any]:
        seen.append((sql, list(params)))
        return original(sql, params)

    reader._rows = recording  # type: ignore[method-assign]
    try:
        call(reader)
    finally:
        reader._rows = original  # type: ignore[method-assign]
    conn = reader._conn()
    plans = []
    for sql, params in seen:
        rows = conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
        plans.append("\n".join(str(r[-1]) for r in rows))
    assert plans, "the call ran no SQL"
    return plans


def _scans(plan: str) -> list[str]:
    """Lines that read a whole table (FTS5's own virtual-table lookups are not scans)."""
    return [
        line
        for line in plan.splitlines()
        if line.startswith("SCAN") and "VIRTUAL TABLE" not in line
    ]


def test_the_id_to_row_lookup_searches_both_tables_by_key(store: StoreReader) -> None:
    (plan,) = _plans(store, lambda s: s.hit_rows([1, 5, 9]))
    assert "SEARCH v USING INTEGER PRIMARY KEY" in plan, plan
    assert "SEARCH m USING INTEGER PRIMARY KEY" in plan, plan
    assert not _scans(plan)


@pytest.mark.parametrize(
    ("filters", "index"),
    [
        (SearchFilters(media_type="video"), "ix_media_type_time"),
        (SearchFilters(after=5.0, before=9.0), "ix_media_time"),
        (SearchFilters(after=5.0), "ix_media_time"),
        (SearchFilters(media_type="image", before=9.0), "ix_media_type_time"),
        (SearchFilters(tags=("dog",)), "ix_tags_label_key_media_id"),
        (SearchFilters(under=(b"/p/a1",)), "sqlite_autoindex_media_1"),
    ],
)
def test_each_file_filter_is_answered_from_an_index(
    store: StoreReader, filters: SearchFilters, index: str
) -> None:
    (plan,) = _plans(store, lambda s: s.matching_vector_ids(filters, limit=10))
    assert index in plan, plan
    assert not _scans(plan), plan


def test_a_tag_exclusion_is_checked_per_file_through_the_index(store: StoreReader) -> None:
    """Not a NOT IN list: that gathers every file of a common tag before the first row."""
    (plan,) = _plans(store, lambda s: s.matching_vector_ids(SearchFilters(without_tags=("dog",))))
    assert "CORRELATED" in plan and "ix_tags_label_key_media_id" in plan, plan
    assert "LIST SUBQUERY" not in plan, plan


def test_checking_candidates_tags_reads_them_by_id(store: StoreReader) -> None:
    filters = SearchFilters(tags=("dog",), without_tags=("cat",))
    plans = _plans(store, lambda s: s.with_passing_tags(list(range(1, 2000)), filters))
    assert len(plans) == 3  # 1,999 ids in chunks of 900: within SQLite's parameter limit
    for plan in plans:
        assert "SEARCH v USING INTEGER PRIMARY KEY" in plan and not _scans(plan), plan
    assert store.with_passing_tags([1, 2, 3], filters).tolist() == [1, 3]


def test_keyword_search_and_timelines_read_by_key(store: StoreReader) -> None:
    first = _plans(store, lambda s: s.keyword_media("a1", SearchFilters(), 10))
    # The count of every file (which scans an index) and of the word's files are asked for
    # once per generation of the store; a second search runs only its own statement.
    again = _plans(store, lambda s: s.keyword_media("a1", SearchFilters(), 10))
    assert len(again) == len(first) - 2
    for plan in again:
        assert not _scans(plan), plan
    assert store.keyword_media("a1", SearchFilters(), 10) == [1, 4, 7, 10, 13, 16, 19]
    for plan in _plans(store, lambda s: s.media_timelines([1, 2])):
        assert "SEARCH v USING INDEX ix_vectors_media_id" in plan and not _scans(plan), plan


def test_migration_0004_round_trip(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    engine = create_engine(f"sqlite:///{db}")
    migrate.upgrade(engine)

    def indexes() -> set[str]:
        with sqlite3.connect(db) as conn:
            return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}

    new = {"ix_media_time", "ix_media_type_time", "ix_tags_label_key_media_id"}
    assert new <= indexes()
    migrate.downgrade(engine, "0003")
    assert not new & indexes() and "ix_tags_label_key" in indexes()
    migrate.upgrade(engine)
    assert new <= indexes() and "ix_tags_label_key" not in indexes()
