"""SQLite at 10M rows: the query path's store reads, measured on a synthetic store.

    python -m bench.sqlite_scale --rows 10000000            # builds /tmp/xsearch-sqlite-10000000
    python -m bench.sqlite_scale --rows 1000000 --reps 50
    python -m bench --only sqlite --sqlite-rows 10000000

The store is :mod:`bench.sqlite_fixture`'s (the real schema, bulk-loaded); it is kept
between runs (``--rebuild`` makes it anew). Each figure is the median and p99 over
``--reps`` repetitions, in milliseconds, with the OS page cache warm (the store is read
once first): what a server sees. Measured, all through the code the query path runs:

- ``lookup k=…``: ``StoreReader.hit_rows`` for k random vector ids (the id → row join
  after every vector search);
- ``filter …``: ``StoreReader.matching_vector_ids`` (the SQL half of a filter) and
  ``query.run_search`` with that filter, limit 20, against a stand-in index that returns
  random vector ids (so the figure is the store's share of a query, without faiss);
- ``keywords …``: ``StoreReader.keyword_media`` (FTS5, BM25, top 100) and a hybrid
  ``run_search``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xsearch.filters import SearchFilters, parse_when
from xsearch.query import SearchRequest, run_search
from xsearch.store import fts
from xsearch.store.reader import StoreReader
from xsearch.store.reader import _media_conditions as reader_conditions
from xsearch.store.repository import Store

from .sqlite_fixture import build_store, folders

__all__ = ["main", "run"]

Log = Callable[[str], None]


@dataclass
class _FakeIndex:
    """Stands in for the vector index: ``total`` ids, random ones returned best first."""

    total: int
    seed: int = 0

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def sync(self) -> range:
        return range(self.total)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, self.total)
        ids = self._rng.choice(self.total, size=k, replace=False) + 1
        scores = np.sort(self._rng.random(k).astype(np.float32))[::-1]
        return scores.reshape(1, -1), ids.reshape(1, -1).astype(np.int64)


def _timed(fn: Callable[[], object], reps: int) -> dict[str, float]:
    fn()  # warm: the first call pays for page-cache misses and statement compilation
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {
        "median_ms": round(statistics.median(times), 3),
        "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 3),
    }


def _filters(root: bytes, n_media: int, concepts: tuple[str, ...]) -> dict[str, SearchFilters]:
    all_folders = folders(n_media, root)
    one_folder = all_folders[len(all_folders) // 2]
    year = root.rstrip(b"/") + b"/2017"
    return {
        "type:video": SearchFilters(media_type="video"),
        "type:image": SearchFilters(media_type="image"),
        "under one folder (1,000 files)": SearchFilters(under=(one_folder,)),
        "under a year's folder": SearchFilters(under=(year,)),
        "after..before one month": SearchFilters(
            after=parse_when("2017-05"), before=parse_when("2017-06")
        ),
        "after..before one year": SearchFilters(
            after=parse_when("2017"), before=parse_when("2018")
        ),
        "after 2025-06 (recent)": SearchFilters(after=parse_when("2025-06")),
        f"tag:{concepts[-1]} (rarest)": SearchFilters(tags=(concepts[-1],)),
        f"tag:{concepts[0]} (commonest)": SearchFilters(tags=(concepts[0],)),
        f"-tag:{concepts[0]}": SearchFilters(without_tags=(concepts[0],)),
        "type:image + year + tag:dog": SearchFilters(
            media_type="image", after=parse_when("2017"), before=parse_when("2018"), tags=("dog",)
        ),
    }


_KEYWORDS = {
    "a folder number (1,000 files)": "00042",
    "an event word (1/16 of files)": "wedding",
    "京都 (CJK pair)": "京都",
    "a tag word": "sunset",
    "a sentence": "photos of a dog on the beach at a wedding",
}


def run(
    rows: int,
    *,
    reps: int = 100,
    workdir: Path = Path("/tmp"),
    rebuild: bool = False,
    dim: int = 16,
    store: Path | None = None,
    filter_reps: int | None = None,
    log: Log = lambda _m: None,
) -> dict[str, Any]:
    """Build (or reuse) the fixture of ``rows`` files and measure; a JSON-able result."""
    location = store or workdir / f"xsearch-sqlite-{rows}"
    if rebuild and location.exists():
        shutil.rmtree(location)
    built: dict[str, Any] = {}
    if not location.exists():
        log(f"building a store of {rows:,} files at {location}")
        fixture = build_store(location, rows, dim=dim, log=log)
        built = {
            "build_s": round(fixture.seconds, 1),
            "videos": fixture.videos,
            "tags": fixture.tags,
        }
    # Opening the store for writing migrates it to this xsearch's schema, as the engine does.
    migrating = time.perf_counter()
    Store(location).close()
    built["open_and_migrate_s"] = round(time.perf_counter() - migrating, 1)
    reader = StoreReader(location)
    try:
        return {**built, **_measure(reader, rows, reps, filter_reps, log)}
    finally:
        reader.close()


def _measure(
    store: StoreReader, rows: int, reps: int, filter_reps: int | None, log: Log
) -> dict[str, Any]:
    from .sqlite_fixture import concept_keys

    counts = store.counts()
    n_vectors = counts["vectors"]
    rows = counts["images"] + counts["videos"]
    db = store.db_path
    wal = db.with_name(db.name + "-wal")
    size_mb = (db.stat().st_size + (wal.stat().st_size if wal.exists() else 0)) / 2**20
    log("warming the page cache")
    with db.open("rb") as fh:
        while fh.read(1 << 24):
            pass
    rng = np.random.default_rng(1)
    out: list[dict[str, Any]] = []
    for k in (10, 100, 1000):
        log(f"lookup k={k}")
        out.append(
            {
                "what": f"lookup k={k}",
                **_timed(lambda k=k: store.hit_rows(_ids(rng, n_vectors, k)), reps),
            }
        )
    query = np.ones(store.model().dim, np.float32)  # type: ignore[union-attr]
    query /= np.linalg.norm(query)
    index = _FakeIndex(n_vectors)
    few = filter_reps or max(5, reps // 5)
    first = store.media_by_id(1)
    assert first is not None, "not a store of bench.sqlite_fixture"
    root = first.path.rsplit(b"/", 3)[0]  # <root>/<year>/<folder>/<name>
    for name, filters in _filters(root, rows, concept_keys()).items():
        log(f"filter {name}")
        passing = store._value(
            "SELECT count(*) FROM vectors v JOIN media m ON m.id = v.media_id WHERE "
            + reader_conditions(filters)[0],
            reader_conditions(filters)[1],
        )
        request = SearchRequest(limit=20, filters=filters)
        out.append(
            {
                "what": f"filter {name}",
                "passing_vectors": passing,
                **_prefixed("sql_", _timed(lambda f=filters: _filter_sql(store, f), few)),
                **_prefixed(
                    "search_",
                    _timed(lambda r=request: run_search(store, index, query, r), few),  # type: ignore[arg-type]
                ),
            }
        )
    hybrid = SearchRequest(limit=20, hybrid=True)
    for name, words in _KEYWORDS.items():
        log(f"keywords {name}")
        out.append(
            {
                "what": f"keywords {name}",
                "matches": _matches(store, words),
                **_prefixed(
                    "fts_",
                    _timed(lambda w=words: store.keyword_media(w, SearchFilters(), 100), few),
                ),
                **_prefixed(
                    "search_",
                    _timed(
                        lambda w=words: run_search(store, index, query, hybrid, keywords=w),  # type: ignore[arg-type]
                        few,
                    ),
                ),
            }
        )
    return {
        "media": rows,
        "vectors": n_vectors,
        "db_mb": round(size_mb),
        "reps": reps,
        "filter_reps": few,
        "rows": out,
    }


def _filter_sql(store: StoreReader, filters: SearchFilters) -> object:
    """The filter's statement as the query path runs it: since issue 20 it stops one past
    the most vectors a query scores exactly; before, it listed every passing vector."""
    if "limit" in inspect.signature(store.matching_vector_ids).parameters:
        from xsearch import query

        return store.matching_vector_ids(filters, limit=query._EXACT_CEILING + 1)
    return store.matching_vector_ids(filters)


def _matches(store: StoreReader, words: str) -> int:
    """Files that have any of the words (before the ubiquitous ones are left out)."""
    expr = fts.match_expression(words)
    sql = f"SELECT count(*) FROM {fts.FTS_TABLE} WHERE {fts.FTS_TABLE} MATCH ?"
    return int(store._value(sql, (expr,))) if expr else 0


def _ids(rng: np.random.Generator, n: int, k: int) -> list[int]:
    return (rng.choice(n, size=k, replace=False) + 1).tolist()


def _prefixed(prefix: str, values: dict[str, float]) -> dict[str, float]:
    return {prefix + key: value for key, value in values.items()}


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sqlite_scale", description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000, help="files in the store")
    parser.add_argument("--reps", type=int, default=100, help="repetitions of each lookup")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp"))
    parser.add_argument("--rebuild", action="store_true", help="build the store anew")
    parser.add_argument("--dim", type=int, default=16, help="stored vector dimension")
    parser.add_argument(
        "--filter-reps",
        type=int,
        help="repetitions of each filter and keyword search "
        "(default: a fifth of --reps, at least 5; fewer for a slow store)",
    )
    parser.add_argument("--store", type=Path, help="a fixture store to use (default: by --rows)")
    parser.add_argument("--out", type=Path, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    result = run(
        args.rows,
        reps=args.reps,
        workdir=args.workdir,
        rebuild=args.rebuild,
        dim=args.dim,
        store=args.store,
        filter_reps=args.filter_reps,
        log=_log,
    )
    from .report import rows_table

    print(rows_table(f"SQLite at {result['media']:,} files", result["rows"]))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
