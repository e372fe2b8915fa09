"""Keeping the vector index (a cache) in step with the store (the truth)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ..store.repository import Store, WriteResult
from .base import IndexMeta, SearchResult, VectorIndex, read_meta, write_meta
from .exact import NumpyIndex
from .faiss_index import FaissIndex, faiss_available

__all__ = ["INDEX_FILE", "META_FILE", "IndexManager"]

INDEX_FILE = "index.faiss"
META_FILE = "index.json"


class IndexManager:
    """Loads, repairs, updates, searches and saves the vector index of one store.

    Thread-safe. ``notices`` collects what a user should be told (repairs, rebuilds).
    """

    def __init__(self, store: Store, *, dim: int, fingerprint: str, kind: str = "auto") -> None:
        self.store = store
        self.dim = dim
        self.fingerprint = fingerprint
        self.requested_kind = kind
        self.notices: list[str] = []
        self._lock = threading.RLock()
        self._index: VectorIndex | None = None
        self._generation = -1
        self._meta: IndexMeta | None = None

    @property
    def index_path(self) -> Path:
        return self.store.location / INDEX_FILE

    @property
    def meta_path(self) -> Path:
        return self.store.location / META_FILE

    def _new_index(self) -> VectorIndex:
        if self.requested_kind == "numpy" or not faiss_available():
            return NumpyIndex(self.dim)
        return FaissIndex.flat(self.dim)

    def _load(self) -> None:
        meta = read_meta(self.meta_path)
        index: VectorIndex | None = None
        if meta is not None and self.index_path.exists():
            if meta.dim != self.dim or meta.fingerprint != self.fingerprint:
                self.notices.append("The vector index was built for another model; rebuilding it.")
            else:
                try:
                    index = self._read(meta.kind)
                except Exception as exc:  # a torn or foreign file: the store can rebuild it
                    self.notices.append(
                        f"The vector index file could not be read ({exc}); rebuilding it."
                    )
        elif self.index_path.exists() or meta is not None:
            self.notices.append(
                "The vector index is incomplete on disk; rebuilding it from the store."
            )
        self._index = index if index is not None else self._new_index()
        self._meta = meta if index is not None else None
        self._generation = meta.generation if index is not None and meta is not None else -1

    def _read(self, kind: str) -> VectorIndex:
        if kind == "numpy":
            return NumpyIndex.load(self.index_path, self.dim)
        return FaissIndex.load(self.index_path, kind)

    def sync(self) -> VectorIndex:
        """The index, first brought in step with the store if the store moved on."""
        with self._lock:
            if self._index is None:
                self._load()
            assert self._index is not None
            generation = self.store.generation()
            if generation != self._generation:
                self._reconcile(self._index, generation)
            return self._index

    def _reconcile(self, index: VectorIndex, generation: int) -> None:
        """Add vectors the index lacks and drop ids the store no longer has."""
        stored = self.store.vector_ids()
        held = index.ids()
        extra = np.setdiff1d(held, stored, assume_unique=True)
        missing = np.setdiff1d(stored, held, assume_unique=True)
        if len(extra):
            index.remove(extra)
        for ids, vectors in self.store.iter_vectors(missing.tolist() if len(held) else None):
            index.add(ids, vectors)
        if self._generation >= 0 and (len(extra) or len(missing)):
            self.notices.append(
                f"Repaired the vector index from the store: added {len(missing)}, "
                f"removed {len(extra)} vectors."
            )
        self._generation = generation

    def apply(self, result: WriteResult) -> None:
        """Mirror a committed store write (cheaply, when it is the next one we expect)."""
        with self._lock:
            if self._index is None or self._generation != result.generation - 1:
                # Not loaded yet, or another commit slipped in: reconciling covers this write.
                self.sync()
                return
            if result.removed_ids:
                self._index.remove(np.asarray(result.removed_ids, dtype=np.int64))
            if result.added_ids:
                self._index.add(
                    np.asarray(result.added_ids, dtype=np.int64),
                    np.vstack(result.added_vectors).astype(np.float32),
                )
            self._generation = result.generation

    def save(self) -> None:
        """Write the index atomically, then its sidecar (a stale sidecar only causes a re-check)."""
        with self._lock:
            index = self.sync()
            index.save(self.index_path)
            write_meta(
                self.meta_path,
                IndexMeta(
                    kind=index.kind,
                    dim=self.dim,
                    count=len(index),
                    generation=self._generation,
                    fingerprint=self.fingerprint,
                ),
            )

    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        with self._lock:
            return self.sync().search(queries, k)

    def describe(self) -> dict[str, object]:
        with self._lock:
            index = self.sync()
            return {"kind": index.kind, "vectors": len(index), "generation": self._generation}
