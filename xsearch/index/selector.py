"""Which vector index suits a collection: exact while it is cheap, approximate beyond.

The choice depends on the number of vectors, their dimension and a memory budget, and
every threshold is a field of :class:`SelectorPolicy` so that tests and benchmarks can move
it. The defaults come from measurements on a 2-core laptop-class CPU (bench/README.md):

* exact (``flat``) search over 100k × 512-d vectors takes about 10–25 ms per query on one
  core, which is the whole latency budget of a query; below that size an approximate index
  buys nothing and costs recall, so everything under ``exact_below`` stays exact;
* ``hnsw`` answers in well under a millisecond at recall@10 ≥ 0.99, but holds the full
  vectors plus a graph and builds slowly, so it is picked only while it fits the budget and
  the collection is below ``hnsw_below``;
* ``ivf-sq8`` keeps one byte per dimension (a quarter of flat) and trains in seconds;
* ``ivfpq`` (OPQ rotation + IVF + product quantisation, ``pq_bytes`` per vector) is for
  collections whose 8-bit codes do not fit either; its short list is re-ranked with the
  exact vectors from the store, which is what keeps its recall@10 at 0.95;
* ``ivfpq-disk`` (:mod:`.ondisk`) is ivfpq whose inverted lists and float16 refine vectors
  are memory-mapped files, for collections whose smallest codes do not fit either: memory
  holds the quantiser and the ids (8 bytes a vector), disk the rest (``pq_m`` + 8 bytes a
  vector of lists, 2·dim of refine vectors). Its codes cost no memory, so it takes the
  largest code size (best recall before re-ranking) and fewer, larger cells
  (``disk_nlist_per_sqrt``): half the coarse-quantiser work of a build and a search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ..errors import ConfigError

__all__ = [
    "APPROXIMATE_KINDS",
    "EXACT_KINDS",
    "KINDS",
    "IndexSpec",
    "SelectorPolicy",
    "canonical_kind",
    "choose_spec",
    "outgrown",
    "spec_for_kind",
]

EXACT_KINDS = ("flat", "exact-torch", "numpy")
APPROXIMATE_KINDS = ("ivf-flat", "ivf-sq8", "hnsw", "ivfpq", "ivfpq-disk")
KINDS = ("auto", *EXACT_KINDS, *APPROXIMATE_KINDS)
# Names accepted for convenience (Settings.index_kind documents "ivf").
_ALIASES = {
    "ivf": "ivf-sq8",
    "exact": "flat",
    "ivf-sq": "ivf-sq8",
    "opq-ivfpq": "ivfpq",
    "ondisk": "ivfpq-disk",
    "disk": "ivfpq-disk",
}
_IVF_KINDS = ("ivf-flat", "ivf-sq8", "ivfpq", "ivfpq-disk")

_ID_BYTES = 8


@dataclass(frozen=True, kw_only=True)
class IndexSpec:
    """How to build one index. Fields that do not apply to ``kind`` stay 0."""

    kind: str
    # Inverted-list cells of the IVF kinds.
    nlist: int = 0
    # Graph degree of hnsw.
    hnsw_m: int = 0
    # Bytes per vector (sub-quantisers) of ivfpq.
    pq_m: int = 0
    # Bits per sub-quantiser of ivfpq (8 normally; fewer lets tiny test sets train).
    pq_bits: int = 8
    # Vectors the index was sized for; an index is rebuilt when the collection outgrows it.
    sized_for: int = 0

    @property
    def exact(self) -> bool:
        return self.kind in EXACT_KINDS

    @property
    def trained(self) -> bool:
        """Whether building needs a training sample (the IVF kinds)."""
        return self.kind in _IVF_KINDS

    def bytes_per_vector(self, dim: int) -> int:
        """Resident bytes per stored vector, ids included (the memory budget is checked on it)."""
        if self.kind in ("flat", "ivf-flat", "exact-torch", "numpy"):
            return 4 * dim + _ID_BYTES
        if self.kind == "ivf-sq8":
            return dim + _ID_BYTES
        if self.kind == "hnsw":
            # Level 0 holds 2·M neighbour ids (int32); upper levels add about 1/M of that.
            return 4 * dim + _ID_BYTES + 8 * self.hnsw_m + 8
        if self.kind == "ivfpq":
            return self.pq_m + _ID_BYTES
        if self.kind == "ivfpq-disk":
            # The ids, read once from the lists; the codes and refine rows stay on disk.
            return _ID_BYTES
        raise ConfigError(f"Unknown index kind {self.kind!r}.")

    def describe(self) -> str:
        """Short build parameters, for `xsearch info` and the index sidecar."""
        parts = []
        if self.nlist:
            parts.append(f"nlist={self.nlist}")
        if self.hnsw_m:
            parts.append(f"M={self.hnsw_m}")
        if self.pq_m:
            parts.append(f"pq={self.pq_m}x{self.pq_bits}")
        return ",".join(parts)


@dataclass(frozen=True, kw_only=True)
class SelectorPolicy:
    """The thresholds of the automatic choice. The defaults are measured; see the module doc."""

    # Collections with fewer vectors than this are searched exactly.
    exact_below: int = 100_000
    # Bytes the index may occupy in memory.
    memory_budget: int = 1 << 30
    # hnsw is only chosen below this many vectors (its build time grows fastest).
    hnsw_below: int = 1_000_000
    # Graph degree of hnsw.
    hnsw_m: int = 32
    # Bytes per vector tried for ivfpq, largest first.
    pq_bytes: tuple[int, ...] = (64, 32, 16, 8)
    # Bits per ivfpq sub-quantiser.
    pq_bits: int = 8
    # IVF cells per square root of the collection size.
    nlist_per_sqrt: float = 2.0
    # The same for ivfpq-disk: 4,096 cells at 10M vectors (bench/README.md, *On disk*).
    disk_nlist_per_sqrt: float = 1.0
    # Training points per IVF cell (faiss warns below 39).
    train_per_list: int = 40
    # Smallest and largest number of IVF cells.
    min_nlist: int = 16
    max_nlist: int = 65_536
    # Rebuild an approximate index once the collection is this many times what it was sized
    # for (more IVF cells, or a different kind); geometric growth keeps rebuilds amortised.
    regrow_factor: float = 4.0
    # recall@10 against exact search that tuning must reach.
    target_recall: float = 0.95
    # Queries used to tune search parameters and measure recall.
    tuning_queries: int = 400
    # ivfpq-disk is tuned to target_recall plus this (the plain target only where that is
    # out of reach): at 10M its tuner accepted 0.952 on its held-out queries and two check
    # sets of 300 queries then measured 0.941 and 0.945 (bench/README.md, *On disk*).
    disk_recall_margin: float = 0.01
    # With a GPU serving exact search (torch), stay exact up to this many vectors: a GPU
    # scans 10M × 512-d half-precision vectors in about a millisecond.
    gpu_exact_below: int = 10_000_000
    # Compact (rebuild) an index once this share of what it holds is tombstones.
    compact_above: float = 0.2


def _nlist(count: int, policy: SelectorPolicy, *, disk: bool = False) -> int:
    """A power of two near nlist_per_sqrt·√count, within what a training sample can support."""
    per_sqrt = policy.disk_nlist_per_sqrt if disk else policy.nlist_per_sqrt
    ideal = per_sqrt * math.sqrt(max(count, 1))
    nlist = 1 << max(0, round(math.log2(max(ideal, 1.0))))
    trainable = max(1, count // policy.train_per_list)
    while nlist > trainable and nlist > 1:
        nlist //= 2
    return max(1, min(policy.max_nlist, max(min(policy.min_nlist, trainable), nlist)))


def _pq_m(dim: int, budget_per_vector: float, policy: SelectorPolicy) -> int:
    fitting = [m for m in policy.pq_bytes if dim % m == 0 and m + _ID_BYTES <= budget_per_vector]
    usable = [m for m in policy.pq_bytes if dim % m == 0]
    if fitting:
        return fitting[0]
    if usable:
        return usable[-1]
    return 1


def choose_spec(
    count: int, dim: int, policy: SelectorPolicy | None = None, *, gpu: bool = False
) -> IndexSpec:
    """The index kind and shape for ``count`` vectors of ``dim`` dimensions.

    ``gpu`` says that exact search would run on a GPU, which moves the exact threshold up.
    """
    policy = policy or SelectorPolicy()
    if count < (policy.gpu_exact_below if gpu else policy.exact_below):
        return IndexSpec(kind="flat", sized_for=count)
    per_vector = policy.memory_budget / max(count, 1)
    hnsw = IndexSpec(kind="hnsw", hnsw_m=policy.hnsw_m, sized_for=count)
    if count < policy.hnsw_below and hnsw.bytes_per_vector(dim) <= per_vector:
        return hnsw
    nlist = _nlist(count, policy)
    sq8 = IndexSpec(kind="ivf-sq8", nlist=nlist, sized_for=count)
    if sq8.bytes_per_vector(dim) <= per_vector:
        return sq8
    smallest = min((m for m in policy.pq_bytes if dim % m == 0), default=1)
    if smallest + _ID_BYTES <= per_vector:
        return IndexSpec(
            kind="ivfpq",
            nlist=nlist,
            pq_m=_pq_m(dim, per_vector, policy),
            pq_bits=policy.pq_bits,
            sized_for=count,
        )
    return _disk_spec(count, dim, policy)


def _disk_spec(count: int, dim: int, policy: SelectorPolicy) -> IndexSpec:
    return IndexSpec(
        kind="ivfpq-disk",
        nlist=_nlist(count, policy, disk=True),
        pq_m=_pq_m(dim, math.inf, policy),
        pq_bits=policy.pq_bits,
        sized_for=count,
    )


def canonical_kind(kind: str) -> str:
    """``kind`` with aliases resolved; raises ConfigError for an unknown one."""
    kind = _ALIASES.get(kind, kind)
    if kind not in KINDS:
        raise ConfigError(f"Unknown index kind {kind!r}; use one of {', '.join(KINDS)}.")
    return kind


def spec_for_kind(
    kind: str, count: int, dim: int, policy: SelectorPolicy | None = None, *, gpu: bool = False
) -> IndexSpec:
    """The spec of a requested ``kind`` ("auto" chooses), shaped for ``count`` vectors."""
    policy = policy or SelectorPolicy()
    kind = canonical_kind(kind)
    if kind == "auto":
        return choose_spec(count, dim, policy, gpu=gpu)
    if kind == "ivfpq-disk":
        return _disk_spec(count, dim, policy)
    spec = IndexSpec(kind=kind, sized_for=count)
    if kind in ("ivf-flat", "ivf-sq8", "ivfpq"):
        spec = replace(spec, nlist=_nlist(count, policy))
    if kind == "hnsw":
        spec = replace(spec, hnsw_m=policy.hnsw_m)
    if kind == "ivfpq":
        per_vector = policy.memory_budget / max(count, 1)
        spec = replace(spec, pq_m=_pq_m(dim, per_vector, policy), pq_bits=policy.pq_bits)
    return spec


def outgrown(
    spec: IndexSpec,
    count: int,
    dim: int,
    policy: SelectorPolicy,
    *,
    auto: bool = True,
    gpu: bool = False,
) -> bool:
    """Whether an index built as ``spec`` should be rebuilt now that it holds ``count``.

    With ``auto`` the kind itself may change; going back from approximate to exact waits
    until the collection is half the threshold, so a store near it does not flap.
    """
    if spec.exact:
        return auto and not choose_spec(count, dim, policy, gpu=gpu).exact
    if auto:
        wanted = choose_spec(count, dim, policy, gpu=gpu)
        if wanted.exact:
            threshold = policy.gpu_exact_below if gpu else policy.exact_below
            return count < threshold // 2
        if wanted.kind != spec.kind:
            return True
    grown = count >= policy.regrow_factor * max(spec.sized_for, 1)
    shrunk = count * policy.regrow_factor < spec.sized_for
    return grown or shrunk
