"""The Engine: the one place where store, vector index and encoder are assembled."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from .config import IndexOptions, Settings
from .encoders.base import Encoder, Vectors
from .encoders.openclip import HubOptions, OpenClipEncoder
from .encoders.profiles import DEFAULT_PROFILE, get_profile
from .errors import ConfigError, ModelMismatchError, QueryError, StoreNotFoundError
from .hits import SearchHit
from .index.manager import IndexManager
from .indexer import FileOutcome, Indexer, IndexReport, Progress
from .query import SearchRequest, run_search
from .store.lock import WriterLock
from .store.repository import DB_NAME, Store, StoreModel

__all__ = ["Engine", "StoreInfo"]

_TEXT_CACHE_SIZE = 256


@dataclass(frozen=True)
class StoreInfo:
    location: str
    model: str | None
    fingerprint: str | None
    dim: int | None
    images: int
    videos: int
    vectors: int
    failures: int
    partial: int
    index_kind: str | None
    index_vectors: int | None
    db_bytes: int
    index_bytes: int

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)


class Engine:
    """Index folders and search them. Cheap to hold open; safe to query from several threads.

    >>> with Engine(Settings(store=Path("index_data"), model="toy-bilingual")) as engine:
    ...     engine.index(["photos"])
    ...     hits = engine.search("猫", limit=5)
    """

    def __init__(self, settings: Settings | None = None, *, encoder: Encoder | None = None) -> None:
        self.settings = settings or Settings()
        self._encoder = encoder
        self._store: Store | None = None
        self._index: IndexManager | None = None
        self._text_cache: dict[str, Vectors] = {}
        self._model_checked = False

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        self._index = None

    @property
    def location(self) -> Path:
        return self.settings.store

    def exists(self) -> bool:
        return (self.location / DB_NAME).exists()

    # -- collaborators ---------------------------------------------------------------------

    def store(self, *, create: bool = False) -> Store:
        if self._store is None:
            self._store = Store(self.location, create=create)
            self._check_model_name(self._store)
        return self._store

    def _check_model_name(self, store: Store) -> None:
        stored = store.model()
        requested = self.settings.model
        if (
            stored is not None
            and requested is not None
            and get_profile(requested).name != stored.profile
        ):
            raise ModelMismatchError(self.location, stored.profile, requested)

    def profile_name(self) -> str:
        """The store's model if it has one, else the requested one, else the default."""
        stored = self.store().model() if self.exists() else None
        if stored is not None:
            return stored.profile
        return get_profile(self.settings.model or DEFAULT_PROFILE).name

    @property
    def encoder(self) -> Encoder:
        """The model, loaded on first use (commands that need no model never pay for it)."""
        if self._encoder is None:
            profile = get_profile(self.profile_name())
            self._encoder = OpenClipEncoder(
                profile,
                checkpoint=self.settings.checkpoint,
                device=self.settings.device,
                hub=HubOptions(
                    cache_dir=self.settings.model_cache_dir,
                    endpoint=self.settings.hub_endpoint,
                    probe_timeout=self.settings.hub_probe_timeout,
                ),
            )
        return self._encoder

    def _claim_store_for_encoder(self, store: Store) -> StoreModel:
        """Record the encoder as the store's model, or check that it is the one recorded."""
        encoder = self.encoder
        mine = StoreModel(encoder.profile_name, encoder.fingerprint, encoder.dim)
        stored = store.model()
        if stored is None:
            store.set_model(mine)
            return mine
        if stored.fingerprint != mine.fingerprint or stored.dim != mine.dim:
            raise ModelMismatchError(
                self.location,
                f"{stored.profile} ({stored.fingerprint})",
                f"{mine.profile} ({mine.fingerprint})",
            )
        return stored

    def _index_manager(self, store: Store) -> IndexManager:
        if self._index is None:
            model = store.model()
            if model is None:
                raise StoreNotFoundError(self.location)
            self._index = IndexManager(
                store, dim=model.dim, fingerprint=model.fingerprint, kind=self.settings.index_kind
            )
        return self._index

    @property
    def notices(self) -> list[str]:
        """Things a user should be told: index repairs and rebuilds."""
        return list(self._index.notices) if self._index is not None else []

    # -- indexing --------------------------------------------------------------------------

    def index(
        self,
        paths: Sequence[str | Path],
        options: IndexOptions | None = None,
        *,
        on_outcome: Callable[[FileOutcome], None] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> IndexReport:
        """Add, update and remove the media below ``paths``; returns what happened.

        Only one process may index a store at a time (:class:`~xsearch.errors.StoreBusyError`).
        Ctrl-C stops soon, keeps what was committed, and sets ``report.cancelled``.
        """
        roots = [Path(p) for p in paths]
        if not roots:
            raise ConfigError("Give at least one folder or file to index.")
        store = self.store(create=True)
        with WriterLock(self.location):
            self._claim_store_for_encoder(store)
            indexer = Indexer(
                store,
                self._index_manager(store),
                lambda: self.encoder,
                options or IndexOptions(),
                on_outcome=on_outcome,
                on_progress=on_progress,
            )
            return indexer.run(roots)

    # -- searching -------------------------------------------------------------------------

    def embed_text(self, text: str) -> Vectors:
        """The text's vector, cached: repeated queries skip the text tower."""
        cached = self._text_cache.get(text)
        if cached is None:
            cached = self.encoder.encode_texts([text])[0]
            if len(self._text_cache) >= _TEXT_CACHE_SIZE:
                self._text_cache.pop(next(iter(self._text_cache)))
            self._text_cache[text] = cached
        return cached

    def search(
        self,
        text: str | None = None,
        *,
        vector: np.ndarray | None = None,
        limit: int = 20,
        media_type: str | None = None,
        min_score: float | None = None,
        frames: bool = False,
    ) -> list[SearchHit]:
        """Files ranked by similarity to ``text`` (or to a ready query ``vector``)."""
        request = SearchRequest(
            limit=limit, media_type=media_type, min_score=min_score, frames=frames
        )
        if vector is None and (not text or not text.strip()):
            raise QueryError("The query is empty: give some text to search for.")
        store = self.store()
        if store.model() is None:
            return []
        if vector is None and not self._model_checked:
            self._claim_store_for_encoder(store)
            self._model_checked = True
        query = vector if vector is not None else self.embed_text(text or "")
        return run_search(
            store, self._index_manager(store), np.asarray(query, dtype=np.float32), request
        )

    # -- inspection ------------------------------------------------------------------------

    def info(self) -> StoreInfo:
        store = self.store()
        model = store.model()
        counts = store.counts()
        index = self._index_manager(store).describe() if model is not None else None
        index_file = self.location / "index.faiss"
        return StoreInfo(
            location=str(self.location.resolve()),
            model=model.profile if model else None,
            fingerprint=model.fingerprint if model else None,
            dim=model.dim if model else None,
            images=counts["images"],
            videos=counts["videos"],
            vectors=counts["vectors"],
            failures=counts["failures"],
            partial=counts["partial"],
            index_kind=str(index["kind"]) if index else None,
            index_vectors=int(index["vectors"]) if index else None,  # type: ignore[call-overload]
            db_bytes=sum(p.stat().st_size for p in self.location.glob(DB_NAME + "*")),
            index_bytes=index_file.stat().st_size if index_file.exists() else 0,
        )

    def info_json(self) -> str:
        return json.dumps(self.info().to_json(), indent=2)
