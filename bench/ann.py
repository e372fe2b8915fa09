"""ANN recall@10 against exact search, latency and memory, per index kind (issue 6, item 3).

Every kind the selector can pick (and ivf-flat, which it can be told to use) is built by
xsearch's own build code (``xsearch.index.build.build_index``: train on a sample, add,
tune to recall@10 ≥ 0.95 on held-out perturbed queries), then checked on two query sets
the tuner never saw: fresh vectors from the data's distribution, and the same pushed away
like text queries (cosine ≈ 0.45 to their source, as CLIP text-to-image pairs have).

The on-disk kind (issue 20) is built into files under ``workdir`` and measured the same
way, plus its files' size and the peak resident memory of its build. Past
``IN_MEMORY_MAX`` vectors only it runs, on vectors generated chunk by chunk from seeds
(``data.GeneratedSource``), and the exact top-10 of the check queries is computed while the
build streams the chunks past (``tap``), so the collection is never in memory.

Query latency is one query at a time on one thread; ``with_text_*`` adds the toy model's
text encoding, measured separately on as many distinct query strings (its 512-d vectors
are not the synthetic ones', so the two halves are timed apart and added query by query).
"""

from __future__ import annotations

import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from xsearch.index.build import build_index
from xsearch.index.ondisk import DISK_KIND, OnDiskIndex
from xsearch.index.selector import SelectorPolicy, choose_spec, spec_for_kind
from xsearch.index.tuning import RunningTopK, recall_at_k

from .data import ArraySource, GeneratedSource, clip_like, pushed

KINDS = ("flat", "hnsw", "ivf-flat", "ivf-sq8", "ivfpq", DISK_KIND)
# Above this many vectors only the on-disk kind is built (the others need them in memory).
IN_MEMORY_MAX = 2_000_000
# Check queries per set at the streamed sizes (each costs a pass of exact scoring).
STREAMED_QUERIES = 300


class PeakRSS:
    """The largest resident set of this process while it is entered, sampled every 50 ms
    from /proc/self/status: in all, and its anonymous part (heap: what the build itself
    holds). The rest is file pages of mapped files (lists, refine store), which the kernel
    maps in around every touched row and can drop again at any time."""

    def __init__(self) -> None:
        self.peak = 0
        self.peak_anon = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def _rss() -> tuple[int, int]:
        found: dict[str, int] = {}
        with open("/proc/self/status") as fh:
            for line in fh:
                name, _, value = line.partition(":")
                if name in ("VmRSS", "RssAnon"):
                    found[name] = int(value.split()[0]) * 1024
        return found.get("VmRSS", 0), found.get("RssAnon", 0)

    def _take(self) -> None:
        rss, anon = self._rss()
        self.peak, self.peak_anon = max(self.peak, rss), max(self.peak_anon, anon)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._take()
            self._stop.wait(0.05)

    def __enter__(self) -> PeakRSS:
        self.start_rss, self.start_anon = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._take()


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


def search_times_ms(index: Any, queries: npt.NDArray[np.float32], k: int = 10) -> list[float]:
    times = []
    for q in queries:
        started = time.perf_counter()
        index.search(q[None, :], k)
        times.append((time.perf_counter() - started) * 1e3)
    return times


def latency_ms(
    index: Any, queries: npt.NDArray[np.float32], text_ms: list[float] | None = None
) -> dict[str, float]:
    times = search_times_ms(index, queries)
    row = {
        "p50_ms": round(float(np.percentile(times, 50)), 3),
        "p99_ms": round(float(np.percentile(times, 99)), 3),
    }
    if text_ms:
        total = [t + text_ms[i % len(text_ms)] for i, t in enumerate(times)]
        row["with_text_p50_ms"] = round(float(np.percentile(total, 50)), 3)
        row["with_text_p99_ms"] = round(float(np.percentile(total, 99)), 3)
    return row


def text_encoding_ms(n: int) -> list[float]:
    """Milliseconds the toy model's text tower takes per query, ``n`` distinct strings."""
    from xsearch import Engine, Settings

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(store=Path(tmp) / "store", model="toy-bilingual", device="cpu")
        with Engine(settings) as engine:
            engine.embed_text("warm up")
            times = []
            for i in range(n):
                started = time.perf_counter()
                engine.embed_text(f"a photo of thing number {i} at the beach")
                times.append((time.perf_counter() - started) * 1e3)
    return times


def index_bytes(index: Any) -> int:
    import faiss

    if isinstance(index, OnDiskIndex):
        return sum(p.stat().st_size for p in disk_files(index))
    raw = getattr(index, "raw", None)
    if raw is None:
        return 0
    return len(faiss.serialize_index(raw))


def disk_files(index: OnDiskIndex) -> list[Path]:
    return [p for p in index.path.parent.glob(index.path.name + "*") if p.is_file()]


def run(
    n: int,
    *,
    kinds: tuple[str, ...] = KINDS,
    n_queries: int = 1000,
    workdir: Path | None = None,
    log: Any = print,
) -> dict[str, Any]:
    import faiss

    dim = 512
    policy = SelectorPolicy()
    workdir = Path(workdir or tempfile.mkdtemp(prefix="xsearch-ann-"))
    streamed = n > IN_MEMORY_MAX
    if streamed:
        kinds, n_queries = (DISK_KIND,), min(n_queries, STREAMED_QUERIES)
    started = time.perf_counter()
    fresh = clip_like(n_queries, dim, seed=1)
    text_like = pushed(fresh, 2.0, seed=2)
    if streamed:
        source: Any = GeneratedSource(n, dim, seed=0)
        truth: tuple[Any, Any] | None = None
    else:
        vectors = clip_like(n, dim, seed=0)
        source = ArraySource(vectors)
        truth = (exact_top10(vectors, fresh), exact_top10(vectors, text_like))
        log(f"ann: {n} vectors generated, ground truth in {time.perf_counter() - started:.0f} s")
    text_ms = text_encoding_ms(300)
    out: dict[str, Any] = {
        "vectors": n,
        "dim": dim,
        "selector_picks": choose_spec(n, dim, policy).kind,
        "memory_budget_bytes": policy.memory_budget,
        "target_recall": policy.target_recall,
        "latency_threads": 1,
        "text_encoding_ms": {
            "p50": round(float(np.percentile(text_ms, 50)), 3),
            "p99": round(float(np.percentile(text_ms, 99)), 3),
            "model": "toy-bilingual",
        },
        "streamed": streamed,
        "kinds": {},
    }
    for kind in kinds:
        spec = spec_for_kind(kind, n, dim, policy)
        faiss.omp_set_num_threads(2)
        # One folder per kind and size: a run at another size never removes this one's files.
        path = workdir / f"{kind}-{n}" / "index.faiss"
        shutil.rmtree(path.parent, ignore_errors=True)
        path.parent.mkdir(parents=True)
        tops = (RunningTopK(fresh, 10), RunningTopK(text_like, 10))

        def tap(ids: Any, chunk: Any, tops: tuple[RunningTopK, RunningTopK] = tops) -> None:
            for top in tops:
                top.update(ids, chunk)

        with PeakRSS() as rss:
            built = build_index(
                source, dim, spec, policy, path=path, tap=tap if truth is None else None
            )
            if isinstance(built.index, OnDiskIndex):
                built.index.save(path)
        want = truth or tuple(_sorted(top) for top in tops)
        faiss.omp_set_num_threads(1)
        _, got_fresh = built.index.search(fresh, 10)
        _, got_text = built.index.search(text_like, 10)
        row = {
            "built_as": built.spec.kind,
            "shape": built.spec.describe(),
            "build_s": round(built.seconds, 1),
            "params": built.params_text(),
            "tuned_recall_at_10": built.recall,
            "recall_at_10_fresh": recall_at_k(got_fresh, want[0]),
            "recall_at_10_textlike": recall_at_k(got_text, want[1]),
            "index_bytes": index_bytes(built.index),
            "bytes_per_vector_estimate": built.spec.bytes_per_vector(dim),
            "build_peak_rss_mb": round(rss.peak / 2**20),
            "build_peak_anon_mb": round(rss.peak_anon / 2**20),
            "rss_before_build_mb": round(rss.start_rss / 2**20),
            "anon_before_build_mb": round(rss.start_anon / 2**20),
            "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            **latency_ms(built.index, text_like[:300], text_ms),
        }
        out["kinds"][kind] = row
        log(f"ann: {kind}: {row}")
        del built
    return out


def _sorted(top: RunningTopK) -> npt.NDArray[np.int64]:
    order = np.argsort(-top.scores, axis=1, kind="stable")
    return np.take_along_axis(top.ids, order, axis=1)
