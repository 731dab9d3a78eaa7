"""Alembic environment: t0dqm.catalog.schema passes the connection (and holds the lock); the plain ``alembic``
command (for writing a new revision) falls back to the configured catalog URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from t0dqm.catalog.db import make_engine, metadata


def run(connection: Connection) -> None:
    context.configure(
        connection=connection, target_metadata=metadata, render_as_batch=connection.dialect.name == "sqlite"
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    from t0dqm import config

    engine = make_engine(context.config.get_main_option("sqlalchemy.url") or config.get().catalog_url)
    with engine.begin() as conn:
        run(conn)
    engine.dispose()
