"""The Engine: the one place where store, vector index and encoder are assembled."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np

from .config import IndexOptions, Settings
from .embedding import QueryEmbedder
from .encoders.assemble import EncoderAssembly
from .encoders.base import Encoder, Vectors
from .encoders.profiles import DEFAULT_PROFILE, get_profile
from .errors import ConfigError, ModelError, ModelMismatchError, QueryError, StoreNotFoundError
from .filters import SearchFilters
from .hits import SearchHit
from .index.manager import IndexManager
from .index.selector import SelectorPolicy
from .info import StoreInfo, describe_store
from .query import SearchRequest, SubsetCache, run_search
from .querylang import Query, Text
from .store.lock import WriterLock
from .store.reader import StoreReader
from .store.records import DB_NAME, HitRow, StoreModel
from .thumbs import thumbnail

if TYPE_CHECKING:
    from .index_report import FileOutcome, IndexReport, Progress
    from .labels import Vocabulary
    from .ray_pipeline import RayOptions
    from .store.repository import Store
    from .tag_sync import TagContext, TagListing

__all__ = ["Engine", "StoreInfo"]


class Engine:
    """Index folders and search them. Cheap to hold open; safe to query from several threads.

    >>> with Engine(Settings(store=Path("index_data"), model="toy-bilingual")) as engine:
    ...     engine.index(["photos"])
    ...     hits = engine.search("猫", limit=5)
    """

    def __init__(self, settings: Settings | None = None, *, encoder: Encoder | None = None) -> None:
        self.settings = settings or Settings()
        self._encoder = encoder
        # An encoder the engine built itself may be dropped and built again (see _texts).
        self._own_encoder = encoder is None
        # Queries read through the light reader; indexing opens the SQLAlchemy store.
        self._store: StoreReader | None = None
        self._writer: Store | None = None
        self._index: IndexManager | None = None
        self._model_checked = False
        # Serialises the encoder and its cache: a server calls in from many threads.
        self._embed_lock = threading.RLock()
        self._embedder = QueryEmbedder(self._query_encoder, self.store, self._embed_lock)
        # The vectors of recently used filters (a server repeats them).
        self._subsets = SubsetCache()
        self._encoder_notices: list[str] = []
        self._on_prepare: Callable[[], None] | None = None
        # Which encoder runs here, its files and how it encodes: one for the engine's life.
        self._assembly = EncoderAssembly(
            self.settings, notices=self._encoder_notices, on_prepare=self._preparing
        )
        self._vocabulary: Vocabulary | None = None

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
        for opened in {id(s): s for s in (self._store, self._writer) if s is not None}.values():
            opened.close()
        self._store = self._writer = None
        self._index = None

    @property
    def location(self) -> Path:
        return self.settings.store

    def exists(self) -> bool:
        return (self.location / DB_NAME).exists()

    # -- collaborators ---------------------------------------------------------------------

    def store(self) -> StoreReader:
        """The store, to read; a store of an older schema is migrated when first opened."""
        if self._store is None:
            reader = StoreReader(self.location)
            if not reader.schema_is_current():
                reader.close()
                reader = self._writable_store()
            self._check_model_name(reader)
            self._store = reader
        return self._store

    def _writable_store(self, *, create: bool = False) -> Store:
        """The store, to write (SQLAlchemy and, where needed, Alembic are imported here)."""
        if self._writer is None:
            from .store.repository import Store

            writer = Store(self.location, create=create)
            self._check_model_name(writer)
            self._writer = writer
        return self._writer

    def _check_model_name(self, store: StoreReader) -> None:
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
            self._encoder = self._assemble_encoder()
        return self._encoder

    def _assemble_encoder(self) -> Encoder:
        return self._assembly.encoder(get_profile(self.profile_name()))

    def _preparing(self) -> None:
        if self._on_prepare is not None:
            self._on_prepare()

    def _claim_store_for_encoder(self, store: StoreReader) -> StoreModel:
        """Record the encoder as the store's model, or check that it is the one recorded."""
        encoder = self.encoder
        mine = StoreModel(encoder.profile_name, encoder.fingerprint, encoder.dim)
        stored = store.model()
        if stored is None:
            self._writable_store().set_model(mine)
            return mine
        if stored.fingerprint != mine.fingerprint or stored.dim != mine.dim:
            raise ModelMismatchError(
                self.location,
                f"{stored.profile} ({stored.fingerprint})",
                f"{mine.profile} ({mine.fingerprint})",
            )
        return stored

    def _index_manager(self, store: StoreReader) -> IndexManager:
        if self._index is None:
            model = store.model()
            if model is None:
                raise StoreNotFoundError(self.location)
            self._index = IndexManager(
                store,
                dim=model.dim,
                fingerprint=model.fingerprint,
                kind=self.settings.index_kind,
                policy=self.selector_policy(),
            )
        return self._index

    def selector_policy(self) -> SelectorPolicy:
        """The index selector's thresholds, with the settings' memory budget."""
        budget = self.settings.index_memory_mb
        return SelectorPolicy() if budget is None else SelectorPolicy(memory_budget=budget << 20)

    def rebuild_index(self) -> StoreInfo:
        """Build the vector index anew from the store, as the settings ask, and save it.

        The kind is chosen again (or is ``Settings.index_kind``), and its search knobs are
        tuned again to recall@10 >= 0.95. Takes the writer lock: not while indexing.
        """
        store = self.store()
        if store.model() is None:
            raise StoreNotFoundError(self.location)
        with WriterLock(self.location):
            manager = self._index_manager(store)
            manager.rebuild()
            manager.save()
        return self.info()

    @property
    def notices(self) -> list[str]:
        """Things a user should be told: index repairs and rebuilds, model preparation."""
        found = list(self._encoder_notices)
        found += getattr(self._encoder, "notices", [])
        return found + (list(self._index.notices) if self._index is not None else [])

    # -- indexing --------------------------------------------------------------------------

    def index(
        self,
        paths: Sequence[str | Path],
        options: IndexOptions | None = None,
        *,
        on_outcome: Callable[[FileOutcome], None] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        ray: str | RayOptions | None = None,
    ) -> IndexReport:
        """Add, update and remove the media below ``paths``; returns what happened.

        Only one process may index a store at a time (:class:`~xsearch.errors.StoreBusyError`).
        Ctrl-C stops soon, keeps what was committed, and sets ``report.cancelled``.
        ``ray`` ("local", "auto", "ray://host:port", or :class:`RayOptions`) decodes and
        embeds on a Ray cluster (:mod:`xsearch.ray_pipeline`); this process still plans and
        commits, and the result is the same as a local run's.
        """
        if ray is not None:
            from .ray_pipeline import RayOptions, connect

            ray_options = ray if isinstance(ray, RayOptions) else RayOptions(address=ray)
            with connect(ray_options) as connected:
                return self._index_run(
                    paths, options, on_outcome, on_progress, (connected, ray_options)
                )
        return self._index_run(paths, options, on_outcome, on_progress, None)

    def _index_run(
        self,
        paths: Sequence[str | Path],
        options: IndexOptions | None,
        on_outcome: Callable[[FileOutcome], None] | None,
        on_progress: Callable[[Progress], None] | None,
        ray: tuple[object, RayOptions] | None,
    ) -> IndexReport:
        roots = [Path(p) for p in paths]
        if not roots:
            raise ConfigError("Give at least one folder or file to index.")
        from .index_report import Progress
        from .indexer import Indexer

        started = time.monotonic()
        options = options or IndexOptions()
        store = self._writable_store(create=True)

        def preparing() -> None:
            if on_progress is not None:
                on_progress(Progress("prepare", 0, 0))

        with WriterLock(self.location), self._reporting_preparation(preparing):
            if options.labels is not None:
                from .tag_sync import keep_labels_file

                keep_labels_file(self.location, options.labels)
                self._vocabulary = None
            if store.model() is None:
                if on_progress is not None:
                    on_progress(Progress("model", 0, 0))
                self._claim_store_for_encoder(store)

            def checked_encoder() -> Encoder:
                # Loaded only when there is something to embed: a no-change run never
                # pays for the model.
                self._claim_store_for_encoder(store)
                return self.encoder

            stage = None
            if ray is not None:
                from .ray_pipeline import RayStage

                stage = RayStage(ray[0], self.settings, options, ray[1])
            indexer = Indexer(
                store,
                self._index_manager(store),
                checked_encoder,
                options,
                on_outcome=on_outcome,
                on_progress=on_progress,
                embed_stage=stage,
            )
            report = indexer.run(roots)
            if stage is not None:
                report.work_by_node = stage.work_by_node
            if options.tag and not report.cancelled:
                try:
                    report.tagged = self._sync_tags(store, on_progress)
                except KeyboardInterrupt:
                    report.cancelled = True  # the files tagged so far keep their tags
        report.seconds = time.monotonic() - started  # loading the model included
        return report

    def prepare_model(self) -> str:
        """Make the model ready on this machine, as a first indexing run does before its
        first batch: its files found (downloaded where missing) and, on a CPU, its int8 towers
        made and checked once per model and machine. Returns what encodes images ("int8",
        "bf16", "fp32"); ``notices`` say what was prepared."""
        encoder = self.encoder
        encoder.preprocess  # noqa: B018 - resolving the image path makes the one-time export
        return str(getattr(encoder, "image_precision", "fp32"))

    @contextlib.contextmanager
    def _reporting_preparation(self, report: Callable[[], None] | None) -> Iterator[None]:
        """While indexing, a one-time export of the model is reported as its own stage."""
        self._on_prepare = report
        try:
            yield
        finally:
            self._on_prepare = None

    # -- searching -------------------------------------------------------------------------

    def _query_encoder(self) -> Encoder:
        """The encoder, once checked against the store's model (a query must match it)."""
        with self._embed_lock:
            # A store without a model yet (its first indexing still running) is checked later.
            if not self._model_checked and self.exists() and self.store().model() is not None:
                self._claim_store_for_encoder(self.store())
                self._model_checked = True
            return self.encoder

    def embed_text(self, text: str) -> Vectors:
        """The text's vector, cached: repeated queries skip the text tower."""
        return self._embedder.text(text)

    def embed_image(self, image: str | os.PathLike[str] | bytes) -> Vectors:
        """The vector of an image file (a path) or of encoded image ``bytes``."""
        return self._embedder.image(image)

    def embed_media(self, media_id: int) -> Vectors:
        """The mean vector of a file already in the store: "more like this"."""
        return self._embedder.media(media_id)

    def embed_query(self, query: Query) -> Vectors:
        """The normalised, weighted sum of the query's term vectors."""
        return self._embedder.query(query)

    def search(
        self,
        query: str | Query | None = None,
        *,
        vector: np.ndarray | None = None,
        limit: int = 20,
        media_type: str | None = None,
        min_score: float | None = None,
        frames: bool = False,
        filters: SearchFilters | None = None,
        hybrid: bool = False,
        collapse: bool = False,
    ) -> list[SearchHit]:
        """Files ranked by similarity to ``query`` (or to a ready query ``vector``).

        A ``str`` is searched for as literal text; ``Query.parse(text)`` reads the query
        language (weights, images, ``id:N``, ``+`` and ``-``). ``media_type`` and
        ``min_score`` are shorthands for the fields of ``filters``. ``hybrid`` fuses
        keyword matches on path words and EXIF text; ``collapse`` folds near-duplicates.
        """
        if isinstance(query, str):
            query = Query.of(Text(query)) if query.strip() else None
        if vector is None and query is None:
            raise QueryError("The query is empty: give some text to search for.")
        merged = filters or SearchFilters()
        if media_type is not None:
            merged = replace(merged, media_type=media_type)
        if min_score is not None:
            merged = replace(merged, min_score=min_score)
        if query is not None and query.tag_filters():
            merged = self._with_tag_filters(query, merged)
        request = SearchRequest(
            limit=limit, filters=merged, frames=frames, hybrid=hybrid, collapse=collapse
        )
        store = self.store()
        if store.model() is None:
            return []
        if vector is None:
            assert query is not None
            vector = self.embed_query(query)
        keywords = query.keyword_text() if query is not None else ""
        hits = run_search(
            store,
            self._index_manager(store),
            np.asarray(vector, dtype=np.float32),
            request,
            keywords=keywords,
            cache=self._subsets,
        )
        tags = store.tags_of([h.id for h in hits]) if hits else {}
        return [
            replace(h, tags=tuple(t for t in tags[h.id] if t.start is None)) if tags[h.id] else h
            for h in hits
        ]

    def warm_up(self) -> None:
        """Load the model and the vector index now, so that the first query is fast."""
        store = self.store()
        if store.model() is not None:
            self._index_manager(store).sync()
            self.embed_text("warm up")

    # -- tags ------------------------------------------------------------------------------

    def vocabulary(self) -> Vocabulary:
        """The tag vocabulary of this store: the shipped one plus a ``--labels`` file."""
        if self._vocabulary is None:
            from .tag_sync import store_vocabulary

            parts = get_profile(self.profile_name()).tag_vocabulary
            self._vocabulary = store_vocabulary(self.location, parts)
        return self._vocabulary

    def tags(self, path: str | os.PathLike[str] | None = None) -> TagListing:
        """The tags of the file at ``path``, or of every file below that folder (the whole
        store for None), with the number of files that carry each tag."""
        from .filters import under_roots
        from .tag_sync import list_tags

        return list_tags(self.store(), under_roots([path]) if path is not None else None)

    def _sync_tags(self, store: Store, on_progress: Callable[[Progress], None] | None) -> int:
        from .index_report import Progress
        from .tag_sync import sync_tags

        if on_progress is not None:
            on_progress(Progress("tag", 0, 0))
        return sync_tags(store, self._tag_context(store))

    def _tag_context(self, store: StoreReader) -> TagContext:
        from .tag_sync import TagContext
        from .tags import logit_scale_of

        model = store.model()
        assert model is not None  # tagging follows indexing, which records the model

        def logit_scale() -> float:
            profile = get_profile(self.profile_name())
            try:
                checkpoint = self._assembly.model_files(profile).checkpoint
            except ModelError:
                checkpoint = None  # a model without files here (a test's fake): CLIP's 100
            return logit_scale_of(checkpoint)

        return TagContext(
            fingerprint=model.fingerprint,
            vocabulary=self.vocabulary(),
            encode_texts=self._encode_label_texts,
            logit_scale=logit_scale,
        )

    def _encode_label_texts(self, texts: Sequence[str]) -> Vectors:
        """Label prompts through the text tower. After indexing, the image tower is not
        needed again: an encoder the engine built is dropped first, so that one process
        never holds both towers (the peak memory of ``xsearch index`` stays one tower)."""
        if self._own_encoder and self._encoder is not None:
            self._encoder_notices += list(getattr(self._encoder, "notices", []))
            self._encoder = None
            self._own_encoder = False  # once: the next one serves texts from now on
        return self._query_encoder().encode_texts(texts)

    def _with_tag_filters(self, query: Query, filters: SearchFilters) -> SearchFilters:
        from .tag_sync import with_tag_filters

        return with_tag_filters(query, filters, self.vocabulary())

    # -- files, for the server ---------------------------------------------------------------

    def media(self, media_id: int) -> HitRow | None:
        """A file in the store by id (None when there is none)."""
        return self.store().media_by_id(media_id)

    def thumbnail(self, media_id: int, *, size: int = 320, t: float | None = None) -> bytes:
        """A cached JPEG thumbnail of a file in the store; videos show the frame at ``t``."""
        media = self.media(media_id)
        if media is None:
            raise QueryError(f"There is no file with id {media_id} in the store.")
        return thumbnail(self.location, media, size=size, t=t)

    # -- inspection ------------------------------------------------------------------------

    def info(self) -> StoreInfo:
        store = self.store()
        model = store.model()
        return describe_store(
            self.location,
            store,
            self._index_manager(store) if model is not None else None,
            self._assembly.encodings(model.profile if model else None),
        )

    def info_json(self) -> str:
        return json.dumps(self.info().to_json(), indent=2)
