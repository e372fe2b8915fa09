"""Consistency checks of a store: does the vector index hold exactly the stored vectors?

For the on-disk kind the check also reads back a sample of its refine store (the float16
copies it re-ranks with) against the store's vectors: a torn or overwritten refine file
would otherwise only show as lost recall.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .errors import StoreBusyError
from .index.base import VectorIndex, read_meta
from .index.manager import IndexManager
from .index.ondisk import OnDiskIndex
from .store.lock import WriterLock
from .store.reader import StoreReader

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["CheckResult", "check_store"]

# Refine rows compared with the store, and how far a float16 copy may be from its vector.
_REFINE_SAMPLE = 1_000
_REFINE_TOLERANCE = 1e-2


@dataclass
class CheckResult:
    ok: bool = True
    lines: list[str] = field(default_factory=list)
    orphans: int = 0
    missing: int = 0


def check_store(engine: Engine) -> CheckResult:
    """Compare the saved index file with the store; repair and save it when they differ."""
    result = CheckResult()
    store = engine.store()
    model = store.model()
    if model is None:
        result.lines.append("The store is empty: nothing to check.")
        return result
    stored = store.vector_ids()
    fresh = IndexManager(
        store,
        dim=model.dim,
        fingerprint=model.fingerprint,
        kind=engine.settings.index_kind,
        policy=engine.selector_policy(),
    )
    meta = read_meta(fresh.meta_path)
    if meta is None or not fresh.index_path.exists():
        result.lines.append("No saved vector index: it will be built from the store.")
        held = np.zeros(0, dtype=np.int64)
    else:
        try:
            saved = fresh.read_saved(meta.kind)
            held = saved.ids()
            damaged = _refine_damage(saved, store)
        except Exception as exc:  # unreadable file: the repair rebuilds it
            result.lines.append(f"The saved vector index cannot be read: {exc}")
            held = np.zeros(0, dtype=np.int64)
        else:
            if damaged:
                result.lines.append(
                    f"The refine store disagrees with the stored vectors ({damaged} of the "
                    "rows read back)."
                )
                held = np.zeros(0, dtype=np.int64)  # rebuild: the refine rows are wrong
    result.orphans = len(np.setdiff1d(held, stored))
    result.missing = len(np.setdiff1d(stored, held))
    duplicates = int(len(held) - len(np.unique(held)))
    result.lines.append(
        f"store: {len(stored)} vectors; index: {len(held)} vectors "
        f"({result.orphans} orphans, {result.missing} missing, {duplicates} duplicates)"
    )
    if result.orphans or result.missing or duplicates:
        try:
            with WriterLock(store.location):
                fresh.index_path.unlink(missing_ok=True)
                fresh.meta_path.unlink(missing_ok=True)
                fresh.save()
        except StoreBusyError as exc:
            result.ok = False
            result.lines.append(f"Not repaired now: {exc}")
            return result
        result.lines.append("Repaired: the index was rebuilt from the store and saved.")
    else:
        result.lines.append("OK: the vector index agrees with the store.")
    return result


def _refine_damage(index: VectorIndex, store: StoreReader) -> int:
    """Sampled refine rows of an on-disk index that differ from the store's vectors."""
    if not isinstance(index, OnDiskIndex) or len(index.refine) == 0:
        return 0
    rng = np.random.default_rng(0)
    ids = index.refine.ids()
    picked = np.unique(rng.choice(ids, size=min(_REFINE_SAMPLE, len(ids)), replace=False))
    got_ids, got = index.refine.fetch(picked)
    if len(got_ids) < len(picked):
        return len(picked) - len(got_ids)
    row_of = {int(i): r for r, i in enumerate(got_ids)}
    bad = 0
    for ids_part, vectors in store.iter_vectors(picked.tolist()):
        for i, vector in zip(ids_part.tolist(), vectors, strict=True):
            refined = got[row_of[int(i)]]
            if not np.all(np.abs(refined - vector) <= _REFINE_TOLERANCE):
                bad += 1
    return bad
