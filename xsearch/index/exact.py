"""Exact search in numpy: the oracle that approximate indexes are checked against.

It is also the fallback index when faiss is not installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from .base import SearchResult, atomic_write, no_hits

__all__ = ["NumpyIndex", "exact_search"]


def exact_search(
    matrix: npt.NDArray[np.float32],
    ids: npt.NDArray[np.int64],
    queries: npt.NDArray[np.float32],
    k: int,
) -> SearchResult:
    """Top-``k`` inner products of ``queries`` against ``matrix``, ties broken by lower id."""
    n_q = queries.shape[0]
    scores_out, ids_out = no_hits(n_q, k)
    if matrix.shape[0] == 0 or k == 0:
        return scores_out, ids_out
    sims = queries.astype(np.float32) @ matrix.T
    take = min(k, matrix.shape[0])
    for row in range(n_q):
        # lexsort: primary key descending score, secondary ascending id.
        order = np.lexsort((ids, -sims[row]))[:take]
        scores_out[row, :take] = sims[row, order]
        ids_out[row, :take] = ids[order]
    return scores_out, ids_out


class NumpyIndex:
    """All vectors in one array; exact and simple."""

    kind = "numpy"

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._ids = np.zeros(0, dtype=np.int64)
        self._matrix = np.zeros((0, dim), dtype=np.float32)

    def __len__(self) -> int:
        return int(self._ids.shape[0])

    def add(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        self._ids = np.concatenate([self._ids, ids.astype(np.int64)])
        self._matrix = np.concatenate(
            [self._matrix, vectors.astype(np.float32).reshape(-1, self.dim)]
        )

    def remove(self, ids: npt.NDArray[np.int64]) -> None:
        keep = ~np.isin(self._ids, ids)
        self._ids = self._ids[keep]
        self._matrix = self._matrix[keep]

    def search(self, queries: npt.NDArray[np.float32], k: int) -> SearchResult:
        return exact_search(self._matrix, self._ids, queries, k)

    def ids(self) -> npt.NDArray[np.int64]:
        return self._ids.copy()

    @property
    def matrix(self) -> npt.NDArray[np.float32]:
        """The stored vectors, row for row with :meth:`ids` (read-only view)."""
        view = self._matrix.view()
        view.flags.writeable = False
        return view

    def save(self, path: Path) -> None:
        def write(tmp: Path) -> None:
            with tmp.open("wb") as fh:
                np.savez(fh, ids=self._ids, matrix=self._matrix)

        atomic_write(path, write)

    @classmethod
    def load(cls, path: Path, dim: int) -> NumpyIndex:
        index = cls(dim)
        with np.load(path) as data:
            index.add(data["ids"], data["matrix"])
        return index
