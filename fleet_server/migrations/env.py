"""Alembic environment: migrates ``SQLModel.metadata`` of ``fleet_server.models``.

The server passes its own connection in ``config.attributes["connection"]``;
run from the command line, the URL comes from the server settings.
"""

from alembic import context
from sqlalchemy import Connection
from sqlmodel import SQLModel

import fleet_server.models  # noqa: F401  (registers the tables)

target_metadata = SQLModel.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from fleet_server.core.config import Settings
    from fleet_server.core.db import create_db_engine

    engine = create_db_engine(Settings().resolved_database_url)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_migrations_online()
