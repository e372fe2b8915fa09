"""keyword search: FTS5 table media_fts over path words and EXIF text

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Spelled out: a later change of the tokenizer needs a migration of its own.
_TOKENIZER = "porter unicode61 remove_diacritics 2"


def upgrade() -> None:
    op.execute(f"CREATE VIRTUAL TABLE media_fts USING fts5(words, tokenize='{_TOKENIZER}')")
    # Whoever deletes a file's row (the indexer, a sweep, a cascade), its words go with it.
    op.execute(
        "CREATE TRIGGER media_fts_delete AFTER DELETE ON media BEGIN "
        "DELETE FROM media_fts WHERE rowid = old.id; END"
    )
    _backfill()


def _backfill() -> None:
    """Index the path words of files already in the store (EXIF text comes with a re-index).

    The words are cut by xsearch's own splitter, the one queries use, so they must match it.
    """
    from xsearch.store.fts import document_words

    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, display_path FROM media")).all()
    for media_id, display_path in rows:
        conn.execute(
            sa.text("INSERT INTO media_fts(rowid, words) VALUES (:id, :words)"),
            {"id": media_id, "words": document_words(display_path)},
        )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS media_fts_delete")
    op.execute("DROP TABLE IF EXISTS media_fts")
