"""The vector-index port: integer ids (the store's vector row ids) and unit vectors."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = [
    "IndexMeta",
    "SearchResult",
    "VectorIndex",
    "atomic_write",
    "no_hits",
    "read_meta",
    "write_meta",
]

SearchResult = tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]


def no_hits(n_queries: int, k: int) -> SearchResult:
    """A result with every slot empty (id -1, score -inf), as the port defines them."""
    return (
        np.full((n_queries, k), -np.inf, dtype=np.float32),
        np.full((n_queries, k), -1, dtype=np.int64),
    )


@runtime_checkable
class VectorIndex(Protocol):
    """Inner-product search over L2-normalised vectors, addressed by int64 ids.

    ``search`` returns (scores, ids) of shape (n_queries, k), best first; slots past the
    number of stored vectors hold id -1 and score -inf.
    """

    kind: str

    def __len__(self) -> int: ...

    def add(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None: ...

    def remove(self, ids: npt.NDArray[np.int64]) -> None: ...

    def search(self, queries: npt.NDArray[np.float32], k: int) -> SearchResult: ...

    def ids(self) -> npt.NDArray[np.int64]: ...

    def save(self, path: Path) -> None: ...


@dataclass(frozen=True)
class IndexMeta:
    """The sidecar of a saved index: what built it, and which store generation it mirrors."""

    kind: str
    dim: int
    count: int
    generation: int
    fingerprint: str
    # Measured recall@10 against exact search; None for exact indexes.
    recall_at_10: float | None = None
    # Tuned search-time knobs, e.g. "nprobe=16" or "efSearch=64".
    params: str = ""
    # The IndexSpec fields it was built from (kind, nlist, sized_for, ...).
    build: dict[str, int | str] = field(default_factory=dict)


def write_meta(path: Path, meta: IndexMeta) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(asdict(meta), indent=2)))


def read_meta(path: Path) -> IndexMeta | None:
    try:
        return IndexMeta(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write through a temporary file in the same folder, fsync it, then rename over ``path``.

    Readers see the old file or the new one, never a torn one, and a crash leaves at worst a
    stray temporary file.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        tmp.replace(path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if tmp.exists():
            tmp.unlink()
