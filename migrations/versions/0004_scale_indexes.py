"""indexes for filters at 10M files: file time, media type with time, tags by concept

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

Measured on a synthetic store of 10M files (``python -m bench.sqlite_scale``, figures in
``bench/README.md``): without these, a date filter, ``--type video`` and a ``tag:`` filter
each scanned the whole ``media`` table (or fetched every tag row of a concept) before the
first result.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# The expression must be spelled exactly as the filters spell it (reader._media_conditions):
# SQLite uses an index on an expression only for that very expression.
FILE_TIME = "coalesce(captured_at, mtime_ns / 1e9)"


def upgrade() -> None:
    op.execute(f"CREATE INDEX ix_media_time ON media ({FILE_TIME})")
    op.execute(f"CREATE INDEX ix_media_type_time ON media (media_type, {FILE_TIME})")
    # (label_key, media_id) answers "the files with this tag" from the index alone.
    op.drop_index("ix_tags_label_key", "tags")
    op.create_index("ix_tags_label_key_media_id", "tags", ["label_key", "media_id"])


def downgrade() -> None:
    op.drop_index("ix_tags_label_key_media_id", "tags")
    op.create_index("ix_tags_label_key", "tags", ["label_key"])
    op.drop_index("ix_media_type_time", "media")
    op.drop_index("ix_media_time", "media")
