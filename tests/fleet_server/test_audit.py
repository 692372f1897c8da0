"""The hash-chained audit trail: appends inside the caller's transaction,
concurrent appends stay one chain (SQLite and PostgreSQL), and verification
catches an edited, deleted or truncated entry, in the database and in an export."""

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from fleet_server.core.db import create_db_engine, write_session
from fleet_server.core.schema import upgrade_schema
from fleet_server.services import audit
from fleet_server.services.audit_chain import ChainEntry, verify_chain
from tests.fleet_server.postgres import PostgresCluster


def migrated(url: str) -> Engine:
    engine = create_db_engine(url)
    upgrade_schema(engine)
    return engine


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = migrated(f"sqlite:///{tmp_path / 'audit.db'}")
    yield engine
    engine.dispose()


def append(engine: Engine, count: int, actor: str = "admin") -> None:
    for number in range(count):
        with write_session(engine) as session:
            audit.record_audit(session, actor, "test.action", {"number": number, "ratio": 0.5, "tags": ["a"]})


def verdict(engine: Engine) -> audit.AuditVerificationPublic:
    with Session(engine) as session:
        return audit.verify(session)


def test_a_fresh_chain_verifies_and_grows_by_one_per_append(engine: Engine) -> None:
    assert verdict(engine).ok and verdict(engine).entries == 0
    append(engine, 3)
    result = verdict(engine)
    assert (result.ok, result.entries, result.head_seq) == (True, 3, 3)
    with Session(engine) as session:
        entries = audit.list_entries(session)
    assert [entry.seq for entry in entries] == [1, 2, 3]
    assert entries[1].prev_hash == entries[0].entry_hash and entries[2].details["number"] == 2


def test_an_entry_rolls_back_with_the_change_it_describes(engine: Engine) -> None:
    append(engine, 1)
    with pytest.raises(RuntimeError), write_session(engine) as session:
        audit.record_audit(session, "admin", "test.action", {"n": "lost"})
        raise RuntimeError("the change failed")
    result = verdict(engine)
    assert (result.ok, result.entries) == (True, 1)


@pytest.mark.parametrize("tamper, problem", [
    ("UPDATE audit_entry SET details = replace(details, '1', '7') WHERE seq = 2", "entry 2 was altered"),
    ("UPDATE audit_entry SET actor = 'mallory' WHERE seq = 1", "entry 1 was altered"),
    ("DELETE FROM audit_entry WHERE seq = 2", "entry 2 is missing"),
    ("DELETE FROM audit_entry WHERE seq = 4", "entries were deleted"),
])
def test_tampering_is_detected(engine: Engine, tamper: str, problem: str) -> None:
    append(engine, 4)
    with engine.begin() as connection:
        connection.exec_driver_sql(tamper)
    result = verdict(engine)
    assert not result.ok
    assert problem in (result.problem or "")


def test_an_export_verifies_offline_and_an_edited_line_does_not(engine: Engine) -> None:
    append(engine, 5)
    with Session(engine) as session:
        lines = [json.dumps(entry.to_export()) for entry in audit.iter_entries(session)]
        head = audit.head(session)
    entries = [ChainEntry.from_export(json.loads(line)) for line in lines]
    assert verify_chain(entries, head=head).ok
    edited = json.loads(lines[2])
    edited["details"]["number"] = 99
    lines[2] = json.dumps(edited)
    broken = verify_chain([ChainEntry.from_export(json.loads(line)) for line in lines])
    assert not broken.ok and "entry 3 was altered" in (broken.problem or "")
    suffix = verify_chain(entries[3:], start=(entries[2].seq, entries[2].entry_hash))
    assert suffix.ok and suffix.entries == 2


def concurrent_appends(engine: Engine, threads: int = 4, each: int = 10) -> None:
    workers = [threading.Thread(target=append, args=(engine, each, f"actor-{n}")) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    result = verdict(engine)
    assert (result.ok, result.entries) == (True, threads * each), result.problem


def test_concurrent_appends_on_sqlite_form_one_chain(engine: Engine) -> None:
    concurrent_appends(engine)


def test_concurrent_appends_on_postgresql_form_one_chain(postgres: PostgresCluster) -> None:
    engine = migrated(postgres.new_database("audit"))
    try:
        concurrent_appends(engine)
    finally:
        engine.dispose()
