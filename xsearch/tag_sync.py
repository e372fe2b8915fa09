"""Keeping a store's tags in step with its files, and reading them back.

After each indexing run the files that the store's current tagger has not tagged yet (new
and changed files: a changed file gets a new row, and a file that leaves the store takes
its tags along) are tagged from their stored vectors; no picture is decoded again. The
tagger's identity (model fingerprint, vocabulary digest, calibration) is kept in
``store_meta``; when it changes (another vocabulary, ``--labels``, a new calibration),
every file is tagged anew. A moved file keeps its id, and so its tags.

A user's vocabulary file is copied into the store (``labels.tsv`` or ``labels.json``), so
that later runs, queries and ``xsearch tags`` all use the same vocabulary.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .filters import SearchFilters
from .labels import Language, Vocabulary, load_labels_file, vocabulary
from .querylang import Query, TagFilter
from .store.reader import StoreReader
from .tags import (
    DEFAULT_CALIBRATION,
    FrameVector,
    LabelBank,
    Tag,
    Tagger,
    label_banks,
    tagger_identity,
)

if TYPE_CHECKING:  # SQLAlchemy is imported only by whoever writes
    from .store.repository import Store

__all__ = [
    "FileTags",
    "TagContext",
    "TagListing",
    "keep_labels_file",
    "list_tags",
    "store_vocabulary",
    "sync_tags",
    "with_tag_filters",
]

_USER_FILES = ("labels.tsv", "labels.json")
_CHUNK = 256
# Label vectors already computed in this process, by (fingerprint, vocabulary digest): a
# server or a test session that opens many stores of one model encodes them once.
_BANKS: dict[tuple[str, str], dict[Language, LabelBank]] = {}


@dataclass(frozen=True, kw_only=True)
class TagContext:
    """What tagging a store needs from the Engine; the encoder is only asked for when the
    label vectors are not cached."""

    fingerprint: str
    vocabulary: Vocabulary
    encode_texts: Callable[[Sequence[str]], np.ndarray]
    logit_scale: Callable[[], float]


@dataclass(frozen=True)
class FileTags:
    """The tags of one file: its own first (best first), then its video segments."""

    media_id: int
    path: str
    media_type: str
    tags: tuple[Tag, ...]

    def file_tags(self, lang: Language | None = None) -> list[Tag]:
        return [t for t in self.tags if t.start is None and lang in (None, t.lang)]

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.media_id,
            "path": self.path,
            "media_type": self.media_type,
            "tags": [t.to_json() for t in self.tags if t.start is None],
            "segments": [t.to_json() for t in self.tags if t.start is not None],
        }


@dataclass(frozen=True)
class TagListing:
    """The tags of some files, and how many files carry each tag (most frequent first)."""

    files: tuple[FileTags, ...]
    # (key, language, label, number of files).
    counts: tuple[tuple[str, str, str, int], ...]

    def to_json(self) -> dict[str, object]:
        return {
            "files": [f.to_json() for f in self.files],
            "counts": [
                {"key": key, "lang": lang, "label": label, "files": n}
                for key, lang, label, n in self.counts
            ],
        }


def _user_file(location: Path) -> Path | None:
    return next((location / n for n in _USER_FILES if (location / n).is_file()), None)


def store_vocabulary(location: Path, parts: tuple[str, ...] = ()) -> Vocabulary:
    """The shipped vocabulary (the ``parts`` the store's model knows, empty: all) plus the
    user file kept in the store, if there is one."""
    user = _user_file(location)
    return vocabulary([user] if user is not None else [], parts=parts)


def keep_labels_file(location: Path, path: Path) -> None:
    """Check a user's vocabulary file and copy it into the store, replacing an earlier one."""
    load_labels_file(path)  # raises LabelsFileError, naming the line
    name = "labels.json" if path.suffix.lower() == ".json" else "labels.tsv"
    location.mkdir(parents=True, exist_ok=True)
    tmp = location / f".{name}.tmp"
    shutil.copyfile(path, tmp)
    os.replace(tmp, location / name)
    for other in _USER_FILES:
        if other != name:
            (location / other).unlink(missing_ok=True)


def _tagger(store: StoreReader, context: TagContext) -> Tagger:
    memo = (context.fingerprint, context.vocabulary.digest)
    banks = _BANKS.get(memo)
    if banks is None:
        banks = label_banks(
            context.vocabulary,
            context.encode_texts,
            cache_dir=store.location / "tags",
            fingerprint=context.fingerprint,
        )
        if len(_BANKS) >= 4:
            _BANKS.pop(next(iter(_BANKS)))
        _BANKS[memo] = banks
    return Tagger(banks, logit_scale=context.logit_scale(), calibration=DEFAULT_CALIBRATION)


def sync_tags(store: Store, context: TagContext) -> int:
    """Tag every file the current tagger has not tagged; returns how many were tagged.

    A run with nothing to tag loads no model and reads no vectors.
    """
    identity = tagger_identity(context.fingerprint, context.vocabulary.digest, DEFAULT_CALIBRATION)
    if store.tagger() != identity:
        store.reset_tags(identity)
    pending = store.untagged_media_ids()
    if not pending:
        return 0
    tagger = _tagger(store, context)
    done = 0
    for start in range(0, len(pending), _CHUNK):
        chunk = pending[start : start + _CHUNK]
        timelines = store.media_timelines(chunk)
        wanted = [row.vector_id for rows in timelines.values() for row in rows]
        vectors: dict[int, np.ndarray] = {}
        for ids, matrix in store.iter_vectors(wanted):
            vectors.update(zip(ids.tolist(), matrix, strict=True))
        results = []
        for media_id, rows in timelines.items():
            frames = [
                FrameVector(vectors[r.vector_id], r.t_start, r.t_end)
                if r.media_type == "video"
                else FrameVector(vectors[r.vector_id])
                for r in rows
                if r.vector_id in vectors
            ]
            results.append((media_id, tagger.tag_file(frames)))
        store.write_tags(results)
        done += len(results)
    return done


def list_tags(store: StoreReader, roots: Sequence[bytes] | None) -> TagListing:
    """The tags of the files at or below ``roots`` (all files for None)."""
    rows = store.media_under(roots)
    tags = store.tags_of([r.media_id for r in rows])
    files = tuple(
        FileTags(r.media_id, r.display_path, r.media_type, tuple(tags[r.media_id])) for r in rows
    )
    return TagListing(files, tuple(store.tag_counts(roots)))


def with_tag_filters(query: Query, filters: SearchFilters, vocab: Vocabulary) -> SearchFilters:
    """``filters`` with the query's ``tag:`` terms, each resolved to its concept key."""
    wanted, unwanted = list(filters.tags), list(filters.without_tags)
    for term in query.tag_filters():
        assert isinstance(term.term, TagFilter)
        key = vocab.key_for(term.term.name)
        if key is None:
            raise query.error(
                term,
                f"no tag is called {term.term.name!r}; 'xsearch tags' lists the tags of the store",
            )
        (wanted if term.weight > 0 else unwanted).append(key)
    return replace(filters, tags=tuple(wanted), without_tags=tuple(unwanted))
