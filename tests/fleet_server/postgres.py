"""A throwaway PostgreSQL 15 cluster on a free loopback port, for tests.

One cluster is started per test session (the ``postgres`` fixture in
``tests/conftest.py``) and shared: each test or test module gets a database
of its own. ``new_database()`` copies a template that was migrated to the
newest Alembic revisions once per session, so a fresh database costs one
``CREATE DATABASE`` instead of a full migration.

PostgreSQL refuses to run as root, so when the tests run as root the cluster
is created and started as the ``postgres`` system user (via ``runuser``) in
a directory that user owns.

Standard library at import time: the database driver and the server's
migrations are imported when a database is first created.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from fleet_server.processes import LOOPBACK, free_port, wait_for_port

PG_BIN = Path(os.environ.get("EDGEFLEET_PG_BIN", "/usr/lib/postgresql/15/bin"))
DATABASE_USER = "edgefleet"
TEMPLATE_DATABASE = "edgefleet_migrated_template"


def find_pg_bin() -> Path:
    """The directory holding initdb/postgres: $EDGEFLEET_PG_BIN, else the newest /usr/lib/postgresql/*/bin."""
    if (PG_BIN / "initdb").exists():
        return PG_BIN
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
                        if p.parent.parent.name.isdigit() else 0)
    if not candidates:
        raise AssertionError(f"PostgreSQL binaries not found in {PG_BIN} or /usr/lib/postgresql/*/bin "
                             "(install Debian's postgresql package or set EDGEFLEET_PG_BIN)")
    return candidates[-1].parent


class PostgresCluster:
    def __init__(self) -> None:
        self.bin_dir = find_pg_bin()
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="edgefleet-pg-"))
        self.data_dir = self.directory / "data"
        self.log_path = self.directory / "postgres.log"
        self._as_root = os.geteuid() == 0
        if self._as_root:
            owner = pwd.getpwnam("postgres")
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)
        self._process: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)
        self._template_lock = threading.Lock()
        self._template_ready = False

    def _command(self, *argv: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if self._as_root else list(argv)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{DATABASE_USER}@{LOOPBACK}:{self.port}/{database}"

    def start(self, max_connections: int = 200) -> PostgresCluster:
        subprocess.run(self._command(str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", DATABASE_USER,
                                     "-A", "trust", "--no-sync", "-E", "UTF8"),
                       check=True, capture_output=True, timeout=120)
        log = open(self.log_path, "ab")  # noqa: SIM115 (owned by the process)
        self._process = subprocess.Popen(
            self._command(str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
                          "-c", f"listen_addresses={LOOPBACK}", "-c", f"unix_socket_directories={self.directory}",
                          "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off",
                          "-c", f"max_connections={max_connections}"),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        wait_for_port(self.port, timeout=30)
        return self

    def execute(self, sql: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement outside a transaction (CREATE/DROP DATABASE need that); return its rows."""
        import psycopg

        with psycopg.connect(host=LOOPBACK, port=self.port, user=DATABASE_USER, dbname=database,
                             autocommit=True, connect_timeout=10) as connection:
            cursor = connection.execute(sql.encode())
            return cursor.fetchall() if cursor.description else []

    def create_database(self, name: str, template: str | None = None) -> str:
        """An empty database (or a copy of ``template``); returns its SQLAlchemy URL."""
        clause = f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else ""
        self.execute(f'CREATE DATABASE "{name}"{clause}')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def new_database(self, prefix: str = "test") -> str:
        """A fresh database already migrated to the newest revisions (copied from the template)."""
        self._ensure_template()
        return self.create_database(f"{prefix}_{next(self._names)}", template=TEMPLATE_DATABASE)

    def _ensure_template(self) -> None:
        with self._template_lock:
            if self._template_ready:
                return
            from fleet_server.core.db import create_db_engine
            from fleet_server.core.schema import upgrade_schema

            self.drop_database(TEMPLATE_DATABASE)
            engine = create_db_engine(self.create_database(TEMPLATE_DATABASE))
            try:
                upgrade_schema(engine)
            finally:
                engine.dispose()  # a template must have no open connections while it is copied
            self._template_ready = True

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()  # smart shutdown
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)
