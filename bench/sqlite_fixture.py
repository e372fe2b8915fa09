"""A synthetic store of millions of files, for measuring SQLite at scale (a bench fixture).

The schema is the real one: the store is created by ``Store(create=True)``, which runs the
Alembic migrations. The rows, though, are bulk-inserted with plain ``sqlite3``
``executemany`` in large transactions, with the secondary indexes dropped during the load and
made again after it, from the migrations' own definitions. This is a fixture, not a writer:
10M files through the indexer would mean decoding and embedding 10M pictures, and what is
measured here is reading. (The indexer's own speed is ``bench/indexing.py``'s.)

What it holds, per ``media`` row: a realistic path (``<root>/<year>/<yyyy-mm-dd> <event>
<n>/IMG_<n>.jpg``, 1,000 files a folder), a size, an mtime, a capture time for most photos,
a content hash; a share of videos with several frame vectors each (``t``, ``t_start``,
``t_end``); zero-shot tags with Zipf-distributed concepts and the ``tagged_media`` rows; the
FTS5 document (path words, cut by xsearch's own splitter, and tag words). Embeddings are
``dim`` float32s, small by default (16): a 512-d store is 2 KB a vector, 20 GB at 10M, and
the lookups measured here touch one table page per row either way.

With ``files_root`` the media rows are the files of :func:`make_files` (tiny files of a few
bytes, with deterministic mtimes), so that ``xsearch index <files_root>`` finds every file
unchanged: the stat fast path of a no-change re-index.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xsearch.store.fts import document_words
from xsearch.store.records import DB_NAME
from xsearch.store.repository import Store

__all__ = ["FIXTURE_FINGERPRINT", "Fixture", "build_store", "folders", "make_files"]

FIXTURE_FINGERPRINT = "bench-sqlite-fixture"
PER_FOLDER = 1000
_EVENTS = (
    "wedding", "kyoto trip", "京都", "birthday", "beach", "hiking", "christmas", "family",
    "zoo", "paris", "concert", "graduation", "garden", "snow", "海滩", "road trip",
)  # fmt: skip
_WORDS = (
    "beach", "dog", "cat", "sunset", "mountain", "car", "food", "flower", "snow", "child",
    "city", "night", "bird", "tree", "boat", "cake", "bicycle", "horse", "bridge", "lake",
)  # fmt: skip
_N_CONCEPTS = 500
_BASE_TIME = 1_262_304_000  # 2010-01-01 UTC
_YEAR = 31_556_952
_T0_FILES_NS = 1_700_000_000 * 10**9
Log = Callable[[str], None]


@dataclass(frozen=True)
class Fixture:
    """What :func:`build_store` made: counts, and the keys and words worth querying for."""

    location: Path
    media: int
    vectors: int
    videos: int
    tags: int
    seconds: float
    root: bytes
    concepts: tuple[str, ...]  # concept keys, most frequent first


def concept_keys() -> tuple[str, ...]:
    """Tag concept keys, most frequent first (real words, then numbered ones)."""
    return _WORDS + tuple(f"concept{i:03d}" for i in range(_N_CONCEPTS - len(_WORDS)))


def folders(n_media: int, root: bytes) -> list[bytes]:
    """The folder of each block of ``PER_FOLDER`` files, in byte order (as ids are given)."""
    n = -(-n_media // PER_FOLDER)
    names = []
    for i in range(n):
        year = 2010 + (i * 16) // max(n, 1)
        day = (i * 7919) % 365
        month, mday = day // 31 + 1, day % 28 + 1
        event = _EVENTS[i % len(_EVENTS)]
        names.append(f"{year}/{year}-{month:02d}-{mday:02d} {event} {i:05d}".encode())
    return [root.rstrip(b"/") + b"/" + name for name in sorted(names)]


def _file_name(n: int, video: bool) -> bytes:
    return f"VID_{n:08d}.mp4".encode() if video else f"IMG_{n:08d}.jpg".encode()


def make_files(root: Path, n_files: int, *, video_share: float = 0.02, seed: int = 0) -> None:
    """Tiny files (a few bytes) laid out as :func:`folders` says, with deterministic mtimes.

    Already-made files are kept (the second call costs a walk), so it runs once per machine.
    """
    rng = np.random.default_rng(seed)
    videos = rng.random(n_files) < video_share
    for f_index, folder in enumerate(folders(n_files, os.fsencode(root))):
        os.makedirs(folder, exist_ok=True)
        start = f_index * PER_FOLDER
        for n in range(start, min(start + PER_FOLDER, n_files)):
            path = folder + b"/" + _file_name(n, bool(videos[n]))
            if os.path.exists(path):
                continue
            with open(path, "wb") as fh:
                fh.write(b"x" * (n % 7 + 1))
            os.utime(path, ns=(_T0_FILES_NS + n, _T0_FILES_NS + n))


def build_store(
    location: Path,
    n_media: int,
    *,
    dim: int = 16,
    video_share: float = 0.02,
    tags_per_file: float = 1.5,
    files_root: Path | None = None,
    seed: int = 0,
    log: Log = lambda _m: None,
) -> Fixture:
    """Create a store at ``location`` (which must not exist) holding ``n_media`` files."""
    started = time.perf_counter()
    Store(location, create=True).close()  # the real schema, through the migrations
    conn = sqlite3.connect(location / DB_NAME, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -1000000")
    # Made again after the load, from the migrations' own definitions: sorting once is
    # much faster than inserting 10M random keys.
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
    ).fetchall()
    for name, _sql in indexes:
        conn.execute(f"DROP INDEX {name}")
    root = os.fsencode(files_root) if files_root is not None else b"/data/photos"
    keys = concept_keys()
    counts = {"vectors": 0, "videos": 0, "tags": 0}
    rng = np.random.default_rng(seed)
    videos = rng.random(n_media) < video_share
    blocks = _blocks(n_media, root, files_root is not None, videos, dim, rng, keys, tags_per_file)
    for done, rows in blocks:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO media VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows[0])
        conn.executemany("INSERT INTO vectors VALUES (?,?,?,?,?,?)", rows[1])
        conn.executemany(
            "INSERT INTO tags(media_id, seg_start, seg_end, lang, label_key, label, score) "
            "VALUES (?,?,?,?,?,?,?)",
            rows[2],
        )
        conn.executemany("INSERT INTO tagged_media VALUES (?)", ((r[0],) for r in rows[0]))
        conn.executemany("INSERT INTO media_fts(rowid, words, tags) VALUES (?,?,?)", rows[3])
        conn.execute("COMMIT")
        counts["vectors"] += len(rows[1])
        counts["videos"] += sum(1 for r in rows[0] if r[6] == "video")
        counts["tags"] += len(rows[2])
        log(f"fixture: {done:,} of {n_media:,} files")
    log("fixture: indexes")
    for _name, sql in indexes:
        conn.execute(sql)
    _write_meta(conn, dim)
    conn.execute("INSERT INTO media_fts(media_fts) VALUES ('optimize')")
    conn.execute("ANALYZE")
    conn.close()
    return Fixture(
        location,
        n_media,
        counts["vectors"],
        counts["videos"],
        counts["tags"],
        time.perf_counter() - started,
        root,
        keys,
    )


def _write_meta(conn: sqlite3.Connection, dim: int) -> None:
    model = {"profile": "mclip-b32", "fingerprint": FIXTURE_FINGERPRINT, "dim": dim}
    conn.execute("BEGIN")
    for key, value in (("model", json.dumps(model)), ("generation", "1")):
        conn.execute("INSERT OR REPLACE INTO store_meta VALUES (?, ?)", (key, value))
    conn.execute("COMMIT")


def _blocks(
    n_media: int,
    root: bytes,
    real_files: bool,
    videos: np.ndarray,
    dim: int,
    rng: np.random.Generator,
    keys: tuple[str, ...],
    tags_per_file: float,
) -> Iterator[tuple[int, tuple[list, list, list, list]]]:  # type: ignore[type-arg]
    """Rows of media, vectors, tags and FTS documents, 100 folders at a time."""
    zipf = 1.0 / np.arange(1, len(keys) + 1)
    zipf /= zipf.sum()
    media: list[tuple[object, ...]] = []
    vectors: list[tuple[object, ...]] = []
    tags: list[tuple[object, ...]] = []
    docs: list[tuple[object, ...]] = []
    vector_id = 0
    for f_index, folder in enumerate(folders(n_media, root)):
        shown_folder = os.fsdecode(folder)
        folder_words = document_words(shown_folder)
        year = int(folder[len(root) + 1 : len(root) + 5])
        start = f_index * PER_FOLDER
        stop = min(start + PER_FOLDER, n_media)
        n = stop - start
        when = _BASE_TIME + (year - 2010) * _YEAR + rng.integers(0, _YEAR, n)
        emb = rng.standard_normal((n * 4, dim), dtype=np.float32)
        n_tags = rng.poisson(tags_per_file, n)
        picks = rng.choice(len(keys), size=int(n_tags.sum()) + 1, p=zipf)
        pick = 0
        for j, m in enumerate(range(start, stop)):
            media_id = m + 1
            video = bool(videos[m])
            name = _file_name(m, video)
            path = folder + b"/" + name
            mtime_ns = _T0_FILES_NS + m if real_files else int(when[j]) * 10**9
            size = m % 7 + 1 if real_files else int(rng.integers(500_000, 8_000_000))
            captured = None if video or j % 5 == 0 else float(when[j] - 3600)
            media.append(
                (media_id, path, shown_folder + "/" + name.decode(), size, mtime_ns,
                 os.urandom(32).hex(), "video" if video else "image",
                 1920 if video else 4032, 1080 if video else 3024,
                 float(j % 60 + 5) if video else None, 30.0 if video else None,
                 captured, "partial" if m % 997 == 0 else "ok", None, 1.7e9)
            )  # fmt: skip
            frames = (j % 20 + 2) if video else 1
            for f in range(frames):
                vector_id += 1
                t = (f * 2.0, f * 2.0, f * 2.0 + 2.0) if video else (None, None, None)
                vectors.append((vector_id, media_id, *t, emb[(j * 4 + f) % (n * 4)].tobytes()))
            labels = [keys[k] for k in picks[pick : pick + n_tags[j]]]
            pick += n_tags[j]
            tags += [(media_id, None, None, "en", k, k, 0.3) for k in dict.fromkeys(labels)]
            words = folder_words + " " + document_words(name.decode())
            docs.append((media_id, words, document_words(" ".join(labels)) or None))
        if (f_index + 1) % 100 == 0 or stop == n_media:
            yield stop, (media, vectors, tags, docs)
            media, vectors, tags, docs = [], [], [], []
