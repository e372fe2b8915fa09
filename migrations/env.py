"""Alembic environment of the xsearch store.

xsearch runs migrations itself when it opens a store (see ``xsearch.store.migrate``), passing
its own connection in ``config.attributes["connection"]``. Running ``alembic`` by hand with
``-x db=PATH`` works too.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from xsearch.store.schema import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite needs batch mode to alter tables
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    db = context.get_x_argument(as_dictionary=True).get("db", "index_data/xsearch.db")
    with create_engine(f"sqlite:///{db}").connect() as conn:
        _run(conn)
