"""Keeping the vector index (a cache) in step with the store (the truth).

The manager picks the index kind (:mod:`.selector`), builds it from the store
(:mod:`.build`), mirrors every committed write into it, rebuilds it when the collection
outgrows it or tombstones pile up, and saves it with a sidecar that records how it was built
and the recall it measured.

Rebuilds triggered by writes run on a background thread while the old index keeps
serving; when the new one is ready it is swapped in and brought up to date by the same
reconciliation that repairs a stale index file. ``save`` waits for a running rebuild.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..store.reader import StoreReader
from ..store.records import WriteResult
from .base import IndexMeta, SearchResult, VectorIndex, read_meta, write_meta
from .build import BuiltIndex, build_index, source_reranker
from .exact import NumpyIndex
from .faiss_index import FaissIndex, faiss_gpus
from .ondisk import DISK_KIND, OnDiskIndex, remove_other_builds
from .selector import IndexSpec, SelectorPolicy, canonical_kind, outgrown, spec_for_kind
from .torch_index import TorchExactIndex, torch_gpu_available

__all__ = ["INDEX_FILE", "META_FILE", "IndexManager"]

INDEX_FILE = "index.faiss"
META_FILE = "index.json"


class IndexManager:
    """Loads, repairs, updates, searches, rebuilds and saves the vector index of one store.

    Thread-safe. ``notices`` collects what a user should be told (repairs, rebuilds).
    ``kind`` is "auto" (the selector chooses) or one of :data:`.selector.KINDS`.
    """

    def __init__(
        self,
        store: StoreReader,
        *,
        dim: int,
        fingerprint: str,
        kind: str = "auto",
        policy: SelectorPolicy | None = None,
        background: bool = True,
    ) -> None:
        self.store = store
        self.dim = dim
        self.fingerprint = fingerprint
        self.requested_kind = canonical_kind(kind)
        self.policy = policy or SelectorPolicy()
        self.background = background
        self.notices: list[str] = []
        self._lock = threading.RLock()
        self._index: VectorIndex | None = None
        self._built: BuiltIndex | None = None
        self._generation = -1
        self._rebuild_thread: threading.Thread | None = None

    @property
    def index_path(self) -> Path:
        return self.store.location / INDEX_FILE

    @property
    def meta_path(self) -> Path:
        return self.store.location / META_FILE

    # -- choosing and building -------------------------------------------------------------

    def _gpu_exact(self) -> bool:
        """Exact search would run on a GPU through torch (faiss itself has no GPU here)."""
        if faiss_gpus() > 0:
            return False
        return torch_gpu_available(import_torch=self.requested_kind == "exact-torch")

    def _wanted(self, count: int) -> IndexSpec:
        return spec_for_kind(
            self.requested_kind, count, self.dim, self.policy, gpu=self._gpu_exact()
        )

    def _serve(self, index: VectorIndex) -> VectorIndex:
        """Put an exact CPU index behind torch on the GPU when that is where search runs."""
        if isinstance(index, TorchExactIndex) or index.kind not in ("flat", "numpy"):
            return index
        if self.requested_kind == "exact-torch":
            device = "cuda" if torch_gpu_available(import_torch=True) else "cpu"
            return TorchExactIndex.mirror(index, self.dim, device=device)
        if self._gpu_exact():
            return TorchExactIndex.mirror(index, self.dim, device="cuda")
        return index

    def _build(self) -> BuiltIndex:
        spec = self._wanted(len(self.store.vector_ids()))
        built = build_index(self.store, self.dim, spec, self.policy, path=self.index_path)
        if built.fell_back_from:
            self.notices.append(
                f"A {', '.join(built.fell_back_from)} index could not reach recall@10 "
                f"{self.policy.target_recall}; using {built.spec.kind} instead."
            )
        elif built.recall is not None and built.recall < self.policy.target_recall:
            # The on-disk kind has no fallback within the budget: say so rather than serve
            # a lower recall in silence.
            self.notices.append(
                f"The {built.spec.kind} index reaches recall@10 {built.recall:.3f}, under the "
                f"target {self.policy.target_recall}: some searches may miss a best match. "
                "A larger --index-memory (XSEARCH_INDEX_MEMORY_MB) lets a more exact kind fit."
            )
        return built

    def _install(self, built: BuiltIndex, generation: int) -> None:
        self._built = built
        self._index = self._serve(built.index)
        self._generation = generation

    # -- loading and reconciling -----------------------------------------------------------

    def _load(self) -> None:
        meta = read_meta(self.meta_path)
        index: VectorIndex | None = None
        if meta is not None and self.index_path.exists():
            if meta.dim != self.dim or meta.fingerprint != self.fingerprint:
                self.notices.append("The vector index was built for another model; rebuilding it.")
            elif self.requested_kind != "auto" and not _same_kind(meta.kind, self.requested_kind):
                self.notices.append(
                    f"The vector index is {meta.kind}, but {self.requested_kind} was asked "
                    "for; rebuilding it."
                )
            else:
                try:
                    index = self.read_saved(meta.kind)
                except Exception as exc:  # a torn or foreign file: the store can rebuild it
                    self.notices.append(
                        f"The vector index file could not be read ({exc}); rebuilding it."
                    )
        elif self.index_path.exists() or meta is not None:
            self.notices.append(
                "The vector index is incomplete on disk; rebuilding it from the store."
            )
        if index is not None and meta is not None:
            _apply_params(index, meta.params)
            self._install(
                BuiltIndex(index, _spec_from(meta), meta.recall_at_10, _parse(meta.params)),
                meta.generation,
            )
            return
        generation = self.store.generation()
        self._install(self._build(), generation)

    def read_saved(self, kind: str) -> VectorIndex:
        """The index file on disk as it is, without reconciling it with the store."""
        if kind == "numpy":
            return NumpyIndex.load(self.index_path, self.dim)
        if kind == DISK_KIND:
            return OnDiskIndex.load(self.index_path)
        index = FaissIndex.load(self.index_path, kind)
        if kind == "ivfpq":
            index.reranker = source_reranker(self.store)
        return index

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

    # -- writes and rebuilds ---------------------------------------------------------------

    def apply(self, result: WriteResult) -> None:
        """Mirror a committed store write (cheaply, when it is the next one we expect)."""
        with self._lock:
            if self._index is None or self._generation != result.generation - 1:
                # Not loaded yet, or another commit slipped in: reconciling covers this write.
                self.sync()
            else:
                if result.removed_ids:
                    self._index.remove(np.asarray(result.removed_ids, dtype=np.int64))
                if result.added_ids:
                    self._index.add(
                        np.asarray(result.added_ids, dtype=np.int64),
                        np.vstack(result.added_vectors).astype(np.float32),
                    )
                self._generation = result.generation
            if self._needs_rebuild():
                self._start_rebuild()

    def _needs_rebuild(self) -> bool:
        if self._index is None or self._built is None:
            return False
        count = len(self._index)
        if outgrown(
            self._built.spec,
            count,
            self.dim,
            self.policy,
            auto=self.requested_kind == "auto",
            gpu=self._gpu_exact(),
        ):
            return True
        # Tombstones, and for the on-disk kind the vectors added since its build (held in
        # memory), are paid back by a rebuild.
        debt = int(getattr(self._index, "tombstones", 0)) + int(getattr(self._index, "unmerged", 0))
        return debt > self.policy.compact_above * max(count, 1)

    def _start_rebuild(self) -> None:
        if self._rebuild_thread is not None and self._rebuild_thread.is_alive():
            return
        if not self.background:
            self.rebuild()
            return
        self._rebuild_thread = threading.Thread(
            target=self._rebuild_quietly, name="xsearch-index-rebuild", daemon=True
        )
        self._rebuild_thread.start()

    def _rebuild_quietly(self) -> None:
        try:
            self.rebuild()
        except Exception as exc:  # the old index keeps serving; save() retries in the open
            self.notices.append(f"Rebuilding the vector index in the background failed: {exc}")

    def rebuild(self) -> None:
        """Build a fresh index from the store (kind chosen anew) and swap it in.

        The old index serves searches meanwhile; writes committed during the build are
        picked up by reconciliation right after the swap.
        """
        generation = self.store.generation()
        built = self._build()
        with self._lock:
            previous = self._built.spec.kind if self._built is not None else None
            self._install(built, generation)
            if previous is not None and previous != built.spec.kind:
                self.notices.append(
                    f"The vector index was rebuilt as {built.spec.kind} "
                    f"({len(built.index)} vectors)."
                )

    def wait(self) -> None:
        """Wait for a background rebuild to finish."""
        thread = self._rebuild_thread
        if thread is not None:
            thread.join()
        self._rebuild_thread = None

    def save(self) -> None:
        """Write the index atomically, then its sidecar (a stale sidecar only causes a re-check).

        A rebuild that is due (or running) is finished first, so the saved index is always
        the kind the collection calls for.
        """
        self.wait()
        with self._lock:
            self.sync()
            if self._needs_rebuild():
                self.rebuild()
            index = self.sync()
            built = self._built
            assert built is not None
            stored = index.base if isinstance(index, TorchExactIndex) else index
            stored.save(self.index_path)
            if not isinstance(stored, OnDiskIndex):
                # The files of an on-disk build this one replaced (it removes them itself).
                remove_other_builds(self.index_path, keep="")
            write_meta(
                self.meta_path,
                IndexMeta(
                    kind=stored.kind,
                    dim=self.dim,
                    count=len(index),
                    generation=self._generation,
                    fingerprint=self.fingerprint,
                    recall_at_10=built.recall,
                    params=built.params_text(),
                    build=built.spec_doc(),
                ),
            )

    # -- reading ---------------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        with self._lock:
            return self.sync().search(queries, k)

    def describe(self) -> dict[str, object]:
        """Kind, size, tuned knobs and measured recall of the live index."""
        with self._lock:
            index = self.sync()
            built = self._built
            return {
                "kind": index.kind if built is None else _served_kind(index, built),
                "vectors": len(index),
                "generation": self._generation,
                "recall_at_10": built.recall if built is not None else None,
                "params": built.params_text() if built is not None else "",
                "build": built.spec.describe() if built is not None else "",
                "tombstones": int(getattr(index, "tombstones", 0)),
            }


def _served_kind(index: VectorIndex, built: BuiltIndex) -> str:
    if isinstance(index, TorchExactIndex):
        return f"exact-torch ({index.device.type})"
    return index.kind


def _same_kind(stored: str, requested: str) -> bool:
    exact = {"flat", "numpy", "exact-torch"}
    return stored == requested or (stored in exact and requested in exact)


def _parse(params: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in params.split(","):
        name, _, value = part.partition("=")
        if name and value.lstrip("-").isdigit():
            out[name] = int(value)
    return out


def _apply_params(index: VectorIndex, params: str) -> None:
    setter: Any = getattr(index, "set_search_params", None)
    if setter is not None and params:
        setter(**_parse(params))


def _spec_from(meta: IndexMeta) -> IndexSpec:
    """The spec recorded in the sidecar; old sidecars only know the kind and count."""
    fields = {k: v for k, v in meta.build.items() if k in IndexSpec.__dataclass_fields__}
    fields.setdefault("kind", meta.kind)
    fields.setdefault("sized_for", meta.count)
    return IndexSpec(**fields)  # type: ignore[arg-type]
