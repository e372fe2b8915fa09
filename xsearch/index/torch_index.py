"""Exact search on a GPU through torch, for machines whose faiss has no GPU build.

A half-precision (bf16 or fp16) matrix product ranks every vector; the best candidates are
then re-scored in float32 and ordered as the numpy oracle orders them (score, then lower
id), so results equal exact search except where half precision pushes a true top-``k``
vector below ``k + margin`` candidates, which the margin makes vanishingly rare.

The CPU index it wraps stays the persisted one: this class only mirrors it on the device.
torch is imported when an instance is made, never at module import.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import IndexBackendError
from .base import SearchResult, VectorIndex, no_hits

__all__ = ["TorchExactIndex", "torch_gpu_available"]

# Queries multiplied at once: bounds the (queries × vectors) score matrix on the device.
_QUERY_BATCH = 256
# Extra candidates re-scored in float32 beyond k.
_MARGIN = 32


def torch_gpu_available(*, import_torch: bool = False) -> bool:
    """Whether torch sees a CUDA device; without ``import_torch`` only if torch is loaded.

    Importing torch costs more than a second, which commands that never encode anything
    (``xsearch info``) should not pay just to learn where they would search.
    """
    if "torch" not in sys.modules and not import_torch:
        return False
    import torch

    return bool(torch.cuda.is_available())


def _vectors_of(base: VectorIndex, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
    """The vectors ``base`` holds for ``ids`` (a numpy index, or a faiss one that can
    reconstruct them, as flat ones can)."""
    matrix = getattr(base, "matrix", None)
    if matrix is not None:
        return np.asarray(matrix, dtype=np.float32)
    raw = getattr(base, "raw", None)
    if raw is None:
        raise IndexBackendError(f"A {base.kind} index cannot be mirrored on the GPU.")
    return np.asarray(raw.reconstruct_batch(ids), dtype=np.float32)


class TorchExactIndex:
    """Exact inner-product search on a torch device, over a CPU ``base`` index."""

    kind = "exact-torch"

    def __init__(
        self, base: VectorIndex, dim: int, *, device: str = "cuda", dtype: str = "auto"
    ) -> None:
        import torch

        self._torch: Any = torch
        self.base = base
        self.dim = dim
        self.device = torch.device(device)
        if dtype == "auto":
            dtype = (
                "bfloat16"
                if self.device.type != "cuda" or torch.cuda.is_bf16_supported()
                else "float16"
            )
        self._half = getattr(torch, dtype)
        self._ids = np.zeros(0, dtype=np.int64)
        self._exact = torch.zeros((0, dim), dtype=torch.float32, device=self.device)
        self._low = self._exact.to(self._half)
        self._pending: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]] = []

    @classmethod
    def mirror(cls, base: VectorIndex, dim: int, **kwargs: Any) -> TorchExactIndex:
        """Wrap ``base`` and copy the vectors it already holds to the device."""
        index = cls(base, dim, **kwargs)
        ids = base.ids()
        if len(ids):
            index._mirror_add(ids, _vectors_of(base, ids))
        return index

    def __len__(self) -> int:
        return len(self.base)

    def _mirror_add(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        self._pending.append((ids.astype(np.int64), np.asarray(vectors, dtype=np.float32)))

    def _flush(self) -> None:
        """Move pending additions to the device in one concatenation (adds come in batches)."""
        if not self._pending:
            return
        torch = self._torch
        ids = np.concatenate([self._ids, *[p[0] for p in self._pending]])
        new = torch.from_numpy(np.concatenate([p[1] for p in self._pending])).to(self.device)
        self._exact = torch.cat([self._exact, new])
        self._low = torch.cat([self._low, new.to(self._half)])
        self._ids = ids
        self._pending = []

    def add(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        self.base.add(ids, vectors)
        self._mirror_add(ids, vectors.reshape(-1, self.dim))

    def remove(self, ids: npt.NDArray[np.int64]) -> None:
        self.base.remove(ids)
        self._flush()
        keep = ~np.isin(self._ids, ids)
        mask = self._torch.from_numpy(keep).to(self.device)
        self._ids = self._ids[keep]
        self._exact = self._exact[mask]
        self._low = self._low[mask]

    def search(self, queries: npt.NDArray[np.float32], k: int) -> SearchResult:
        self._flush()
        n_q = queries.shape[0]
        scores_out, ids_out = no_hits(n_q, k)
        n = len(self._ids)
        if n == 0 or k == 0:
            return scores_out, ids_out
        torch = self._torch
        take = min(n, k + _MARGIN)
        with torch.inference_mode():
            for start in range(0, n_q, _QUERY_BATCH):
                q32 = torch.from_numpy(
                    np.ascontiguousarray(queries[start : start + _QUERY_BATCH], dtype=np.float32)
                ).to(self.device)
                rough = q32.to(self._half) @ self._low.T
                cand = torch.topk(rough, take, dim=1).indices
                exact = torch.einsum("qd,qcd->qc", q32, self._exact[cand])
                self._order(exact.cpu().numpy(), cand.cpu().numpy(), k, start, scores_out, ids_out)
        return scores_out, ids_out

    def _order(
        self,
        exact: npt.NDArray[np.float32],
        rows: npt.NDArray[np.int64],
        k: int,
        start: int,
        scores_out: npt.NDArray[np.float32],
        ids_out: npt.NDArray[np.int64],
    ) -> None:
        for i in range(exact.shape[0]):
            cand_ids = self._ids[rows[i]]
            order = np.lexsort((cand_ids, -exact[i]))[:k]
            scores_out[start + i, : len(order)] = exact[i, order]
            ids_out[start + i, : len(order)] = cand_ids[order]

    def ids(self) -> npt.NDArray[np.int64]:
        return self.base.ids()

    def save(self, path: Path) -> None:
        self.base.save(path)
