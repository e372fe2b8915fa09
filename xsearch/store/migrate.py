"""Applying the Alembic migrations in ``migrations/`` to a store's database."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
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
    """Bring the schema to ``revision`` (default: the newest), all or nothing."""
    from alembic import command

    with _transactional_ddl(engine) as conn:
        command.upgrade(_config(conn), revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema back to ``revision`` ("base" removes every table)."""
    from alembic import command

    with _transactional_ddl(engine) as conn:
        command.downgrade(_config(conn), revision)


@contextlib.contextmanager
def _transactional_ddl(engine: Engine) -> Iterator[Connection]:
    """One SQLite transaction around a migration, its CREATE and ALTER statements included.

    Python's sqlite3 driver opens a transaction only before INSERT, UPDATE and DELETE, so
    each DDL statement commits on its own: a process killed half-way through a migration
    left tables without the revision that made them, and every later open failed ("table
    store_meta already exists"). Here the driver leaves transactions to us (SQLAlchemy's
    documented recipe for pysqlite) and the migration runs inside BEGIN IMMEDIATE, which
    also makes a second process that opens the same new store wait for the first.
    """
    with engine.connect() as conn:
        dbapi = conn.connection.dbapi_connection
        assert isinstance(dbapi, sqlite3.Connection)
        previous = dbapi.isolation_level
        dbapi.isolation_level = None
        try:
            with conn.begin():
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                yield conn
        finally:
            dbapi.isolation_level = previous


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
