"""initial schema: store_meta, media, vectors, failures

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "store_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    op.create_table(
        "media",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("path", sa.LargeBinary(), nullable=False, unique=True),
        sa.Column("display_path", sa.Text(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("mtime_ns", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("media_type", sa.String(8), nullable=False),
        sa.Column("width", sa.Integer()),
        sa.Column("height", sa.Integer()),
        sa.Column("duration", sa.Float()),
        sa.Column("fps", sa.Float()),
        sa.Column("captured_at", sa.Float()),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("note", sa.Text()),
        sa.Column("indexed_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_media_content_hash", "media", ["content_hash"])
    op.create_table(
        "vectors",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "media_id", sa.Integer(), sa.ForeignKey("media.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("t", sa.Float()),
        sa.Column("t_start", sa.Float()),
        sa.Column("t_end", sa.Float()),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_vectors_media_id", "vectors", ["media_id"])
    op.create_table(
        "failures",
        sa.Column("path", sa.LargeBinary(), primary_key=True),
        sa.Column("display_path", sa.Text(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("mtime_ns", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("failed_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("failures")
    op.drop_index("ix_vectors_media_id", "vectors")
    op.drop_table("vectors")
    op.drop_index("ix_media_content_hash", "media")
    op.drop_table("media")
    op.drop_table("store_meta")
