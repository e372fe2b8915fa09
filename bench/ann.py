"""ANN recall@10 against exact search, latency and memory, per index kind (issue 6, item 3).

Every kind the selector can pick (and ivf-flat, which it can be told to use) is built by
xsearch's own build code (``xsearch.index.build.build_index``: train on a sample, add,
tune to recall@10 ≥ 0.95 on held-out perturbed queries), then checked on two query sets
the tuner never saw: fresh vectors from the data's distribution, and the same pushed away
like text queries (cosine ≈ 0.45 to their source, as CLIP text-to-image pairs have).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt

from xsearch.index.build import build_index
from xsearch.index.selector import SelectorPolicy, choose_spec, spec_for_kind
from xsearch.index.tuning import recall_at_k

from .data import ArraySource, clip_like, pushed

KINDS = ("flat", "hnsw", "ivf-flat", "ivf-sq8", "ivfpq")


def exact_top10(
    vectors: npt.NDArray[np.float32], queries: npt.NDArray[np.float32], first_id: int = 1
) -> npt.NDArray[np.int64]:
    best_s = np.full((len(queries), 10), -np.inf, dtype=np.float32)
    best_i = np.full((len(queries), 10), -1, dtype=np.int64)
    for start in range(0, len(vectors), 100_000):
        sims = queries @ vectors[start : start + 100_000].T
        ids = np.arange(start, start + sims.shape[1], dtype=np.int64) + first_id
        s = np.concatenate([best_s, sims], axis=1)
        i = np.concatenate([best_i, np.broadcast_to(ids, sims.shape)], axis=1)
        top = np.argpartition(-s, 9, axis=1)[:, :10]
        rows = np.arange(len(queries))[:, None]
        best_s, best_i = s[rows, top], i[rows, top]
    order = np.argsort(-best_s, axis=1)
    return np.take_along_axis(best_i, order, axis=1)


def latency_ms(index: Any, queries: npt.NDArray[np.float32], k: int = 10) -> dict[str, float]:
    times = []
    for q in queries:
        started = time.perf_counter()
        index.search(q[None, :], k)
        times.append((time.perf_counter() - started) * 1e3)
    return {
        "p50_ms": float(np.percentile(times, 50)),
        "p99_ms": float(np.percentile(times, 99)),
    }


def index_bytes(index: Any) -> int:
    import faiss

    raw = getattr(index, "raw", None)
    if raw is None:
        return 0
    return len(faiss.serialize_index(raw))


def run(
    n: int, *, kinds: tuple[str, ...] = KINDS, n_queries: int = 1000, log: Any = print
) -> dict[str, Any]:
    import faiss

    dim = 512
    started = time.perf_counter()
    vectors = clip_like(n, dim, seed=0)
    fresh = clip_like(n_queries, dim, seed=1)
    text_like = pushed(fresh, 2.0, seed=2)
    truth_fresh = exact_top10(vectors, fresh)
    truth_text = exact_top10(vectors, text_like)
    log(f"ann: {n} vectors generated, ground truth in {time.perf_counter() - started:.0f} s")
    policy = SelectorPolicy()
    source = ArraySource(vectors)
    out: dict[str, Any] = {
        "vectors": n,
        "dim": dim,
        "selector_picks": choose_spec(n, dim, policy).kind,
        "memory_budget_bytes": policy.memory_budget,
        "target_recall": policy.target_recall,
        "latency_threads": 1,
        "kinds": {},
    }
    for kind in kinds:
        spec = spec_for_kind(kind, n, dim, policy)
        faiss.omp_set_num_threads(2)
        built = build_index(source, dim, spec, policy)
        faiss.omp_set_num_threads(1)
        _, got_fresh = built.index.search(fresh, 10)
        _, got_text = built.index.search(text_like, 10)
        row = {
            "built_as": built.spec.kind,
            "shape": built.spec.describe(),
            "build_s": round(built.seconds, 1),
            "params": built.params_text(),
            "tuned_recall_at_10": built.recall,
            "recall_at_10_fresh": recall_at_k(got_fresh, truth_fresh),
            "recall_at_10_textlike": recall_at_k(got_text, truth_text),
            "index_bytes": index_bytes(built.index),
            "bytes_per_vector_estimate": built.spec.bytes_per_vector(dim),
            **latency_ms(built.index, text_like[:300]),
        }
        out["kinds"][kind] = row
        log(f"ann: {kind}: {row}")
        del built
    return out
