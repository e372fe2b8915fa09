"""tags: zero-shot tags per file and video segment, and tag words in keyword search

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TOKENIZER = "porter unicode61 remove_diacritics 2"


def upgrade() -> None:
    op.create_table(
        "tags",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "media_id", sa.Integer(), sa.ForeignKey("media.id", ondelete="CASCADE"), nullable=False
        ),
        # Null for a tag of the whole file, else the video segment it holds for (seconds).
        sa.Column("seg_start", sa.Float()),
        sa.Column("seg_end", sa.Float()),
        sa.Column("lang", sa.String(8), nullable=False),
        # The language-neutral concept key, and its shown name in ``lang``.
        sa.Column("label_key", sa.String(64), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
    )
    op.create_index("ix_tags_label_key", "tags", ["label_key"])
    op.create_index("ix_tags_media_id", "tags", ["media_id"])
    # Files tagged by the tagger that store_meta's "tagger" names (those without any tag
    # that clears the threshold included), so that a re-run tags only the new ones.
    op.create_table(
        "tagged_media",
        sa.Column(
            "media_id",
            sa.Integer(),
            sa.ForeignKey("media.id", ondelete="CASCADE"),
            primary_key=True,
        ),
    )
    # A file that leaves the store takes its tags along, also where foreign keys are off.
    op.execute(
        "CREATE TRIGGER tags_delete AFTER DELETE ON media BEGIN "
        "DELETE FROM tags WHERE media_id = old.id; "
        "DELETE FROM tagged_media WHERE media_id = old.id; END"
    )
    _rebuild_fts(("words", "tags"))


def _rebuild_fts(columns: tuple[str, ...]) -> None:
    """Give media_fts the columns named (an FTS5 table cannot gain or lose one in place)."""
    op.execute("DROP TRIGGER IF EXISTS media_fts_delete")
    op.execute("CREATE TEMP TABLE media_fts_copy AS SELECT rowid AS id, words FROM media_fts")
    op.execute("DROP TABLE media_fts")
    op.execute(
        f"CREATE VIRTUAL TABLE media_fts USING fts5({', '.join(columns)}, tokenize='{_TOKENIZER}')"
    )
    op.execute("INSERT INTO media_fts(rowid, words) SELECT id, words FROM media_fts_copy")
    op.execute("DROP TABLE media_fts_copy")
    op.execute(
        "CREATE TRIGGER media_fts_delete AFTER DELETE ON media BEGIN "
        "DELETE FROM media_fts WHERE rowid = old.id; END"
    )


def downgrade() -> None:
    _rebuild_fts(("words",))
    op.execute("DROP TRIGGER IF EXISTS tags_delete")
    op.drop_table("tagged_media")
    op.drop_index("ix_tags_media_id", "tags")
    op.drop_index("ix_tags_label_key", "tags")
    op.drop_table("tags")
    op.execute("DELETE FROM store_meta WHERE key = 'tagger'")
