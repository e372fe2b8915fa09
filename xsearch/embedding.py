"""A query's vector: each term (text, picture, stored file) embedded, weighted and summed.

Texts are cached, since a server and a user repeat them. The callers serialise access
(one encoder, one cache) with the lock they pass in.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import numpy as np

from .encoders.base import Encoder, Vectors
from .errors import QueryError
from .imagequery import load_query_image
from .querylang import ImageData, ImagePath, MediaRef, Query, Text, WeightedTerm
from .store.reader import StoreReader

__all__ = ["QueryEmbedder"]

_TEXT_CACHE_SIZE = 256


class QueryEmbedder:
    def __init__(
        self,
        encoder: Callable[[], Encoder],
        store: Callable[[], StoreReader],
        lock: threading.RLock,
    ) -> None:
        self._encoder = encoder
        self._store = store
        self._lock = lock
        self._text_cache: dict[str, Vectors] = {}

    def text(self, text: str) -> Vectors:
        with self._lock:
            cached = self._text_cache.get(text)
            if cached is None:
                cached = self._encoder().encode_texts([text])[0]
                if len(self._text_cache) >= _TEXT_CACHE_SIZE:
                    self._text_cache.pop(next(iter(self._text_cache)))
                self._text_cache[text] = cached
            return cached

    def image(self, image: str | os.PathLike[str] | bytes) -> Vectors:
        with self._lock:
            encoder = self._encoder()
            size = getattr(encoder, "input_size", None)
            picture = load_query_image(image, draft_size=int(size) * 2 if size else None)
            vectors = encoder.encode_images(encoder.preprocess(picture)[None])
            first: Vectors = vectors[0]
            return first

    def media(self, media_id: int) -> Vectors:
        store = self._store()
        ids = [row.vector_id for row in store.media_vectors(media_id)]
        chunks = [vectors for _, vectors in store.iter_vectors(ids)] if ids else []
        if not chunks:
            raise QueryError(f"There is no file with id {media_id} in the store.")
        mean = np.vstack(chunks).mean(axis=0)
        out: Vectors = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
        return out

    def query(self, query: Query) -> Vectors:
        """The normalised, weighted sum of the query's term vectors."""
        total: np.ndarray | None = None
        for term in query.vector_terms():
            vector = self._term(query, term) * np.float32(term.weight)
            total = vector if total is None else total + vector
        assert total is not None  # a Query has at least one term
        norm = float(np.linalg.norm(total))
        if norm < 1e-6:
            raise QueryError("The terms of the query cancel each other out; change a weight.")
        return (total / norm).astype(np.float32)

    def _term(self, query: Query, term: WeightedTerm) -> Vectors:
        item = term.term
        try:
            if isinstance(item, Text):
                return self.text(item.text)
            if isinstance(item, ImagePath):
                return self.image(item.path)
            if isinstance(item, ImageData):
                return self.image(item.data)
            if isinstance(item, MediaRef):
                return self.media(item.media_id)
        except QueryError as exc:
            raise query.error(term, str(exc)) from exc
        raise QueryError(f"Unknown kind of query term: {item!r}")
