"""SQLAlchemy models of the store. The schema itself is created only by Alembic migrations."""

from __future__ import annotations

from sqlalchemy import Float, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["Base", "Failure", "Media", "StoreMeta", "Tag", "TaggedMedia", "Vector"]


class Base(DeclarativeBase):
    pass


class StoreMeta(Base):
    """Key/value facts about the store: model profile, dimension, preprocessing, generation."""

    __tablename__ = "store_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Media(Base):
    """One indexed file. ``path`` holds the exact OS bytes, so any file name round-trips."""

    __tablename__ = "media"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    display_path: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(Integer)
    mtime_ns: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    media_type: Mapped[str] = mapped_column(String(8))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    duration: Mapped[float | None] = mapped_column(Float)
    fps: Mapped[float | None] = mapped_column(Float)
    captured_at: Mapped[float | None] = mapped_column(Float)
    # "ok", or "partial" when only part of the file could be decoded.
    status: Mapped[str] = mapped_column(String(16), default="ok")
    note: Mapped[str | None] = mapped_column(Text)
    indexed_at: Mapped[float] = mapped_column(Float)


class Vector(Base):
    """One embedding: a whole image, or one sampled video frame standing for [t_start, t_end].

    Its row id is its id in the vector index. AUTOINCREMENT keeps ids from being reused, so a
    stale index file can never point an old id at a new file.
    """

    __tablename__ = "vectors"
    __table_args__ = (Index("ix_vectors_media_id", "media_id"), {"sqlite_autoincrement": True})
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    media_id: Mapped[int] = mapped_column(ForeignKey("media.id", ondelete="CASCADE"))
    t: Mapped[float | None] = mapped_column(Float)
    t_start: Mapped[float | None] = mapped_column(Float)
    t_end: Mapped[float | None] = mapped_column(Float)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)


class Failure(Base):
    """A file that could not be indexed, remembered so that an unchanged one is not retried."""

    __tablename__ = "failures"
    path: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    display_path: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(Integer)
    mtime_ns: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text)
    failed_at: Mapped[float] = mapped_column(Float)


class Tag(Base):
    """One zero-shot tag of a file (``seg_start`` null) or of one of its video segments."""

    __tablename__ = "tags"
    __table_args__ = (
        Index("ix_tags_label_key_media_id", "label_key", "media_id"),
        Index("ix_tags_media_id", "media_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    media_id: Mapped[int] = mapped_column(ForeignKey("media.id", ondelete="CASCADE"))
    seg_start: Mapped[float | None] = mapped_column(Float)
    seg_end: Mapped[float | None] = mapped_column(Float)
    lang: Mapped[str] = mapped_column(String(8))
    # The language-neutral concept key; ``label`` is its shown name in ``lang``.
    label_key: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(Text)
    score: Mapped[float] = mapped_column(Float)


class TaggedMedia(Base):
    """A file that the store's current tagger has tagged (with or without any tag)."""

    __tablename__ = "tagged_media"
    media_id: Mapped[int] = mapped_column(
        ForeignKey("media.id", ondelete="CASCADE"), primary_key=True
    )
