"""Consistency checks of a store: does the vector index hold exactly the stored vectors?"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .errors import StoreBusyError
from .index.base import read_meta
from .index.manager import IndexManager
from .store.lock import WriterLock

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["CheckResult", "check_store"]


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
    fresh = IndexManager(store, dim=model.dim, fingerprint=model.fingerprint)
    meta = read_meta(fresh.meta_path)
    if meta is None or not fresh.index_path.exists():
        result.lines.append("No saved vector index: it will be built from the store.")
        held = np.zeros(0, dtype=np.int64)
    else:
        try:
            held = fresh.read_saved(meta.kind).ids()
        except Exception as exc:  # unreadable file: the repair rebuilds it
            result.lines.append(f"The saved vector index cannot be read: {exc}")
            held = np.zeros(0, dtype=np.int64)
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
