"""Applying the Alembic migrations in ``migrations/`` to a store's database."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import Connection, Engine

from ..errors import StoreError
from .reader import KNOWN_HEAD, revision_of

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
    """The revision the database is at; None for an empty database (see ``revision_of``)."""
    with engine.connect() as conn:
        dbapi = conn.connection.dbapi_connection
        assert isinstance(dbapi, sqlite3.Connection)
        return revision_of(dbapi)


def head_revision() -> str:
    """The newest revision that this xsearch knows."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(migrations_dir()))
    head = script.get_current_head()
    assert head is not None
    return head
