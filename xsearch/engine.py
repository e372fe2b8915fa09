"""The Engine: the one place where store, vector index and encoder are assembled."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np

from .config import IndexOptions, Settings
from .encoders.base import Encoder, Vectors
from .encoders.export_status import refused_export
from .encoders.onnx_int8 import (
    Agreement,
    Int8Encoder,
    TextExport,
    TowerExport,
    current_export,
    export_directory,
    mark_text_not_exported,
    onnxruntime_available,
    text_not_exported,
    this_machine,
)
from .encoders.profiles import DEFAULT_PROFILE, ModelProfile, get_profile
from .errors import ConfigError, ModelError, ModelMismatchError, QueryError, StoreNotFoundError
from .filters import SearchFilters
from .hits import SearchHit
from .imagequery import load_query_image
from .index.manager import IndexManager
from .index.selector import SelectorPolicy
from .query import SearchRequest, SubsetCache, run_search
from .querylang import ImageData, ImagePath, MediaRef, Query, Text, WeightedTerm
from .store.lock import WriterLock
from .store.reader import StoreReader
from .store.records import DB_NAME, HitRow, StoreModel
from .thumbs import thumbnail

if TYPE_CHECKING:
    from .encoders.model_files import ModelFiles
    from .encoders.openclip import OpenClipEncoder
    from .indexer import FileOutcome, IndexReport, Progress
    from .store.repository import Store

__all__ = ["Engine", "StoreInfo"]

_TEXT_CACHE_SIZE = 256
_NOT_A_CLIP_TEXT_TOWER = (
    "only causal CLIP text towers and Hugging Face text towers are exported to int8; "
    "this one stays on torch"
)


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
    # recall@10 of the vector index against exact search, measured when it was built
    # (None for exact indexes, which need no measuring).
    index_recall_at_10: float | None = None
    # Tuned search knobs ("nprobe=32") and build shape ("nlist=2048") of an approximate index.
    index_params: str = ""
    index_build: str = ""
    # How this engine's settings encode images and texts for the store's model: "int8 (its
    # measured agreement)", or torch and why (see onnx_int8.py).
    image_encoding: str = ""
    text_encoding: str = ""

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
        # Queries read through the light reader; indexing opens the SQLAlchemy store.
        self._store: StoreReader | None = None
        self._writer: Store | None = None
        self._index: IndexManager | None = None
        self._text_cache: dict[str, Vectors] = {}
        self._model_checked = False
        # Serialises the encoder and its cache: a server calls in from many threads.
        self._embed_lock = threading.RLock()
        # The vectors of recently used filters (a server repeats them).
        self._subsets = SubsetCache()
        self._encoder_notices: list[str] = []
        self._on_prepare: Callable[[], None] | None = None

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
        """The int8 image path where it applies (see ``onnx_int8.py``), else torch's."""
        profile = get_profile(self.profile_name())
        if not self._int8_wanted():
            return self._torch_encoder(profile)
        directory = export_directory(
            self.settings.resolved_cache_dir, profile.name, self.settings.checkpoint
        )
        built: list[Encoder] = []

        def torch_encoder() -> Encoder:
            if not built:
                built.append(self._torch_encoder(profile))
            return built[0]

        # Where a GPU may be there, torch is asked where it would run (not the CPU: no int8).
        ask_torch = self.settings.device == "auto" and self.settings.precision == "auto"
        first = torch_encoder() if ask_torch and _accelerator_likely() else None
        if first is not None and getattr(getattr(first, "device", None), "type", "cpu") != "cpu":
            return first
        files: list[ModelFiles] = []

        def model_files() -> ModelFiles:
            """The model's files, found once (without torch) when first needed."""
            if not files:
                files.append(self._model_files(profile))
            return files[0]

        cached = current_export(directory)
        if cached is not None:
            # Everything an indexing run needs is in the record: torch is never imported.
            identity = (cached.profile, cached.fingerprint, cached.dim, cached.preprocess.size)
        elif first is not None:
            identity = (first.profile_name, first.fingerprint, first.dim, _input_size(first))
        else:
            # Found without torch: a first run exports without it where it can (below).
            found = model_files()
            identity = (profile.name, found.fingerprint, found.dim, found.image_size)

        def prepare(again: bool) -> TowerExport:
            export = None if again else current_export(directory)
            text_settled = TextExport.load(directory) or text_not_exported(directory)
            # (Re-making the image export replaces the folder, text graphs included.)
            if export is None or not text_settled:
                if self._on_prepare is not None:
                    self._on_prepare()
                if export is None:
                    refused = refused_export(
                        self.settings.resolved_cache_dir, profile.name, self.settings.checkpoint
                    )
                    export = self._export_image(model_files(), torch_encoder, directory)
                    self._encoder_notices.append(
                        f"Prepared the int8 image tower of {export.profile} for this CPU in "
                        f"{export.export_seconds:.0f} s ({export.agreement.describe()}); it "
                        f"is cached in {directory}."
                        + (f" It was made anew because {refused}." if refused else "")
                    )
                # Made here, while indexing, so that no query ever waits for an export. If
                # it fails, queries stay on torch; indexing goes on.
                try:
                    text = self._export_text(model_files(), torch_encoder, directory)
                    if text is None:
                        mark_text_not_exported(directory, _NOT_A_CLIP_TEXT_TOWER)
                except ModelError as exc:
                    text = None
                    mark_text_not_exported(directory, str(exc))
                    self._encoder_notices.append(f"{exc} Texts stay on torch.")
                if text is not None:
                    self._encoder_notices.append(
                        f"Prepared its int8 text tower too ({text.agreement.describe('texts')})."
                    )
            return export

        name, fingerprint, dim, size = identity
        return Int8Encoder(
            profile_name=name,
            fingerprint=fingerprint,
            dim=dim,
            input_size=size,
            prepare=prepare,
            torch_encoder=torch_encoder,
            export_dir=directory,
            forced=self.settings.precision == "int8",
        )

    def _model_files(self, profile: ModelProfile) -> ModelFiles:
        from .encoders.model_files import HubOptions, resolve_files

        return resolve_files(
            profile,
            self.settings.checkpoint,
            HubOptions(
                cache_dir=self.settings.model_cache_dir,
                endpoint=self.settings.hub_endpoint,
                probe_timeout=self.settings.hub_probe_timeout,
            ),
        )

    @staticmethod
    def _export_image(
        files: ModelFiles, torch_encoder: Callable[[], Encoder], directory: Path
    ) -> TowerExport:
        """The int8 image tower, written from the checkpoint where the graph writer knows
        the model (no torch), else traced from the torch model."""
        from .encoders import onnx_export

        spec = onnx_export.direct_image_spec(files)
        if spec is not None:
            return onnx_export.make_int8_export_direct(files, spec, directory)
        return onnx_export.make_int8_export(_open_clip(torch_encoder), directory)

    def _export_text(
        self, files: ModelFiles, torch_encoder: Callable[[], Encoder], directory: Path
    ) -> TextExport | None:
        """The same for the text tower; None for towers that have no int8 form here. A
        Hugging Face tower (XLM-R, ...) is traced in a child process (hf_text_export.py)."""
        from .encoders import onnx_export

        if files.text_cfg.get("hf_model_name"):
            from .encoders.hf_text_export import HFTextJob, make_int8_hf_text_export
            from .encoders.model_files import HubOptions

            hub = HubOptions(
                cache_dir=self.settings.model_cache_dir,
                endpoint=self.settings.hub_endpoint,
                probe_timeout=self.settings.hub_probe_timeout,
            )
            job = HFTextJob(files.profile.name, self.settings.checkpoint, hub, directory)
            return make_int8_hf_text_export(job)
        spec = onnx_export.direct_text_spec(files)
        if spec is not None:
            return onnx_export.make_int8_text_export_direct(files, spec, directory)
        return onnx_export.make_int8_text_export(_open_clip(torch_encoder), directory)

    def _int8_wanted(self) -> bool:
        precision, device = self.settings.precision, self.settings.device
        if precision == "int8":
            if not onnxruntime_available():
                raise ModelError(
                    "--precision int8 needs ONNX Runtime, which is not installed: "
                    "pip install onnxruntime onnx."
                )
            return True
        return precision == "auto" and device in ("auto", "cpu") and onnxruntime_available()

    def _torch_encoder(self, profile: ModelProfile) -> Encoder:
        # Imported here: torch and open_clip take seconds to import, and most commands
        # (a re-run with nothing new, info, a query answered from the cache) need no model.
        from .encoders.openclip import HubOptions, OpenClipEncoder

        return OpenClipEncoder(
            profile,
            checkpoint=self.settings.checkpoint,
            device=self.settings.device,
            precision=self.settings.precision,
            hub=HubOptions(
                cache_dir=self.settings.model_cache_dir,
                endpoint=self.settings.hub_endpoint,
                probe_timeout=self.settings.hub_probe_timeout,
            ),
        )

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
                policy=self._selector_policy(),
            )
        return self._index

    def _selector_policy(self) -> SelectorPolicy:
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
    ) -> IndexReport:
        """Add, update and remove the media below ``paths``; returns what happened.

        Only one process may index a store at a time (:class:`~xsearch.errors.StoreBusyError`).
        Ctrl-C stops soon, keeps what was committed, and sets ``report.cancelled``.
        """
        roots = [Path(p) for p in paths]
        if not roots:
            raise ConfigError("Give at least one folder or file to index.")
        from .indexer import Indexer, Progress

        started = time.monotonic()
        store = self._writable_store(create=True)

        def preparing() -> None:
            if on_progress is not None:
                on_progress(Progress("prepare", 0, 0))

        with WriterLock(self.location), self._reporting_preparation(preparing):
            if store.model() is None:
                if on_progress is not None:
                    on_progress(Progress("model", 0, 0))
                self._claim_store_for_encoder(store)

            def checked_encoder() -> Encoder:
                # Loaded only when there is something to embed: a no-change run never
                # pays for the model.
                self._claim_store_for_encoder(store)
                return self.encoder

            indexer = Indexer(
                store,
                self._index_manager(store),
                checked_encoder,
                options or IndexOptions(),
                on_outcome=on_outcome,
                on_progress=on_progress,
            )
            report = indexer.run(roots)
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
        with self._embed_lock:
            cached = self._text_cache.get(text)
            if cached is None:
                cached = self._query_encoder().encode_texts([text])[0]
                if len(self._text_cache) >= _TEXT_CACHE_SIZE:
                    self._text_cache.pop(next(iter(self._text_cache)))
                self._text_cache[text] = cached
            return cached

    def embed_image(self, image: str | os.PathLike[str] | bytes) -> Vectors:
        """The vector of an image file (a path) or of encoded image ``bytes``."""
        with self._embed_lock:
            encoder = self._query_encoder()
            size = getattr(encoder, "input_size", None)
            picture = load_query_image(image, draft_size=int(size) * 2 if size else None)
            vectors = encoder.encode_images(encoder.preprocess(picture)[None])
            first: Vectors = vectors[0]
            return first

    def embed_media(self, media_id: int) -> Vectors:
        """The mean vector of a file already in the store: "more like this"."""
        store = self.store()
        ids = [row.vector_id for row in store.media_vectors(media_id)]
        chunks = [vectors for _, vectors in store.iter_vectors(ids)] if ids else []
        if not chunks:
            raise QueryError(f"There is no file with id {media_id} in the store.")
        mean = np.vstack(chunks).mean(axis=0)
        out: Vectors = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
        return out

    def embed_query(self, query: Query) -> Vectors:
        """The normalised, weighted sum of the query's term vectors."""
        total: np.ndarray | None = None
        for term in query.terms:
            vector = self._embed_term(query, term) * np.float32(term.weight)
            total = vector if total is None else total + vector
        assert total is not None  # a Query has at least one term
        norm = float(np.linalg.norm(total))
        if norm < 1e-6:
            raise QueryError("The terms of the query cancel each other out; change a weight.")
        return (total / norm).astype(np.float32)

    def _embed_term(self, query: Query, term: WeightedTerm) -> Vectors:
        item = term.term
        try:
            if isinstance(item, Text):
                return self.embed_text(item.text)
            if isinstance(item, ImagePath):
                return self.embed_image(item.path)
            if isinstance(item, ImageData):
                return self.embed_image(item.data)
            if isinstance(item, MediaRef):
                return self.embed_media(item.media_id)
        except QueryError as exc:
            raise query.error(term, str(exc)) from exc
        raise QueryError(f"Unknown kind of query term: {item!r}")

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
        return run_search(
            store,
            self._index_manager(store),
            np.asarray(vector, dtype=np.float32),
            request,
            keywords=keywords,
            cache=self._subsets,
        )

    def warm_up(self) -> None:
        """Load the model and the vector index now, so that the first query is fast."""
        store = self.store()
        if store.model() is not None:
            self._index_manager(store).sync()
            self.embed_text("warm up")

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
        counts = store.counts()
        index = self._index_manager(store).describe() if model is not None else None
        index_file = self.location / "index.faiss"
        recall = index.get("recall_at_10") if index else None
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
            index_recall_at_10=float(recall) if isinstance(recall, int | float) else None,
            index_params=str(index.get("params", "")) if index else "",
            index_build=str(index.get("build", "")) if index else "",
            **self._encodings(model.profile if model else None),
        )

    def _encodings(self, profile: str | None) -> dict[str, str]:
        """What encodes images and texts, read from the cached export (no model is loaded)."""
        precision = self.settings.precision
        if profile is None:
            return {}
        if precision in ("fp32", "bf16"):
            return {"image_encoding": f"torch {precision}", "text_encoding": f"torch {precision}"}
        if self.settings.device not in ("auto", "cpu") or not onnxruntime_available():
            return {"image_encoding": "torch", "text_encoding": "torch"}
        cache, checkpoint = self.settings.resolved_cache_dir, self.settings.checkpoint
        directory = export_directory(cache, profile, checkpoint)
        image, text = current_export(directory), TextExport.load(directory)
        if image is None:
            why = refused_export(cache, profile, checkpoint)
            pending = (
                "torch until an indexing run exports the int8 tower ("
                + (why or f"none is cached in {directory.parent} for this CPU yet")
                + ")"
            )
            return {"image_encoding": pending, "text_encoding": pending}
        forced = precision == "int8"

        def verdict(agreement: Agreement, what: str, made_by: str) -> str:
            measured = agreement.describe(what)
            if agreement.holds or forced:
                return f"int8 ({measured}; {made_by})"
            return (
                f"torch: the int8 tower cached at {directory} misses the agreement gate on "
                f"this CPU, {this_machine()} ({agreement.shortfall()}; {measured}); "
                "--precision int8 uses it anyway"
            )

        return {
            "image_encoding": verdict(image.agreement, "pictures", image.made_by),
            "text_encoding": (
                verdict(text.agreement, "texts", text.made_by)
                if text is not None
                else f"torch ({text_not_exported(directory) or 'no int8 text export yet'})"
            ),
        }

    def info_json(self) -> str:
        return json.dumps(self.info().to_json(), indent=2)


def _input_size(encoder: Encoder) -> int:
    return int(getattr(encoder, "input_size", 224))


def _open_clip(torch_encoder: Callable[[], Encoder]) -> OpenClipEncoder:
    """The torch encoder, which a traced export is made from (torch is imported here)."""
    from .encoders.openclip import OpenClipEncoder

    source = torch_encoder()
    assert isinstance(source, OpenClipEncoder)
    return source


def _accelerator_likely() -> bool:
    """Whether torch might pick a GPU, guessed without importing torch (1.5 s).

    A CUDA or ROCm driver exposes device nodes; on macOS torch may pick MPS. Where this
    says yes, torch is asked, and the int8 CPU path is taken only if it answers "cpu".
    """
    if sys.platform == "darwin":
        return True
    return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd"))
