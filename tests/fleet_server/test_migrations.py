"""The Alembic migrations build exactly the schema the SQLModel tables declare,
on SQLite and on PostgreSQL, and per-device sequences and times survive a
round trip through the server on both (the API tests run on both backends too)."""

import itertools
import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect
from sqlmodel import SQLModel

import fleet_server.models  # noqa: F401  (registers the tables)
from fleet_server.core.db import create_db_engine
from fleet_server.core.schema import upgrade_schema
from tests.fleet_server.conftest import Api
from tests.fleet_server.postgres import PostgresCluster

_databases = itertools.count(1)


def schema_diff(engine: Engine) -> list:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, SQLModel.metadata)


def check_migrated(engine: Engine) -> None:
    upgrade_schema(engine)
    upgrade_schema(engine)  # idempotent: a restart finds the schema at head
    tables = set(inspect(engine).get_table_names())
    assert set(SQLModel.metadata.tables) <= tables
    assert "alembic_version" in tables
    assert schema_diff(engine) == []


def test_sqlite_schema_matches_the_models(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'schema.db'}")
    try:
        check_migrated(engine)
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


def test_postgresql_schema_matches_the_models(postgres: PostgresCluster) -> None:
    name = f"schema{next(_databases)}"
    engine = create_db_engine(postgres.create_database(name))
    try:
        check_migrated(engine)
    finally:
        engine.dispose()
        postgres.drop_database(name)


MIGRATE = "import sys; from fleet_server.core.db import create_db_engine; " \
          "from fleet_server.core.schema import upgrade_schema; upgrade_schema(create_db_engine(sys.argv[1]))"


def test_replicas_starting_together_migrate_one_after_another(postgres: PostgresCluster) -> None:
    name = f"together{next(_databases)}"
    url = postgres.create_database(name)
    try:
        replicas = [subprocess.Popen([sys.executable, "-c", MIGRATE, url], stderr=subprocess.PIPE)
                    for _ in range(3)]
        errors = [replica.communicate(timeout=120)[1].decode() for replica in replicas]
        assert [replica.returncode for replica in replicas] == [0, 0, 0], errors
        engine = create_db_engine(url)
        try:
            assert schema_diff(engine) == []
        finally:
            engine.dispose()
    finally:
        postgres.drop_database(name)


def test_sequences_and_times_round_trip(api_factory, database_backend: str) -> None:
    api: Api = api_factory()
    assert api.runtime.engine.dialect.name == database_backend
    api.enroll("pg-dev-1", tags=("pg",))
    api.enroll("pg-dev-2", tags=("pg",))
    release = api.released_model("pg-model")
    assert api.upload(name="pg-model").json()["version"] == 2
    first = api.post("/deployments", json={"release": {"name": "pg-model", "version": release["version"]},
                                           "tags": ["pg"]})
    second = api.post("/deployments", json={"release": {"name": "pg-model", "version": release["version"]},
                                            "device_ids": ["pg-dev-1"]})
    assert first.status_code == 201 and second.status_code == 201, (first.text, second.text)
    assert [t["sequence"] for t in second.json()["targets"]] == [2]
    device = api.get("/devices/pg-dev-1").json()
    assert device["directive_sequence"] == 2 and device["tags"] == ["pg"]
    assert device["enrolled_at"].endswith(("Z", "+00:00"))
