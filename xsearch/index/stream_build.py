"""The streamed build of the on-disk kind: train on a sample, add in shards, merge on disk.

Memory holds the trained quantiser, one chunk of the source, the training sample (freed
before adding) and one shard's codes; a shard is written to disk once its codes reach half
the memory budget, and ``faiss.contrib.ondisk.merge_ondisk`` merges the shards' lists into
one memory-mapped lists file. The exact vectors go to the float16 refine store as they
stream past, so no step ever holds the collection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from .faiss_index import _construct, import_faiss
from .ondisk import OnDiskIndex, RefineStore, c_stdout_to_stderr, new_token, token_files
from .selector import IndexSpec, SelectorPolicy
from .tuning import RunningTopK, perturbed_queries, tune

__all__ = ["StreamedBuild", "VectorSource", "build_ondisk", "sample_vectors"]

# No OPQ rotation before PQ64 at 512-d. Measured at 100k CLIP-like vectors on this 2-core
# machine (bench/README.md, *On disk*): with OPQ the build took 160-309 s, 276 s of it
# training the rotation, and reached recall@10 0.95 at k_factor 4; without, 64 s and the
# same recall at k_factor 16, i.e. 160 float16 rows read from the refine file per query,
# about a millisecond. OPQ's training cost does not shrink with the collection, and the
# refine store makes candidates cheap, so here it does not pay.
_OPQ = False
# Smallest shard: fewer vectors per shard only adds merge work.
_MIN_SHARD = 20_000


class VectorSource(Protocol):
    def vector_ids(self) -> npt.NDArray[np.int64]: ...

    def iter_vectors(
        self, ids: Iterable[int] | None = None
    ) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]: ...


#: Called with every chunk the build streams past (benchmarks compute ground truth on it).
ChunkTap = Callable[[npt.NDArray[np.int64], npt.NDArray[np.float32]], None]


@dataclass(frozen=True)
class StreamedBuild:
    index: OnDiskIndex
    recall: float
    params: dict[str, int]
    shards: int


def sample_vectors(source: VectorSource, n: int, seed: int) -> npt.NDArray[np.float32]:
    """``n`` stored vectors drawn at random (``source.sample`` where it has one)."""
    own: Any = getattr(source, "sample", None)
    if own is not None:
        return np.asarray(own(n, seed), dtype=np.float32)
    ids = source.vector_ids()
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(ids, size=min(n, len(ids)), replace=False))
    parts = [v for _, v in source.iter_vectors(picked.tolist())]
    return np.concatenate(parts).astype(np.float32)


def shard_size(spec: IndexSpec, policy: SelectorPolicy) -> int:
    """Vectors per shard: their codes and ids take half the memory budget."""
    return max(_MIN_SHARD, policy.memory_budget // (2 * (spec.pq_m + 8)))


def build_ondisk(
    source: VectorSource,
    dim: int,
    spec: IndexSpec,
    policy: SelectorPolicy,
    *,
    path: Path,
    train_size: int,
    seed: int = 0,
    shard_vectors: int | None = None,
    opq: bool = _OPQ,
    tap: ChunkTap | None = None,
) -> StreamedBuild:
    """Build ``spec`` (kind ivfpq-disk) from ``source`` into files beside ``path``, tuned.

    The index file itself is written by :meth:`OnDiskIndex.save`; until then the new build's
    files lie beside whatever index ``path`` holds now, which keeps serving.
    """
    faiss = import_faiss()
    token = new_token()
    files = token_files(path, token)
    sample = sample_vectors(source, train_size, seed)
    trained = _trained(faiss, spec, dim, sample, opq)
    queries = perturbed_queries(sample, policy.tuning_queries, seed=seed + 1)
    del sample
    truth = RunningTopK(queries, 10)
    files[".refine"].unlink(missing_ok=True)
    refine = RefineStore(files[".refine"], dim)
    per_shard = shard_vectors or shard_size(spec, policy)
    shard_paths: list[Path] = []
    shard = faiss.deserialize_index(trained)
    for ids, vectors in source.iter_vectors():
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        shard.add_with_ids(vectors, ids)
        refine.append(ids, vectors)
        truth.update(ids, vectors)
        if tap is not None:
            tap(ids, vectors)
        if shard.ntotal >= per_shard:
            shard_paths.append(_write_shard(faiss, shard, path, token, len(shard_paths)))
            shard = faiss.deserialize_index(trained)
    if shard.ntotal or not shard_paths:
        shard_paths.append(_write_shard(faiss, shard, path, token, len(shard_paths)))
    del shard
    base = _merge(faiss, trained, shard_paths, files[".ivfdata"])
    index = OnDiskIndex(path, token, base, faiss.deserialize_index(trained), refine)
    order = np.argsort(-truth.scores, axis=1, kind="stable")
    result = tune(
        index,
        queries,
        np.take_along_axis(truth.ids, order, axis=1),
        kind=spec.kind,
        nlist=spec.nlist,
        target=policy.target_recall,
        margin=policy.disk_recall_margin,
    )
    return StreamedBuild(index, result.recall, result.params, len(shard_paths))


def _trained(
    faiss: Any, spec: IndexSpec, dim: int, sample: npt.NDArray[np.float32], opq: bool
) -> Any:
    """The trained, empty index, serialised: every shard, the delta and the base copy it."""
    if opq:
        index = _construct(faiss, replace(spec, kind="ivfpq"), dim)
    else:
        shape = f"IVF{spec.nlist},PQ{spec.pq_m}x{spec.pq_bits}"
        index = faiss.index_factory(dim, shape, faiss.METRIC_INNER_PRODUCT)
        faiss.downcast_index(index).do_polysemous_training = False
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    return faiss.serialize_index(index)


def _write_shard(faiss: Any, shard: Any, path: Path, token: str, n: int) -> Path:
    out = path.with_name(f"{path.name}.{token}.shard.{n}")
    faiss.write_index(shard, str(out))
    return out


def _merge(faiss: Any, trained: Any, shard_paths: list[Path], ivfdata: Path) -> Any:
    """One index over all shards, its lists in ``ivfdata``; the shard files are removed."""
    from faiss.contrib.ondisk import merge_ondisk

    ivfdata.unlink(missing_ok=True)
    base = faiss.deserialize_index(trained)
    try:
        with c_stdout_to_stderr():
            merge_ondisk(base, [str(p) for p in shard_paths], str(ivfdata))
    finally:
        for shard in shard_paths:
            shard.unlink(missing_ok=True)
    return base
