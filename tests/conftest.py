"""Fixtures shared by the whole test suite.

Standard library and pytest only: the agent tests also run in the legacy TFLite venv.

- ``mosquitto`` (session): a real broker on a free loopback port, see ``MosquittoBroker``.
- ``mosquitto_factory`` (function): ``mosquitto_factory(extra_config="")`` starts a broker of
  the test's own (to stop, kill or restart it freely); all are stopped after the test.
- ``managed_process`` (function): ``managed_process(name, argv, env=None, cwd=None)`` starts a
  ``ManagedProcess`` logging to the test's tmp dir; all are stopped after the test.
- ``postgres`` (session): one real PostgreSQL cluster for the whole session, started on first use
  (``tests/fleet_server/postgres.py``); ``postgres.new_database()`` gives a test a migrated database.

When a test fails, the report shows the log tail of every managed process still running.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from fleet_server.processes import ManagedProcess
from tests.fleet_server.postgres import PostgresCluster
from tests.helpers.mosquitto import MosquittoBroker, MosquittoNotFoundError, find_mosquitto

LOG_TAIL_LINES = 60


def _require_mosquitto() -> None:
    try:
        find_mosquitto()
    except MosquittoNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """The suite's shared broker. Tests that stop or restart a broker should use their own."""
    _require_mosquitto()
    broker = MosquittoBroker(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., MosquittoBroker]]:
    _require_mosquitto()
    brokers: list[MosquittoBroker] = []

    def start_broker(extra_config: str = "") -> MosquittoBroker:
        broker = MosquittoBroker(tmp_path / f"mosquitto-{len(brokers)}", extra_config=extra_config)
        brokers.append(broker)
        return broker.start()

    try:
        yield start_broker
    finally:
        for broker in brokers:
            broker.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """The suite's shared PostgreSQL cluster; give each test or module a database of its own."""
    cluster = PostgresCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def managed_process(tmp_path: Path) -> Iterator[Callable[..., ManagedProcess]]:
    processes: list[ManagedProcess] = []

    def start_process(name: str, argv: Sequence[str | os.PathLike[str]], env: Mapping[str, str] | None = None,
                      cwd: Path | None = None) -> ManagedProcess:
        process = ManagedProcess(name, argv, tmp_path / "logs" / f"{name}.log", env=env, cwd=cwd)
        processes.append(process)
        return process.start()

    try:
        yield start_process
    finally:
        for process in reversed(processes):
            process.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.failed and call.when in ("setup", "call"):
        for process in list(ManagedProcess.live):
            report.sections.append((f"log tail of {process.name} ({process.log_path})",
                                    process.log_tail(LOG_TAIL_LINES)))
