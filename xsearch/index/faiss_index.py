"""The faiss adapter of the vector-index port: exact, IVF, HNSW and OPQ+IVF-PQ indexes.

The persisted index is always the CPU one. When the faiss build has GPU support and a GPU
is present, a GPU copy serves searches and is refreshed after changes.

A saved index is read through mmap (faiss's ``IO_FLAG_MMAP_IFC``): a cold query touches
only the pages it searches instead of reading the whole file (1M IVF-SQ8 vectors: 8 ms
against 0.34 s). faiss aborts the process on any change to a mapped index, so the first
change makes a private copy (:meth:`FaissIndex._own`).

Deletions: the IVF kinds and flat remove ids in place. HNSW graphs cannot drop a node, so
removed ids become *tombstones*: they are filtered out at search time by a faiss id
selector and saved beside the index (``<index>.deleted.npy``); the manager compacts the
index by rebuilding it once they pile up.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import IndexBackendError
from .base import SearchResult, atomic_write, no_hits
from .selector import IndexSpec

__all__ = ["FaissIndex", "Reranker", "faiss_available", "import_faiss"]

#: Fetches the exact stored vectors of some ids: returns (ids, matrix) in any order.
Reranker = Callable[[npt.NDArray[np.int64]], tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]

# Construction-time breadth of hnsw: faiss's default of 40 loses recall on 512-d CLIP-like
# vectors, and 80 costs about twice the build time for a clearly better graph.
_HNSW_EF_CONSTRUCTION = 80
_OPQ_ITERATIONS = 10
_OPQ_TRAIN_POINTS = 32_768
# Kinds whose faiss index has no remove_ids.
_TOMBSTONE_KINDS = frozenset({"hnsw"})
# Kinds that faiss can copy to a GPU.
_GPU_KINDS = frozenset({"flat", "ivf-flat", "ivf-sq8", "ivfpq"})
# Up to this many queries at once run on one OpenMP thread (bench/README.md, *Threads*):
# a single query gains nothing from more, and idle OpenMP workers spin against every other
# process on a small machine (10k exact: 55 ms with two threads, 0.9 ms with one).
_SINGLE_THREAD_QUERIES = 4
_threads_lock = threading.Lock()


@contextlib.contextmanager
def _threads_for(n_queries: int) -> Iterator[None]:
    if n_queries > _SINGLE_THREAD_QUERIES:
        yield
        return
    faiss = import_faiss()
    # The thread count is process-wide; the lock keeps concurrent searches from restoring
    # it under each other's feet.
    with _threads_lock:
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            yield
        finally:
            faiss.omp_set_num_threads(before)


def import_faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise IndexBackendError(
            "faiss is not installed. Install it with `pip install 'xsearch[cpu]'` "
            "(or `xsearch[gpu]` on a CUDA machine)."
        ) from exc
    return faiss


def faiss_available() -> bool:
    try:
        import_faiss()
    except IndexBackendError:
        return False
    return True


def faiss_gpus() -> int:
    """GPUs this faiss build can use (0 for faiss-cpu)."""
    if not faiss_available():
        return 0
    get = getattr(import_faiss(), "get_num_gpus", None)
    return int(get()) if get is not None else 0


def _mmap_flags(faiss: Any) -> int:
    """faiss's flags to map a saved index read-only; 0 where faiss is too old (< 1.10)."""
    mmap = getattr(faiss, "IO_FLAG_MMAP_IFC", 0)
    return int(mmap | faiss.IO_FLAG_READ_ONLY) if mmap else 0


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    """What tells one saved file from its replacement (saves rename a new file in); None
    when there is no file there (any more)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _tombstone_path(path: Path) -> Path:
    return path.with_name(path.name + ".deleted.npy")


def _construct(faiss: Any, spec: IndexSpec, dim: int) -> Any:
    ip = faiss.METRIC_INNER_PRODUCT
    if spec.kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if spec.kind == "hnsw":
        graph = faiss.IndexHNSWFlat(dim, spec.hnsw_m, ip)
        graph.hnsw.efConstruction = _HNSW_EF_CONSTRUCTION
        return faiss.IndexIDMap2(graph)
    if spec.kind == "ivf-flat":
        return faiss.index_factory(dim, f"IVF{spec.nlist},Flat", ip)
    if spec.kind == "ivf-sq8":
        return faiss.index_factory(dim, f"IVF{spec.nlist},SQ8", ip)
    if spec.kind == "ivfpq":
        index = faiss.index_factory(
            dim, f"OPQ{spec.pq_m},IVF{spec.nlist},PQ{spec.pq_m}x{spec.pq_bits}", ip
        )
        # Polysemous codes only help Hamming pre-filtering, which is not used, and training
        # them takes longer than everything else together.
        faiss.downcast_index(faiss.extract_index_ivf(index)).do_polysemous_training = False
        opq = faiss.downcast_VectorTransform(index.chain.at(0))
        # OPQ's rotation settles in a few iterations; the default 50 costs minutes at 512-d.
        opq.niter = _OPQ_ITERATIONS
        opq.max_train_points = _OPQ_TRAIN_POINTS
        return index
    raise IndexBackendError(f"faiss cannot build an index of kind {spec.kind!r}.")


class FaissIndex:
    """A faiss index whose ids are the store's vector ids.

    ``search_params`` holds the tuned search-time knobs: ``nprobe`` (IVF kinds), ``efSearch``
    (hnsw) and ``k_factor`` (how many times ``k`` candidates ivfpq fetches for re-ranking
    with exact vectors from ``reranker``).
    """

    def __init__(
        self,
        index: Any,
        kind: str,
        *,
        use_gpu: bool | None = None,
        tombstones: npt.NDArray[np.int64] | None = None,
    ) -> None:
        self._faiss = import_faiss()
        self._index = index
        self.kind = kind
        self._use_gpu = (faiss_gpus() > 0 if use_gpu is None else use_gpu) and kind in _GPU_KINDS
        self._gpu_index: Any = None
        self._tombstones: set[int] = set() if tombstones is None else set(tombstones.tolist())
        self._selector: Any = None
        self.search_params: dict[str, int] = {}
        self.reranker: Reranker | None = None
        # (file, its stamp) while the index is a read-only mapping of a saved file.
        self._mapped_from: tuple[Path, tuple[int, int, int]] | None = None

    @classmethod
    def flat(cls, dim: int) -> FaissIndex:
        return cls.build(IndexSpec(kind="flat"), dim)

    @classmethod
    def build(cls, spec: IndexSpec, dim: int) -> FaissIndex:
        """An empty index of ``spec``; call :meth:`train` first when ``spec.trained``."""
        return cls(_construct(import_faiss(), spec, dim), spec.kind)

    @classmethod
    def load(cls, path: Path, kind: str, *, mapped: bool = True) -> FaissIndex:
        """The index saved at ``path``; ``mapped``: read through mmap where faiss can."""
        faiss = import_faiss()
        tomb_file = _tombstone_path(path)
        tombstones = np.load(tomb_file) if tomb_file.exists() else None
        stamp = _file_stamp(path)
        flags = _mmap_flags(faiss) if mapped and stamp is not None else 0
        loaded = cls(faiss.read_index(str(path), flags), kind, tombstones=tombstones)
        if flags and stamp is not None:
            loaded._mapped_from = (path, stamp)
        return loaded

    @property
    def mapped(self) -> bool:
        """Whether the index still reads its saved file through mmap (it is unchanged)."""
        return self._mapped_from is not None

    def _own(self) -> None:
        """Make a mapped index a private, changeable copy, before its first change.

        The saved file is read again when it is still the one mapped (fast); when another
        process has replaced it since, the mapped index itself is copied (slower, but the
        contents are those this index stands for).
        """
        if self._mapped_from is None:
            return
        path, stamp = self._mapped_from
        index = None
        if _file_stamp(path) == stamp:  # (None when the file is gone: copied below)
            with contextlib.suppress(RuntimeError, OSError):
                index = self._faiss.read_index(str(path))
            if _file_stamp(path) != stamp:  # replaced while it was read
                index = None
        if index is None:
            index = self._faiss.deserialize_index(self._faiss.serialize_index(self._index))
        self._index = index
        self._mapped_from = None
        self._gpu_index = None
        self.set_search_params(**self.search_params)

    @property
    def raw(self) -> Any:
        """The CPU faiss index, for tuning and inspection."""
        return self._index

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    @property
    def tombstones(self) -> int:
        return len(self._tombstones)

    def train(self, sample: npt.NDArray[np.float32]) -> None:
        self._own()
        self._index.train(np.ascontiguousarray(sample, dtype=np.float32))
        self._gpu_index = None

    def set_search_params(self, **params: int) -> None:
        """Apply tuned knobs (see the class doc); unknown ones for this kind are ignored."""
        self.search_params.update(params)
        space = self._faiss.ParameterSpace()
        for name in ("nprobe", "efSearch"):
            if name in params:
                space.set_index_parameter(self._index, name, int(params[name]))
        self._gpu_index = None

    def __len__(self) -> int:
        return int(self._index.ntotal) - len(self._tombstones)

    def add(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        if len(ids) == 0:
            return
        self._own()
        self._index.add_with_ids(
            np.ascontiguousarray(vectors, dtype=np.float32),
            np.ascontiguousarray(ids, dtype=np.int64),
        )
        self._gpu_index = None

    def remove(self, ids: npt.NDArray[np.int64]) -> None:
        if len(ids) == 0:
            return
        if self.kind in _TOMBSTONE_KINDS:
            self._tombstones.update(int(i) for i in ids)
            self._selector = None
            return
        self._own()
        self._index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))
        self._gpu_index = None

    def search(self, queries: npt.NDArray[np.float32], k: int) -> SearchResult:
        with _threads_for(queries.shape[0]):
            return self._search(queries, k)

    def _search(self, queries: npt.NDArray[np.float32], k: int) -> SearchResult:
        n_q = queries.shape[0]
        if len(self) == 0 or k == 0:
            return no_hits(n_q, k)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k_factor = self.search_params.get("k_factor", 1) if self.reranker is not None else 1
        fetch = k * k_factor
        if self._tombstones:
            scores, ids = self._index.search(queries, fetch, params=self._filtered_params())
        else:
            scores, ids = self._searcher().search(queries, fetch)
        scores = scores.astype(np.float32)
        ids = ids.astype(np.int64)
        short = (ids >= 0).sum(axis=1) < min(fetch, len(self))
        if short.any() and self.kind != "flat":
            # An approximate index can come back with fewer than k hits (too few vectors in
            # the probed cells, an unreachable part of the graph); callers that page through
            # results rely on getting min(k, len) of them, so those queries are redone
            # exhaustively.
            scores[short], ids[short] = self._exhaustive(queries[short], fetch)
        if k_factor > 1:
            return _rerank(queries, ids, k, self.reranker)  # type: ignore[arg-type]
        scores[ids < 0] = -np.inf
        return scores[:, :k], ids[:, :k]

    def _exhaustive(
        self, queries: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Every stored vector scored (from its codes, for the quantised kinds)."""
        if self.kind == "hnsw":
            graph = self._faiss.downcast_index(self._index.index)
            labels = np.asarray(self._faiss.vector_to_array(self._index.id_map), dtype=np.int64)
            scores, rows = graph.storage.search(queries, min(k + self.tombstones, len(labels)))
            ids = np.where(rows >= 0, labels[np.maximum(rows, 0)], -1)
            if self._tombstones:
                dead = np.isin(ids, list(self._tombstones))
                ids[dead], scores[dead] = -1, -np.inf
            order = np.argsort(ids < 0, axis=1, kind="stable")[:, :k]
            scores = np.take_along_axis(scores, order, axis=1)
            ids = np.take_along_axis(ids, order, axis=1)
        else:
            nprobe = self.search_params.get("nprobe")
            space = self._faiss.ParameterSpace()
            space.set_index_parameter(
                self._index, "nprobe", self._faiss.extract_index_ivf(self._index).nlist
            )
            try:
                scores, ids = self._index.search(queries, k)
            finally:
                if nprobe is not None:
                    space.set_index_parameter(self._index, "nprobe", nprobe)
        pad = k - ids.shape[1]
        if pad > 0:
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        return scores.astype(np.float32), ids.astype(np.int64)

    def _filtered_params(self) -> Any:
        """Search parameters that skip tombstoned ids (for the hnsw graph in an IDMap2)."""
        if self._selector is None:
            batch = self._faiss.IDSelectorBatch(
                np.fromiter(self._tombstones, dtype=np.int64, count=len(self._tombstones))
            )
            # Keep the batch selector alive as long as the negation that points at it.
            self._selector = (batch, self._faiss.IDSelectorNot(batch))
        ef = self.search_params.get("efSearch", 16)
        return self._faiss.SearchParametersHNSW(sel=self._selector[1], efSearch=ef)

    def _searcher(self) -> Any:
        if not self._use_gpu:
            return self._index
        if self._gpu_index is None:
            self._gpu_index = self._faiss.index_cpu_to_all_gpus(self._index)
        return self._gpu_index

    def ids(self) -> npt.NDArray[np.int64]:
        id_map = getattr(self._index, "id_map", None)
        if id_map is not None:
            held = np.asarray(self._faiss.vector_to_array(id_map), dtype=np.int64)
        else:
            held = _ivf_ids(self._faiss, self._index)
        if self._tombstones:
            dead = np.fromiter(self._tombstones, dtype=np.int64, count=len(self._tombstones))
            held = held[~np.isin(held, dead)]
        return held

    def save(self, path: Path) -> None:
        """Write the index, with its tombstones (if any) beside it, each file atomically."""
        tomb_file = _tombstone_path(path)
        if self._tombstones:
            dead = np.fromiter(self._tombstones, dtype=np.int64, count=len(self._tombstones))

            def write(tmp: Path) -> None:
                with tmp.open("wb") as fh:
                    np.save(fh, dead)

            atomic_write(tomb_file, write)
        else:
            tomb_file.unlink(missing_ok=True)
        atomic_write(path, lambda tmp: self._faiss.write_index(self._index, str(tmp)))


def _rerank(
    queries: npt.NDArray[np.float32],
    candidates: npt.NDArray[np.int64],
    k: int,
    reranker: Reranker,
) -> SearchResult:
    """Order each query's candidates by their exact inner product; keep the best ``k``."""
    n_q = queries.shape[0]
    scores_out, ids_out = no_hits(n_q, k)
    wanted = np.unique(candidates[candidates >= 0])
    if len(wanted) == 0:
        return scores_out, ids_out
    got_ids, got_vectors = reranker(wanted)
    row_of = {int(i): r for r, i in enumerate(got_ids)}
    for q in range(n_q):
        cand = [int(i) for i in candidates[q] if int(i) in row_of]
        if not cand:
            continue
        exact = got_vectors[[row_of[i] for i in cand]] @ queries[q]
        cand_ids = np.asarray(cand, dtype=np.int64)
        order = np.lexsort((cand_ids, -exact))[:k]
        scores_out[q, : len(order)] = exact[order]
        ids_out[q, : len(order)] = cand_ids[order]
    return scores_out, ids_out


def _ivf_ids(faiss: Any, index: Any) -> npt.NDArray[np.int64]:
    """Ids held in the inverted lists of an IVF index."""
    ivf = faiss.extract_index_ivf(index)
    invlists = ivf.invlists
    parts = []
    for list_no in range(ivf.nlist):
        size = invlists.list_size(list_no)
        if size:
            ptr = invlists.get_ids(list_no)
            parts.append(faiss.rev_swig_ptr(ptr, size).copy())
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)
