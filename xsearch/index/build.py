"""Building an index of a given spec from a source of vectors, tuned and measured.

The source is the store in production and an in-memory array in benchmarks: anything with
``vector_ids()`` and ``iter_vectors(ids)``. Vectors stream through in chunks, so a build
holds the index, one chunk and a training sample, never a second copy of the collection.
The on-disk kind goes further (:mod:`.stream_build`): its codes go to disk in shards.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError
from .base import VectorIndex
from .exact import NumpyIndex
from .faiss_index import FaissIndex, Reranker, faiss_available
from .ondisk import DISK_KIND
from .selector import IndexSpec, SelectorPolicy
from .stream_build import ChunkTap, VectorSource, build_ondisk, sample_vectors
from .tuning import RunningTopK, perturbed_queries, tune

__all__ = ["BuiltIndex", "VectorSource", "build_index", "empty_index", "source_reranker"]

# Where an approximate index falls back to when tuning cannot reach the target recall.
_FALLBACK = {"ivfpq": "ivf-sq8", "ivf-sq8": "ivf-flat", "ivf-flat": "flat", "hnsw": "flat"}


@dataclass(frozen=True)
class BuiltIndex:
    """An index and what is known about how well it searches."""

    index: VectorIndex
    spec: IndexSpec
    # recall@10 against exact search on held-out tuning queries; None when exact.
    recall: float | None = None
    params: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    # Kinds tried first that could not reach the target recall.
    fell_back_from: tuple[str, ...] = ()

    def params_text(self) -> str:
        return ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))

    def spec_doc(self) -> dict[str, int | str]:
        return {k: v for k, v in asdict(self.spec).items() if v or k == "kind"}


def empty_index(spec: IndexSpec, dim: int) -> VectorIndex:
    """A new, untrained index of ``spec`` (numpy when faiss is missing and ``spec`` is exact)."""
    if spec.kind == "numpy" or (spec.exact and not faiss_available()):
        return NumpyIndex(dim)
    if spec.exact:
        return FaissIndex.build(IndexSpec(kind="flat"), dim)
    return FaissIndex.build(spec, dim)


def source_reranker(source: VectorSource) -> Reranker:
    """Exact vectors of some ids, fetched from ``source`` (the store), for re-ranking."""

    def fetch(
        ids: npt.NDArray[np.int64],
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        parts = list(source.iter_vectors(ids.tolist()))
        if not parts:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        return (
            np.concatenate([p[0] for p in parts]).astype(np.int64),
            np.concatenate([p[1] for p in parts]).astype(np.float32),
        )

    return fetch


def _train_size(spec: IndexSpec, count: int, policy: SelectorPolicy) -> int:
    need = spec.nlist * policy.train_per_list
    if spec.kind in ("ivfpq", DISK_KIND):
        need = max(need, (2**spec.pq_bits) * policy.train_per_list)
    return min(count, max(need, policy.tuning_queries))


def build_index(
    source: VectorSource,
    dim: int,
    spec: IndexSpec,
    policy: SelectorPolicy | None = None,
    *,
    seed: int = 0,
    path: Path | None = None,
    tap: ChunkTap | None = None,
) -> BuiltIndex:
    """Build ``spec`` over every vector of ``source``; tune it if it is approximate.

    An approximate kind that cannot reach ``policy.target_recall`` is replaced by the next
    more exact one (ivfpq → ivf-sq8 → ivf-flat → flat, hnsw → flat), so an index this
    returns either is exact or has its measured recall at or above the target. The on-disk
    kind has no fallback that would fit the budget: it is returned with its best recall.
    ``path`` is where the on-disk kind's index file will be saved (its files go beside it);
    ``tap`` sees every chunk of the on-disk kind's streamed build.
    """
    policy = policy or SelectorPolicy()
    started = time.perf_counter()
    if spec.kind == DISK_KIND:
        if path is None:
            raise ConfigError("An ivfpq-disk index needs the path it will be saved at.")
        count = len(source.vector_ids())
        streamed = build_ondisk(
            source,
            dim,
            spec,
            policy,
            path=path,
            train_size=_train_size(spec, count, policy),
            seed=seed,
            tap=tap,
        )
        return BuiltIndex(
            streamed.index,
            spec,
            streamed.recall,
            streamed.params,
            seconds=time.perf_counter() - started,
        )
    tried: list[str] = []
    while True:
        built = _build_once(source, dim, spec, policy, seed)
        if built.recall is None or built.recall >= policy.target_recall:
            return replace(
                built, seconds=time.perf_counter() - started, fell_back_from=tuple(tried)
            )
        tried.append(spec.kind)
        spec = replace(spec, kind=_FALLBACK[spec.kind], pq_m=0, hnsw_m=0)
        if spec.kind == "flat":
            spec = IndexSpec(kind="flat", sized_for=spec.sized_for)


def _build_once(
    source: VectorSource, dim: int, spec: IndexSpec, policy: SelectorPolicy, seed: int
) -> BuiltIndex:
    ids = source.vector_ids()
    index = empty_index(spec, dim)
    if spec.exact:
        for chunk_ids, vectors in source.iter_vectors():
            index.add(chunk_ids, vectors)
        return BuiltIndex(index, spec)
    assert isinstance(index, FaissIndex)
    sample = sample_vectors(source, _train_size(spec, len(ids), policy), seed)
    if spec.trained:
        index.train(sample)
    if spec.kind == "ivfpq":
        index.reranker = source_reranker(source)
    queries = perturbed_queries(sample, policy.tuning_queries, seed=seed + 1)
    del sample
    truth = RunningTopK(queries, 10)
    for chunk_ids, vectors in source.iter_vectors():
        index.add(chunk_ids, vectors)
        truth.update(chunk_ids, vectors)
    result = tune(
        index,
        queries,
        _sorted_truth(truth),
        kind=spec.kind,
        nlist=spec.nlist,
        target=policy.target_recall,
    )
    return BuiltIndex(index, spec, result.recall, result.params)


def _sorted_truth(truth: RunningTopK) -> npt.NDArray[np.int64]:
    order = np.argsort(-truth.scores, axis=1, kind="stable")
    return np.take_along_axis(truth.ids, order, axis=1)
