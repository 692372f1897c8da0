"""Bring the database schema to the newest Alembic revision (run at server start).

On PostgreSQL the upgrade holds a transaction-scoped advisory lock, so replicas
that start together migrate one after the other: the first applies the
revisions, the others then find the schema current (DDL is transactional
there, so a replica that dies half-way leaves the old schema).
"""

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
MIGRATION_LOCK_KEY = 0x65646765666C74  # "edgeflt": the advisory lock replicas migrate under


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    return config


def upgrade_schema(engine: Engine, revision: str = "heads") -> None:
    config = alembic_config()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    logger.info("server event=schema_upgraded revision=%s backend=%s", revision, engine.dialect.name)
