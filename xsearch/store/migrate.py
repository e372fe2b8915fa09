"""Applying the Alembic migrations in ``migrations/`` to a store's database."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection, Engine, inspect, text

from ..errors import StoreError
from .reader import KNOWN_HEAD

__all__ = [
    "KNOWN_HEAD",
    "current_revision",
    "downgrade",
    "head_revision",
    "is_current",
    "migrations_dir",
    "upgrade",
]

_PACKAGE = Path(__file__).resolve().parent.parent


def migrations_dir() -> Path:
    """The Alembic folder: inside the installed package, or ``migrations/`` of a checkout."""
    for candidate in (_PACKAGE / "_migrations", _PACKAGE.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise StoreError("xsearch's database migrations are missing; reinstall xsearch.")


def _config(connection: Connection):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (default: the newest)."""
    from alembic import command

    with engine.begin() as conn:
        command.upgrade(_config(conn), revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema back to ``revision`` ("base" removes every table)."""
    from alembic import command

    with engine.begin() as conn:
        command.downgrade(_config(conn), revision)


def is_current(engine: Engine) -> bool:
    """Whether the database is at the newest revision (read without importing alembic)."""
    return current_revision(engine) == KNOWN_HEAD


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; None for an empty database.

    Read straight from alembic's one-row version table, as alembic itself reads it for a
    history without branches.
    """
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    if len(rows) > 1:
        raise StoreError(f"The store's schema has several heads ({', '.join(rows)}).")
    return rows[0] if rows else None


def head_revision() -> str:
    """The newest revision that this xsearch knows."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(migrations_dir()))
    head = script.get_current_head()
    assert head is not None
    return head
