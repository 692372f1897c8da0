"""A throwaway PostgreSQL 15 cluster on a free loopback port, for tests.

PostgreSQL refuses to run as root, so when the tests run as root the cluster
is created and started as the ``postgres`` system user (via ``runuser``) in
a directory that user owns.
"""

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from fleet_server.processes import LOOPBACK, free_port, wait_for_port

PG_BIN = Path(os.environ.get("EDGEFLEET_PG_BIN", "/usr/lib/postgresql/15/bin"))
DATABASE_USER = "edgefleet"


class PostgresCluster:
    def __init__(self) -> None:
        if not (PG_BIN / "initdb").exists():
            raise AssertionError(f"PostgreSQL binaries not found in {PG_BIN} (set EDGEFLEET_PG_BIN)")
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="edgefleet-pg-"))
        self.data_dir = self.directory / "data"
        self.log_path = self.directory / "postgres.log"
        self._as_root = os.geteuid() == 0
        if self._as_root:
            owner = pwd.getpwnam("postgres")
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)
        self._process: subprocess.Popen[bytes] | None = None

    def _command(self, *argv: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if self._as_root else list(argv)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{DATABASE_USER}@{LOOPBACK}:{self.port}/{database}"

    def start(self) -> "PostgresCluster":
        subprocess.run(self._command(str(PG_BIN / "initdb"), "-D", str(self.data_dir), "-U", DATABASE_USER,
                                     "-A", "trust", "--no-sync", "-E", "UTF8"),
                       check=True, capture_output=True, timeout=120)
        log = open(self.log_path, "ab")  # noqa: SIM115 (owned by the process)
        self._process = subprocess.Popen(
            self._command(str(PG_BIN / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
                          "-c", f"listen_addresses={LOOPBACK}", "-c", f"unix_socket_directories={self.directory}",
                          "-c", "fsync=off", "-c", "full_page_writes=off"),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        wait_for_port(self.port, timeout=30)
        return self

    def create_database(self, name: str) -> str:
        subprocess.run(self._command(str(PG_BIN / "createdb"), "-h", LOOPBACK, "-p", str(self.port),
                                     "-U", DATABASE_USER, name), check=True, capture_output=True, timeout=30)
        return self.url(name)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()  # smart shutdown
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)
