"""The faiss adapter of the vector-index port.

The persisted index is always the CPU one. When the faiss build has GPU support and a GPU
is present, a GPU copy serves searches and is refreshed after changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import IndexBackendError
from .base import SearchResult, atomic_write

__all__ = ["FaissIndex", "faiss_available", "import_faiss"]


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


class FaissIndex:
    """A faiss index whose ids are the store's vector ids (``IndexIDMap2`` for flat search)."""

    def __init__(self, index: Any, kind: str, *, use_gpu: bool | None = None) -> None:
        self._faiss = import_faiss()
        self._index = index
        self.kind = kind
        self._use_gpu = self._gpus() > 0 if use_gpu is None else use_gpu
        self._gpu_index: Any = None

    @classmethod
    def flat(cls, dim: int) -> FaissIndex:
        faiss = import_faiss()
        return cls(faiss.IndexIDMap2(faiss.IndexFlatIP(dim)), "flat")

    @classmethod
    def load(cls, path: Path, kind: str) -> FaissIndex:
        faiss = import_faiss()
        return cls(faiss.read_index(str(path)), kind)

    @property
    def raw(self) -> Any:
        """The CPU faiss index, for tuning and inspection."""
        return self._index

    def _gpus(self) -> int:
        get = getattr(self._faiss, "get_num_gpus", None)
        return int(get()) if get is not None else 0

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        if len(ids) == 0:
            return
        self._index.add_with_ids(
            np.ascontiguousarray(vectors, dtype=np.float32),
            np.ascontiguousarray(ids, dtype=np.int64),
        )
        self._gpu_index = None

    def remove(self, ids: npt.NDArray[np.int64]) -> None:
        if len(ids) == 0:
            return
        self._index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))
        self._gpu_index = None

    def search(self, queries: npt.NDArray[np.float32], k: int) -> SearchResult:
        n_q = queries.shape[0]
        if len(self) == 0 or k == 0:
            return (
                np.full((n_q, k), -np.inf, dtype=np.float32),
                np.full((n_q, k), -1, dtype=np.int64),
            )
        scores, ids = self._searcher().search(np.ascontiguousarray(queries, dtype=np.float32), k)
        scores = scores.astype(np.float32)
        scores[ids < 0] = -np.inf
        return scores, ids.astype(np.int64)

    def _searcher(self) -> Any:
        if not self._use_gpu:
            return self._index
        if self._gpu_index is None:
            self._gpu_index = self._faiss.index_cpu_to_all_gpus(self._index)
        return self._gpu_index

    def ids(self) -> npt.NDArray[np.int64]:
        id_map = getattr(self._index, "id_map", None)
        if id_map is not None:
            return np.asarray(self._faiss.vector_to_array(id_map), dtype=np.int64)
        return _ivf_ids(self._faiss, self._index)

    def save(self, path: Path) -> None:
        atomic_write(path, lambda tmp: self._faiss.write_index(self._index, str(tmp)))


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
