"""PostgreSQL telemetry inserts (copied through a temporary table): a window the database refuses is
dropped alone, no copied row outlives its batch, committed or rolled back, and a connection lost
while copying is not handed out again. SQLite's inserts are the plain ``executemany`` the other
telemetry tests run on both backends; PostgreSQL drivers other than psycopg 3 take it too."""

import dataclasses
import time

import pytest
from sqlalchemy import Connection, Engine, create_engine, func, select, text
from sqlalchemy.exc import DataError, DBAPIError
from sqlmodel import Session

from agent.protocol.telemetry import DataQuality, SystemMetrics, TelemetryWindow
from fleet_server.models.device import Device
from fleet_server.models.telemetry import TelemetryWindowRecord
from fleet_server.mqtt.telemetry_ingest import TelemetryIngestor
from fleet_server.services import telemetry_store
from fleet_server.services.telemetry_copy import STAGING, staging
from fleet_server.services.telemetry_store import TelemetryStore
from tests.fleet_server.telemetry_helpers import make_profile, make_window
from tests.fleet_server.test_telemetry_ingestor import Acks

DEVICE = "copy-1"
TOO_LARGE = 2**40  # a valid count, beyond PostgreSQL's ``integer`` (SQLite stores it)


@pytest.fixture(scope="module")
def database_backend() -> str:
    return "postgresql"


def add_device(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(Device(device_id=DEVICE, credential_hash="0" * 64, arch="x86_64", ram_mb=1))
        session.commit()


def stored_seqs(engine: Engine) -> list[int]:
    with Session(engine) as session:
        return list(session.exec(select(TelemetryWindowRecord.seq).order_by(  # type: ignore[call-overload]
            TelemetryWindowRecord.seq)).scalars())


def refused(window: TelemetryWindow) -> TelemetryWindow:
    return dataclasses.replace(window, quality=DataQuality(schema_violations=TOO_LARGE))


def staged_rows(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text(f"SELECT count(*) FROM {STAGING}")).scalar_one())


def test_a_refused_window_is_dropped_alone(migrated_engine: Engine) -> None:
    add_device(migrated_engine)
    profile = make_profile()
    start = time.time() - 3600
    windows = [make_window(DEVICE, seq, start + seq, profile) for seq in range(1, 21)]
    windows[6] = refused(windows[6])
    ingestor = TelemetryIngestor(TelemetryStore(migrated_engine), batch_size=20, decode_workers=0)
    acks = Acks()
    for number, window in enumerate(windows):
        ingestor.submit(DEVICE, window.encode(), acks.ack(number))
    ingestor.start()
    try:
        assert acks.wait(len(windows)) == list(range(len(windows)))
    finally:
        ingestor.stop()
    assert stored_seqs(migrated_engine) == [seq for seq in range(1, 21) if seq != 7]
    assert (ingestor.stats["telemetry_stored"], ingestor.stats["telemetry_rejected"]) == (19, 1)


def test_copied_rows_do_not_outlive_their_batch(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=1, max_overflow=0)  # one session: its temporary table
    try:
        add_device(engine)
        store = TelemetryStore(engine)
        start = time.time() - 3600
        batch = [make_window(DEVICE, seq, start + seq) for seq in (1, 2)]
        with pytest.raises(DataError):  # the first batch, whose transaction created the table, rolls back
            store.store([*batch, refused(make_window(DEVICE, 3, start + 3))])
        assert stored_seqs(engine) == []
        result = store.store([*batch, make_window(DEVICE, 4, start + 4)])
        assert (result.stored, result.duplicates) == (3, 0)
        assert staged_rows(engine) == 0
        result = store.store([make_window(DEVICE, 1, start + 1), make_window(DEVICE, 5, start + 5)])
        assert (result.stored, result.duplicates) == (1, 1)
        assert staged_rows(engine) == 0
        with pytest.raises(DataError):  # a rolled-back batch once the table exists
            store.store([make_window(DEVICE, 6, start + 6), refused(make_window(DEVICE, 7, start + 7))])
        assert staged_rows(engine) == 0
        huge = dataclasses.replace(make_window(DEVICE, 9, start + 9), system=SystemMetrics(rss_bytes=2**64))
        with pytest.raises(DataError):  # beyond bigint: refused by the driver while copying
            store.store([make_window(DEVICE, 10, start + 10), huge])
        assert staged_rows(engine) == 0
        result = store.store([make_window(DEVICE, 8, start + 8)])
        assert (result.stored, result.duplicates) == (1, 0)
        assert stored_seqs(engine) == [1, 2, 4, 5, 8]
        with engine.connect() as connection:
            assert connection.execute(select(func.count()).select_from(TelemetryWindowRecord)).scalar_one() == 5
    finally:
        engine.dispose()


def backend_alive(engine: Engine, pid: int) -> bool:
    with engine.connect() as connection:  # a new transaction: pg_stat_activity is a snapshot per transaction
        return bool(connection.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"),
                                       {"pid": pid}).scalar_one())


def test_integer_columns_are_staged_wide_and_json_sent_as_text() -> None:
    table = staging([("seq", 20, "bigint"), ("evicted", 23, "integer"), ("shadow", 114, "json"),
                     ("device_id", 1043, "character varying(63)"), ("extra", 25, "text")],
                    ["device_id", "seq", "evicted", "shadow"])
    assert table.create == (f"CREATE TEMP TABLE IF NOT EXISTS {STAGING} (device_id character varying(63), "
                            "seq bigint, evicted bigint, shadow json) ON COMMIT DELETE ROWS")
    assert table.types == [1043, 20, 20, 25]
    with pytest.raises(RuntimeError, match="no column"):
        staging([("seq", 20, "bigint")], ["seq", "evicted"])


def test_a_connection_lost_while_copying_is_invalidated_and_the_next_batch_gets_a_new_one(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = create_engine(database_url, pool_size=1, max_overflow=0)  # no pre-ping: a dead one would come back
    admin = create_engine(database_url)
    try:
        add_device(engine)
        store = TelemetryStore(engine)
        start = time.time() - 3600
        assert store.store([make_window(DEVICE, 1, start + 1)]).stored == 1  # the staging table exists

        def lose_the_connection(connection: Connection, profiles: frozenset[str]) -> None:
            pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            with admin.connect() as other:
                assert other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
            deadline = time.monotonic() + 10
            while backend_alive(admin, pid):  # the signal is asynchronous
                assert time.monotonic() < deadline, "the backend outlived pg_terminate_backend"
                time.sleep(0.01)

        with monkeypatch.context() as patch:
            patch.setattr(store, "_ensure_profiles", lose_the_connection)
            with pytest.raises(DBAPIError) as lost:
                store.store([make_window(DEVICE, 2, start + 2)])
        assert lost.value.connection_invalidated and lost.value.statement.startswith("COPY")
        result = store.store([make_window(DEVICE, 2, start + 2), make_window(DEVICE, 3, start + 3)])
        assert (result.stored, result.duplicates) == (2, 0)
        assert stored_seqs(engine) == [1, 2, 3]
    finally:
        engine.dispose()
        admin.dispose()


def test_other_postgresql_drivers_insert_through_executemany(
        migrated_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry_store, "copies", lambda connection: False)
    with Session(migrated_engine) as session:
        session.add(Device(device_id="executemany-1", credential_hash="0" * 64, arch="x86_64", ram_mb=1))
        session.commit()
    store = TelemetryStore(migrated_engine)
    profile = make_profile()
    start = time.time() - 3600
    windows = [make_window("executemany-1", seq, start + seq, profile) for seq in (1, 2, 3)]
    assert (store.store(windows[:2]).stored, store.store(windows).stored) == (2, 1)
    with Session(migrated_engine) as session:
        records = session.exec(select(TelemetryWindowRecord).where(  # type: ignore[call-overload]
            TelemetryWindowRecord.device_id == "executemany-1").order_by(TelemetryWindowRecord.seq)).scalars().all()
    assert [record.seq for record in records] == [1, 2, 3]
    assert [record.requests for record in records] == [window.requests for window in windows]
    assert [record.latency_counts for record in records] == [list(window.latency_ms) for window in windows]
    assert records[0].feature_counts == [list(counts) for counts in windows[0].features.counts]
