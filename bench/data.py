"""Generated inputs: CLIP-like unit vectors and photo-like JPEGs."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

__all__ = ["ArraySource", "GeneratedSource", "clip_like", "make_photos", "photo_like"]


def clip_like(
    n: int,
    dim: int = 512,
    *,
    seed: int = 0,
    clusters: int = 2_000,
    rank: int = 96,
    spread: float = 0.55,
    chunk: int = 100_000,
) -> npt.NDArray[np.float32]:
    """Unit vectors shaped like image embeddings rather than uniform noise.

    CLIP image vectors share a common direction (random pairs have cosine ≈ 0.4), live near
    a low-dimensional subspace, and come in semantic clusters. Here: a shared mean, cluster
    centres in a ``rank``-dimensional subspace, per-vector variation in that subspace and a
    little isotropic noise. The structure (centres, subspace) is fixed by seed 7; ``seed``
    only draws the members, so fresh queries come from the same distribution.
    """
    frame = np.random.default_rng(7)
    basis = np.linalg.qr(frame.standard_normal((dim, rank)))[0].astype(np.float32)
    mean = frame.standard_normal(dim).astype(np.float32)
    mean /= np.linalg.norm(mean)
    centres = frame.standard_normal((clusters, rank)).astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        members = centres[rng.integers(0, clusters, m)]
        local = members + spread * rng.standard_normal((m, rank)).astype(np.float32)
        x = (local / np.sqrt(rank)) @ basis.T + 0.8 * mean
        x += 0.25 * rng.standard_normal((m, dim)).astype(np.float32) / np.sqrt(dim)
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def pushed(
    queries: npt.NDArray[np.float32], noise: float, *, seed: int = 0
) -> npt.NDArray[np.float32]:
    """Queries moved off the data like text queries (cosine to the source 1/√(1+noise²))."""
    rng = np.random.default_rng(seed)
    push = rng.standard_normal(queries.shape).astype(np.float32) / np.sqrt(queries.shape[1])
    q = queries + noise * push
    out: npt.NDArray[np.float32] = q / np.linalg.norm(q, axis=1, keepdims=True)
    return out


class ArraySource:
    """An in-memory stand-in for the store (the build code's VectorSource)."""

    def __init__(self, vectors: npt.NDArray[np.float32], first_id: int = 1) -> None:
        self.vectors = vectors
        self.first_id = first_id

    def vector_ids(self) -> npt.NDArray[np.int64]:
        return np.arange(self.first_id, self.first_id + len(self.vectors), dtype=np.int64)

    def iter_vectors(
        self, ids: Iterable[int] | None = None
    ) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
        if ids is None:
            for start in range(0, len(self.vectors), 50_000):
                part = self.vectors[start : start + 50_000]
                yield np.arange(start, start + len(part), dtype=np.int64) + self.first_id, part
            return
        wanted = np.asarray(list(ids), dtype=np.int64)
        yield wanted, self.vectors[wanted - self.first_id]


def photo_like(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Smooth colour fields, some edges and sensor noise: compresses (and decodes) like a photo."""
    small = rng.random((height // 32 + 1, width // 32 + 1, 3))
    base = np.asarray(
        Image.fromarray((small * 255).astype(np.uint8)).resize(
            (width, height), Image.Resampling.BICUBIC
        ),
        dtype=np.float32,
    )
    base[rng.integers(0, height // 2) :, rng.integers(0, width // 2) :] *= 0.6
    base += rng.normal(0, 6, base.shape)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def make_photos(folder: Path, n: int, sizes: list[tuple[int, int]], *, seed: int = 0) -> Path:
    """``n`` JPEGs (quality 90) cycling through ``sizes``; existing files are kept."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = folder / f"photo_{i:05d}.jpg"
        if not path.exists():
            w, h = sizes[i % len(sizes)]
            photo_like(rng, w, h).save(path, "JPEG", quality=90)
    return folder


class GeneratedSource:
    """``n`` CLIP-like vectors generated chunk by chunk from seeds, never all in memory.

    Chunk ``c`` is always the same ``clip_like`` draw (seed ``[seed, c]``), so a second
    pass over the source sees the same vectors; ``sample`` draws fresh vectors from the
    same distribution (they are i.i.d.), which is what a training sample needs.
    """

    def __init__(self, n: int, dim: int = 512, *, seed: int = 0, chunk: int = 100_000) -> None:
        self.n, self.dim, self.seed, self.chunk = n, dim, seed, chunk

    def vector_ids(self) -> npt.NDArray[np.int64]:
        return np.arange(1, self.n + 1, dtype=np.int64)

    def chunk_vectors(self, c: int) -> npt.NDArray[np.float32]:
        m = min(self.chunk, self.n - c * self.chunk)
        return _clip_like32(m, self.dim, _chunk_seed(self.seed, c))

    def iter_vectors(
        self, ids: Iterable[int] | None = None
    ) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
        if ids is None:
            for c in range(-(-self.n // self.chunk)):
                part = self.chunk_vectors(c)
                start = c * self.chunk + 1
                yield np.arange(start, start + len(part), dtype=np.int64), part
            return
        wanted = np.asarray(list(ids), dtype=np.int64)
        for c in np.unique((wanted - 1) // self.chunk).tolist():
            mine = wanted[(wanted - 1) // self.chunk == c]
            yield mine, self.chunk_vectors(int(c))[mine - 1 - c * self.chunk]

    def sample(self, n: int, seed: int) -> npt.NDArray[np.float32]:
        return _clip_like32(min(n, self.n), self.dim, _chunk_seed(self.seed + 1_000, seed))


@functools.lru_cache(maxsize=4)
def _frame(dim: int, rank: int = 96, clusters: int = 2_000) -> tuple[Any, Any, Any]:
    """``clip_like``'s fixed structure (seed 7): subspace basis, shared mean, centres."""
    frame = np.random.default_rng(7)
    basis = np.linalg.qr(frame.standard_normal((dim, rank)))[0].astype(np.float32)
    mean = frame.standard_normal(dim).astype(np.float32)
    mean /= np.linalg.norm(mean)
    centres = frame.standard_normal((clusters, rank)).astype(np.float32)
    return basis, mean, centres


def _clip_like32(m: int, dim: int, seed: int) -> npt.NDArray[np.float32]:
    """``clip_like``'s distribution drawn in float32 (about 3× faster: the 10M run draws
    5·10⁹ normals); the same structure, another random stream."""
    basis, mean, centres = _frame(dim)
    rank, clusters = basis.shape[1], len(centres)
    rng = np.random.default_rng(seed)
    local = centres[rng.integers(0, clusters, m)]
    local += 0.55 * rng.standard_normal((m, rank), dtype=np.float32)
    x = (local * float(rank**-0.5)) @ basis.T + 0.8 * mean
    x += float(0.25 * dim**-0.5) * rng.standard_normal((m, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    out: npt.NDArray[np.float32] = x.astype(np.float32, copy=False)
    return out


def _chunk_seed(seed: int, c: int) -> int:
    return int(np.random.SeedSequence([seed, c]).generate_state(1)[0])
