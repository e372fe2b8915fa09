"""The on-disk kind, ``ivfpq-disk``: IVF-PQ whose inverted lists and refine vectors live in files.

For collections whose codes do not fit the memory budget (issue 20). What stays in memory
is the coarse quantiser, the PQ tables, the ids and the few pages the last searches
touched; the rest is memory-mapped by faiss (``OnDiskInvertedLists``) and numpy.

The files of one build share a *token*, next to the index file ``index.faiss`` (the faiss
header, which names the lists file), all rebuildable caches of the store's vectors:

* ``index.faiss.<token>.ivfdata``: the inverted lists, written once by
  ``faiss.contrib.ondisk.merge_ondisk`` from shards and never changed afterwards;
* ``index.faiss.<token>.refine`` and ``.refine-ids.npy``: every vector as float16, in the
  order it was added, and the vector row ids of those rows. A search re-ranks its
  ``k·k_factor`` candidates with these, which is what keeps recall@10 ≥ 0.95;
* ``index.faiss.<token>.delta``: vectors added since the build, in a small in-memory IVF-PQ
  index sharing the trained quantiser (faiss's on-disk lists can grow in place, but they are
  written through the mapping, so a crash would tear a file the header describes);
* ``index.faiss.<token>.deleted.npy``: ids deleted from the lists since the build,
  tombstones filtered out at search time by a faiss id selector.

The manager compacts (rebuilds) the index once tombstones and delta together pass
``SelectorPolicy.compact_above`` of it, as it does for hnsw's tombstones.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import IndexBackendError
from .base import SearchResult, atomic_write, no_hits
from .faiss_index import _ivf_ids, _rerank, _threads_for, import_faiss

__all__ = [
    "DISK_KIND",
    "OnDiskIndex",
    "RefineStore",
    "c_stdout_to_stderr",
    "new_token",
    "token_files",
]

DISK_KIND = "ivfpq-disk"
_SUFFIXES = (".ivfdata", ".refine", ".refine-ids.npy", ".delta", ".deleted.npy")


def new_token() -> str:
    return uuid.uuid4().hex[:12]


def token_files(path: Path, token: str) -> dict[str, Path]:
    """The files of build ``token`` beside the index file ``path``, by suffix."""
    return {s: path.with_name(f"{path.name}.{token}{s}") for s in _SUFFIXES}


@contextlib.contextmanager
def c_stdout_to_stderr() -> Iterator[None]:
    """File descriptor 1 points at stderr meanwhile. faiss prints with C printf when it
    merges on-disk lists ("resizing <file> to <n> bytes") and when it opens lists from a
    moved folder ("IO_FLAG_ONDISK_SAME_DIR: updating ondisk filename ..."), which would land
    in the middle of a command's stdout (``xsearch query --json``). C's buffer is flushed
    before fd 1 is put back, or the line would come out later on stdout anyway."""
    if os.name != "posix":
        yield
        return
    libc = ctypes.CDLL(None)
    if sys.stdout is not None:
        sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        libc.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)


def _save_npy(path: Path, array: npt.NDArray[Any]) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("wb") as fh:
            np.save(fh, array)

    atomic_write(path, write)


def _fsync(path: Path) -> None:
    with path.open("rb") as fh:
        os.fsync(fh.fileno())


class RefineStore:
    """Float16 copies of the vectors, in a file read back through mmap.

    Rows are only appended; an id added again (after a delete) has its latest row used. A
    store opened from disk, or saved once, is shared: other processes (a query beside an
    index run) map the rows its ids file lists. Rows added to a shared store therefore go
    to a private, unnamed scratch file, and :meth:`save` (only the writer saves) copies them
    into the refine file past the saved rows, fsyncs, then writes the ids file. Rows past the
    ids file (a crash between the two) are ignored and overwritten by the next save. Only a
    new build's file, which no other process knows yet, is appended to directly.
    """

    def __init__(self, path: Path, dim: int, ids: npt.NDArray[np.int64] | None = None) -> None:
        self.path = path
        self.dim = dim
        self._ids: list[npt.NDArray[np.int64]] = [] if ids is None else [ids]
        self._count = 0 if ids is None else len(ids)
        self._lookup: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]] | None = None
        # Rows of the refine file this store reads; more are in the scratch file.
        self._in_file = self._count
        self._shared = ids is not None
        self._scratch: Any = None
        self._scratch_rows: np.memmap[Any, np.dtype[np.float16]] | None = None
        size = path.stat().st_size if path.exists() else 0
        if size < self._count * self._row_bytes:
            raise IndexBackendError(
                f"The refine store {path.name} holds {size // self._row_bytes} rows, "
                f"{self._count} expected."
            )
        # Mapped now: a later save of another build may unlink the file (the mapping stays).
        self._rows = self._map_file()

    @classmethod
    def open(cls, path: Path, ids_path: Path, dim: int) -> RefineStore:
        return cls(path, dim, np.load(ids_path).astype(np.int64))

    @property
    def _row_bytes(self) -> int:
        return 2 * self.dim

    def _map_file(self) -> np.memmap[Any, np.dtype[np.float16]] | None:
        if self._in_file == 0:
            return None
        return np.memmap(self.path, np.float16, "r", shape=(self._in_file, self.dim))

    def __len__(self) -> int:
        return self._count

    def ids(self) -> npt.NDArray[np.int64]:
        if len(self._ids) != 1:
            joined = np.concatenate(self._ids) if self._ids else np.zeros(0, dtype=np.int64)
            self._ids = [joined]
        return self._ids[0]

    def append(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        if len(ids) == 0:
            return
        data = np.ascontiguousarray(vectors, dtype=np.float16).tobytes()
        if self._shared:
            if self._scratch is None:
                # Closed by save(), or with the store: it lives as long as the rows in it.
                self._scratch = tempfile.TemporaryFile(dir=self.path.parent)  # noqa: SIM115
            self._scratch.seek(0, os.SEEK_END)
            self._scratch.write(data)
            self._scratch.flush()
            self._scratch_rows = None
        else:
            with self.path.open("ab") as fh:
                fh.write(data)
            self._in_file += len(ids)
            self._rows = None
        self._ids.append(np.asarray(ids, dtype=np.int64).copy())
        self._count += len(ids)
        self._lookup = None

    def save(self, ids_path: Path) -> None:
        """The scratch rows into the file past the saved ones, fsynced, then the ids file."""
        with self.path.open("ab" if not self.path.exists() else "rb+") as fh:
            if self._scratch is not None:
                fh.seek(self._in_file * self._row_bytes)
                self._scratch.seek(0)
                shutil.copyfileobj(self._scratch, fh)
                fh.truncate()  # a crashed run's rows past these (no reader maps them)
            fh.flush()
            os.fsync(fh.fileno())
        _save_npy(ids_path, self.ids())
        if self._scratch is not None:
            self._scratch.close()
            self._scratch, self._scratch_rows = None, None
        self._in_file, self._shared = self._count, True
        self._rows = self._map_file()

    def fetch(
        self, wanted: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """The stored rows of ``wanted`` (those it has), as float32: a faiss_index.Reranker."""
        if self._lookup is None:
            ids = self.ids()
            order = np.argsort(ids, kind="stable")
            self._lookup = (ids[order], order)
        sorted_ids, order = self._lookup
        pos = np.searchsorted(sorted_ids, wanted, side="right") - 1
        found = (pos >= 0) & (sorted_ids[np.maximum(pos, 0)] == wanted)
        rows = np.sort(order[pos[found]])  # in file order: fewer, longer reads
        if len(rows) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.dim), dtype=np.float32)
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        in_file = rows < self._in_file
        if in_file.any():
            if self._rows is None:
                self._rows = self._map_file()
            assert self._rows is not None
            out[in_file] = self._rows[rows[in_file]]
        if not in_file.all():
            out[~in_file] = self._scratch_map()[rows[~in_file] - self._in_file]
        return self.ids()[rows], out

    def _scratch_map(self) -> np.memmap[Any, np.dtype[np.float16]]:
        if self._scratch_rows is None:
            shape = (self._count - self._in_file, self.dim)
            self._scratch_rows = np.memmap(self._scratch, np.float16, "r", shape=shape)
        return self._scratch_rows


class OnDiskIndex:
    """IVF-PQ over memory-mapped on-disk lists, a delta in memory, re-ranked from disk.

    ``search_params``: ``nprobe`` and ``k_factor`` (as for ivfpq).
    """

    kind = DISK_KIND

    def __init__(
        self,
        path: Path,
        token: str,
        base: Any,
        delta: Any,
        refine: RefineStore,
        dead: npt.NDArray[np.int64] | None = None,
    ) -> None:
        self._faiss = import_faiss()
        self.path = path
        self.token = token
        self._base = base
        self._delta = delta
        self.refine = refine
        self.reranker = refine.fetch
        self._dead: set[int] = set() if dead is None else set(dead.tolist())
        self._selector: Any = None
        self._base_ids: npt.NDArray[np.int64] | None = None
        self.search_params: dict[str, int] = {}

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path) -> OnDiskIndex:
        """The index saved at ``path``; raises when a file of it is missing or too short."""
        faiss = import_faiss()
        flags = faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY
        with c_stdout_to_stderr():
            base = faiss.read_index(str(path), flags)
        lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(base).invlists)
        if not isinstance(lists, faiss.OnDiskInvertedLists):
            raise IndexBackendError(f"{path.name} has no on-disk inverted lists.")
        name = Path(lists.filename).name
        if not (name.startswith(path.name + ".") and name.endswith(".ivfdata")):
            raise IndexBackendError(f"{path.name} names the lists file of another index, {name}.")
        token = name[len(path.name) + 1 : -len(".ivfdata")]
        files = token_files(path, token)
        size = files[".ivfdata"].stat().st_size  # (raises when it is gone)
        if size < lists.totsize:
            raise IndexBackendError(f"{name} holds {size} bytes, {lists.totsize} expected.")
        delta = faiss.read_index(str(files[".delta"]))
        dim = int(base.d)
        refine = RefineStore.open(files[".refine"], files[".refine-ids.npy"], dim)
        dead = np.load(files[".deleted.npy"]) if files[".deleted.npy"].exists() else None
        index = cls(path, token, base, delta, refine, dead)
        if len(refine) < int(base.ntotal) + int(delta.ntotal):
            raise IndexBackendError(
                f"The refine store holds {len(refine)} vectors, fewer than the index's "
                f"{int(base.ntotal) + int(delta.ntotal)}."
            )
        return index

    # -- the port --------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._base.ntotal) - len(self._dead) + int(self._delta.ntotal)

    @property
    def tombstones(self) -> int:
        return len(self._dead)

    @property
    def unmerged(self) -> int:
        """Vectors added since the build, held in memory until the next rebuild."""
        return int(self._delta.ntotal)

    @property
    def raw(self) -> Any:
        return self._base

    def set_search_params(self, **params: int) -> None:
        self.search_params.update(params)
        if "nprobe" in params:
            for index in (self._base, self._delta):
                self._faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])

    def base_ids(self) -> npt.NDArray[np.int64]:
        """Ids in the on-disk lists, read from them once (they never change), sorted."""
        if self._base_ids is None:
            self._base_ids = np.sort(_ivf_ids(self._faiss, self._base))
        return self._base_ids

    def ids(self) -> npt.NDArray[np.int64]:
        held = self.base_ids()
        if self._dead:
            held = held[~np.isin(held, self._dead_array())]
        return np.concatenate([held, _ivf_ids(self._faiss, self._delta)])

    def add(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.refine.append(ids, vectors)
        self._delta.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))

    def remove(self, ids: npt.NDArray[np.int64]) -> None:
        if len(ids) == 0:
            return
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        self._delta.remove_ids(ids)
        base = self.base_ids()
        pos = np.minimum(np.searchsorted(base, ids), max(len(base) - 1, 0))
        in_base = ids[base[pos] == ids] if len(base) else ids[:0]
        self._dead.update(in_base.tolist())
        self._selector = None

    def search(self, queries: npt.NDArray[np.float32], k: int) -> SearchResult:
        with _threads_for(queries.shape[0]):
            return self._search(queries, k)

    def _search(self, queries: npt.NDArray[np.float32], k: int) -> SearchResult:
        n_q = queries.shape[0]
        if len(self) == 0 or k == 0:
            return no_hits(n_q, k)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        fetch = k * max(1, self.search_params.get("k_factor", 1))
        scores, ids = self._candidates(queries, fetch, None)
        short = (ids >= 0).sum(axis=1) < min(fetch, len(self))
        if short.any():
            # Too few vectors in the probed cells: those queries scan every cell, so callers
            # paging through results get min(k, len) of them (as FaissIndex does).
            nlist = self._faiss.extract_index_ivf(self._base).nlist
            scores[short], ids[short] = self._candidates(queries[short], fetch, nlist)
        return _rerank(queries, ids, k, self.refine.fetch)

    def _candidates(
        self, queries: npt.NDArray[np.float32], fetch: int, nprobe: int | None
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """The best ``fetch`` by PQ score from the lists (less tombstones) and the delta."""
        faiss = self._faiss
        probe = nprobe or self.search_params.get("nprobe", 1)
        ivf = faiss.SearchParametersIVF(nprobe=int(probe))
        if self._dead:
            ivf.sel = self._dead_selector()
        params = faiss.SearchParametersPreTransform(index_params=ivf)
        pre = isinstance(self._base, faiss.IndexPreTransform)
        scores, ids = self._base.search(queries, fetch, params=params if pre else ivf)
        if self._delta.ntotal:
            plain = faiss.SearchParametersIVF(nprobe=int(probe))
            delta_params = faiss.SearchParametersPreTransform(index_params=plain)
            more = self._delta.search(queries, fetch, params=delta_params if pre else plain)
            scores = np.concatenate([scores, more[0]], axis=1)
            ids = np.concatenate([ids, more[1]], axis=1)
            scores[ids < 0] = -np.inf
            top = np.argsort(-scores, axis=1, kind="stable")[:, :fetch]
            scores = np.take_along_axis(scores, top, axis=1)
            ids = np.take_along_axis(ids, top, axis=1)
        return scores.astype(np.float32), ids.astype(np.int64)

    def _dead_array(self) -> npt.NDArray[np.int64]:
        return np.fromiter(self._dead, dtype=np.int64, count=len(self._dead))

    def _dead_selector(self) -> Any:
        if self._selector is None:
            batch = self._faiss.IDSelectorBatch(self._dead_array())
            # Keep the batch alive as long as the negation that points at it.
            self._selector = (batch, self._faiss.IDSelectorNot(batch))
        return self._selector[1]

    # -- saving ----------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write what changed since the build, then the header, each file atomically.

        The order keeps every crash recoverable by the manager's reconciliation: the lists
        and refine rows on disk before anything names them, refine ids before the delta (a vector the delta has is always in the refine store), tombstones
        after. Files of other builds are removed once the header names this one.
        """
        if path.resolve() != self.path.resolve():
            self._move_to(path)
        files = token_files(path, self.token)
        # merge_ondisk writes the lists through a mapping and never syncs them: without this
        # a power cut after the header below could leave a header over unwritten lists.
        _fsync(files[".ivfdata"])
        self.refine.save(files[".refine-ids.npy"])
        atomic_write(files[".delta"], lambda tmp: self._faiss.write_index(self._delta, str(tmp)))
        if self._dead:
            _save_npy(files[".deleted.npy"], self._dead_array())
        else:
            files[".deleted.npy"].unlink(missing_ok=True)
        atomic_write(path, lambda tmp: self._faiss.write_index(self._base, str(tmp)))
        remove_other_builds(path, self.token)

    def _move_to(self, path: Path) -> None:
        """Hard-link (or copy) this build's lists and refine rows beside ``path``."""
        old, new = token_files(self.path, self.token), token_files(path, self.token)
        for suffix in (".ivfdata", ".refine"):
            new[suffix].unlink(missing_ok=True)
            try:
                os.link(old[suffix], new[suffix])
            except OSError:
                shutil.copyfile(old[suffix], new[suffix])
        # The header names its lists file: written as it is, it would name the old one.
        lists = self._faiss.extract_index_ivf(self._base).invlists
        self._faiss.downcast_InvertedLists(lists).filename = str(new[".ivfdata"])
        self.path = path
        self.refine.path = new[".refine"]


def remove_other_builds(path: Path, keep: str) -> None:
    """Delete the files of builds other than ``keep`` beside ``path`` (a process that still
    maps one keeps its pages: unlinking does not take them away)."""
    prefix = path.name + "."
    for other in path.parent.glob(prefix + "*"):
        rest = other.name[len(prefix) :]
        token, _, suffix = rest.partition(".")
        ours = f".{suffix}" in _SUFFIXES or suffix.startswith("shard.")
        if token != keep and ours:
            with contextlib.suppress(OSError):
                other.unlink()
