"""The Alembic migrations build exactly the schema the SQLModel tables declare,
on SQLite and on PostgreSQL, and the server works end to end on PostgreSQL."""

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
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


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


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
    engine = create_db_engine(postgres.create_database(f"schema{next(_databases)}"))
    try:
        check_migrated(engine)
    finally:
        engine.dispose()


def test_the_server_runs_on_postgresql(api_factory, postgres: PostgresCluster) -> None:
    api: Api = api_factory(database_url=postgres.create_database(f"server{next(_databases)}"))
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
