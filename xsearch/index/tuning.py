"""Tuning search parameters of an approximate index against exact search.

The ground truth is computed in one streaming pass over the vectors
(:class:`RunningTopK`), so building and tuning an index over a million vectors never holds
a second copy of them. Parameters are chosen on one half of the queries and the recall
that is reported is measured on the other half, so it is not flattered by the choice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from .base import VectorIndex, no_hits

__all__ = ["RunningTopK", "TuningResult", "perturbed_queries", "recall_at_k", "tune"]

# Search-time knobs tried, cheapest first.
_EF_SEARCH = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
_K_FACTORS = (1, 2, 4, 8, 16)
# ivfpq-disk re-ranks from a local file, cheaper than the store: more candidates, and no
# setting without re-ranking (PQ alone stays far below the target at 512-d). nprobe stops
# at a cap: past it a scan of the on-disk lists costs more than more candidates do. At 10M
# vectors the PQ shortlist is what limits recall, not nprobe: with 32 candidates a hit
# recall@10 stayed at 0.938 for nprobe 32-128, with 64 it was 0.987 (7.1 ms a query), with
# 128 0.997 (14.9 ms) (bench/README.md, "ANN at 10M").
_DISK_K_FACTORS = (4, 8, 16, 32, 64, 128)
_DISK_MAX_NPROBE = 1024


@dataclass(frozen=True)
class TuningResult:
    """Chosen knobs, and recall@k measured with them on held-out queries."""

    params: dict[str, int] = field(default_factory=dict)
    recall: float = 1.0
    # Mean seconds per query of the held-out measurement.
    seconds_per_query: float = 0.0

    def describe(self) -> str:
        return ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))


class RunningTopK:
    """Exact top-``k`` inner products of fixed queries, fed the collection chunk by chunk."""

    def __init__(self, queries: npt.NDArray[np.float32], k: int) -> None:
        self.queries = np.ascontiguousarray(queries, dtype=np.float32)
        self.k = k
        self.scores, self.ids = no_hits(queries.shape[0], k)

    def update(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        if len(ids) == 0:
            return
        sims = self.queries @ np.asarray(vectors, dtype=np.float32).T
        all_scores = np.concatenate([self.scores, sims], axis=1)
        all_ids = np.concatenate(
            [self.ids, np.broadcast_to(ids.astype(np.int64), sims.shape)], axis=1
        )
        take = min(self.k, all_scores.shape[1])
        top = np.argpartition(-all_scores, take - 1, axis=1)[:, :take]
        rows = np.arange(all_scores.shape[0])[:, None]
        self.scores = all_scores[rows, top]
        self.ids = all_ids[rows, top]


def recall_at_k(found: npt.NDArray[np.int64], truth: npt.NDArray[np.int64], k: int = 10) -> float:
    """Mean share of each query's true top-``k`` that the approximate top-``k`` contains."""
    hits = 0
    total = 0
    for got, want in zip(found[:, :k], truth[:, :k], strict=True):
        wanted = set(want[want >= 0].tolist())
        if not wanted:
            continue
        hits += len(wanted.intersection(got.tolist()))
        total += len(wanted)
    return hits / total if total else 1.0


def perturbed_queries(
    sample: npt.NDArray[np.float32],
    n: int,
    *,
    seed: int = 0,
    noise: tuple[float, float] = (1.5, 3.0),
) -> npt.NDArray[np.float32]:
    """Stand-ins for user queries: stored vectors pushed off in random directions.

    A text query does not sit on top of an image vector: a matching pair of CLIP towers has
    a cosine of about 0.3. Each query here is pushed by a random ``noise`` in the given
    range, so its cosine with the vector it came from spreads from 0.55 down to 0.3. Such
    queries have no tight cluster of neighbours, which is what makes approximate search
    miss; tuning on queries close to stored vectors instead would pass at recall 0.95 and
    then give about 0.91 to text-like queries (bench/README.md).
    """
    rng = np.random.default_rng(seed)
    picks = sample[rng.choice(len(sample), size=min(n, len(sample)), replace=False)]
    dim = sample.shape[1]
    push = rng.standard_normal(picks.shape).astype(np.float32) / np.sqrt(dim)
    scale = rng.uniform(noise[0], noise[1], size=(len(picks), 1)).astype(np.float32)
    queries = picks + scale * push
    norms = np.linalg.norm(queries, axis=1, keepdims=True)
    out: npt.NDArray[np.float32] = (queries / np.maximum(norms, 1e-12)).astype(np.float32)
    return out


def _grid(kind: str, nlist: int, can_rerank: bool) -> list[dict[str, int]]:
    if kind == "hnsw":
        return [{"efSearch": ef} for ef in _EF_SEARCH]
    nprobes = [p for p in (2**i for i in range(17)) if p < nlist] + [nlist]
    if kind == "ivfpq-disk":
        capped = [p for p in nprobes if p <= _DISK_MAX_NPROBE]
        return [{"nprobe": p, "k_factor": f} for f in _DISK_K_FACTORS for p in capped]
    if kind != "ivfpq":
        return [{"nprobe": p} for p in nprobes]
    factors = _K_FACTORS if can_rerank else (1,)
    return [{"nprobe": p, "k_factor": f} for f in factors for p in nprobes]


def _measure(
    index: VectorIndex,
    params: dict[str, int],
    queries: npt.NDArray[np.float32],
    truth: npt.NDArray[np.int64],
    k: int,
) -> tuple[float, float]:
    index.set_search_params(**params)  # type: ignore[attr-defined]
    started = time.perf_counter()
    _, found = index.search(queries, k)
    elapsed = (time.perf_counter() - started) / max(len(queries), 1)
    return recall_at_k(found, truth, k), elapsed


def tune(
    index: VectorIndex,
    queries: npt.NDArray[np.float32],
    truth: npt.NDArray[np.int64],
    *,
    kind: str,
    nlist: int = 0,
    target: float = 0.95,
    k: int = 10,
    margin: float = 0.0,
) -> TuningResult:
    """Find the fastest knobs whose recall@``k`` reaches ``target``, and leave them set.

    ``truth`` holds the exact top-``k`` ids of ``queries``. A setting is accepted when it
    reaches the target on the first half of the queries and again on the held-out second
    half; the held-out recall is what is reported. With a ``margin``, both halves must reach
    ``target + margin`` first, so that queries the tuner never saw still land at the target
    (half of 400 queries measures recall to about ±0.01); only when no setting reaches that
    is the plain target accepted. When nothing reaches the target, the setting with the
    best recall is kept and reported; the caller decides what to do.
    """
    half = max(1, len(queries) // 2)
    choose_q, check_q = queries[:half], queries[half:] if len(queries) > 1 else queries
    choose_t, check_t = truth[:half], truth[half:] if len(truth) > 1 else truth
    can_rerank = getattr(index, "reranker", None) is not None
    grid = _grid(kind, nlist, can_rerank)
    # Without k_factors to compare, the first setting that passes is the cheapest.
    first_only = kind == "hnsw" or not can_rerank
    aims = [target + margin, target] if margin > 0 else [target]
    best: tuple[float, dict[str, int]] | None = None  # (recall on the first half, params)
    memo: _Memo = {}  # the second aim reuses the first one's searches
    for aim in aims:
        accepted, seen = _accepted(
            index, grid, (choose_q, choose_t), (check_q, check_t), k, aim, first_only, memo
        )
        if seen is not None and (best is None or seen[0] > best[0]):
            best = seen
        if accepted:
            chosen = min(accepted, key=lambda r: r.seconds_per_query)
            index.set_search_params(**chosen.params)  # type: ignore[attr-defined]
            return chosen
    assert best is not None
    recall, seconds = _measure(index, best[1], check_q, check_t, k)
    return TuningResult(params=dict(best[1]), recall=recall, seconds_per_query=seconds)


_Half = tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]
# (which half, the setting) -> (recall, seconds per query)
_Memo = dict[tuple[int, tuple[tuple[str, int], ...]], tuple[float, float]]


def _measure_once(
    memo: _Memo, which: int, index: VectorIndex, params: dict[str, int], half: _Half, k: int
) -> tuple[float, float]:
    key = (which, tuple(sorted(params.items())))
    if key not in memo:
        memo[key] = _measure(index, params, half[0], half[1], k)
    return memo[key]


def _accepted(
    index: VectorIndex,
    grid: list[dict[str, int]],
    choose: _Half,
    check: _Half,
    k: int,
    aim: float,
    first_only: bool,
    memo: _Memo,
) -> tuple[list[TuningResult], tuple[float, dict[str, int]] | None]:
    """The settings of ``grid`` reaching ``aim`` on both halves, and the best one tried."""
    best: tuple[float, dict[str, int]] | None = None
    accepted: list[TuningResult] = []
    factor_done: set[int] = set()
    for params in grid:
        factor = params.get("k_factor", 1)
        if factor in factor_done:
            continue
        recall, _ = _measure_once(memo, 0, index, params, choose, k)
        if best is None or recall > best[0]:
            best = (recall, params)
        if recall < aim:
            continue
        held_out, seconds = _measure_once(memo, 1, index, params, check, k)
        if held_out >= aim:
            accepted.append(TuningResult(dict(params), held_out, seconds))
            # A larger nprobe or efSearch for this k_factor only costs more time.
            factor_done.add(factor)
            if first_only:
                break
    return accepted, best
