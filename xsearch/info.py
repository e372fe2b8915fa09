"""What a store holds and how this machine would use it: `xsearch info` and `/api/status`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .index.manager import IndexManager
from .store.reader import StoreReader
from .store.records import DB_NAME

__all__ = ["StoreInfo", "describe_store"]


@dataclass(frozen=True)
class StoreInfo:
    location: str
    model: str | None
    fingerprint: str | None
    dim: int | None
    images: int
    videos: int
    vectors: int
    failures: int
    partial: int
    index_kind: str | None
    index_vectors: int | None
    db_bytes: int
    index_bytes: int
    # recall@10 of the vector index against exact search, measured when it was built
    # (None for exact indexes, which need no measuring).
    index_recall_at_10: float | None = None
    # Tuned search knobs ("nprobe=32") and build shape ("nlist=2048") of an approximate index.
    index_params: str = ""
    index_build: str = ""
    # How this engine's settings encode images and texts for the store's model: "int8 (its
    # measured agreement)", or torch and why (the gate: export_records.py).
    image_encoding: str = ""
    text_encoding: str = ""

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)


def describe_store(
    location: Path,
    store: StoreReader,
    index: IndexManager | None,
    encodings: dict[str, str],
) -> StoreInfo:
    """The store's facts; ``index`` is None for a store without a model (nothing indexed)."""
    model = store.model()
    counts = store.counts()
    described = index.describe() if index is not None else None
    index_file = location / "index.faiss"
    recall = described.get("recall_at_10") if described else None
    return StoreInfo(
        location=str(location.resolve()),
        model=model.profile if model else None,
        fingerprint=model.fingerprint if model else None,
        dim=model.dim if model else None,
        images=counts["images"],
        videos=counts["videos"],
        vectors=counts["vectors"],
        failures=counts["failures"],
        partial=counts["partial"],
        index_kind=str(described["kind"]) if described else None,
        index_vectors=int(described["vectors"]) if described else None,  # type: ignore[call-overload]
        db_bytes=sum(p.stat().st_size for p in location.glob(DB_NAME + "*")),
        index_bytes=index_file.stat().st_size if index_file.exists() else 0,
        index_recall_at_10=float(recall) if isinstance(recall, int | float) else None,
        index_params=str(described.get("params", "")) if described else "",
        index_build=str(described.get("build", "")) if described else "",
        **encodings,
    )
