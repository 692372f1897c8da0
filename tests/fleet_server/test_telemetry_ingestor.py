"""The ingest writer without a broker: batches decoded in a worker process (or in the writer thread),
each message acknowledged only once its window is stored or dropped for good, malformed ones
counted, and a dead decode worker replaced without losing a batch."""

import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlmodel import Session

from agent.protocol.telemetry_wire import V2_PREFIX, encode_v1
from fleet_server.models.device import Device
from fleet_server.models.telemetry import TelemetryWindowRecord
from fleet_server.mqtt.telemetry_decode import decode_batch
from fleet_server.mqtt.telemetry_ingest import TelemetryIngestor
from fleet_server.services.telemetry_store import TelemetryStore
from tests.fleet_server.telemetry_helpers import make_profile, make_window

DEVICE = "ingestor-1"


class Acks:
    def __init__(self) -> None:
        self.done: list[int] = []
        self._lock = threading.Lock()

    def ack(self, number: int):  # type: ignore[no-untyped-def]
        def done() -> None:
            with self._lock:
                self.done.append(number)
        return done

    def wait(self, count: int, timeout: float = 60.0) -> list[int]:
        deadline = time.monotonic() + timeout
        while len(self.done) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return sorted(self.done)


def stored_count(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.exec(select(func.count()).select_from(TelemetryWindowRecord)).one()[0])


@pytest.fixture
def engine(migrated_engine: Engine) -> Engine:
    with Session(migrated_engine) as session:
        session.add(Device(device_id=DEVICE, credential_hash="0" * 64, arch="x86_64", ram_mb=1))
        session.commit()
    return migrated_engine


@pytest.fixture(params=[0, 1], ids=["in-thread", "worker"])
def ingestor(request: pytest.FixtureRequest, engine: Engine) -> Iterator[TelemetryIngestor]:
    ingestor = TelemetryIngestor(TelemetryStore(engine), batch_size=50, decode_workers=request.param)
    ingestor.start()
    yield ingestor
    ingestor.stop()


def test_windows_are_stored_and_acknowledged_and_bad_ones_counted(ingestor: TelemetryIngestor,
                                                                   engine: Engine) -> None:
    profile = make_profile()
    start = time.time() - 3600
    good = [make_window(DEVICE, seq, start + seq, profile).encode() for seq in range(1, 121)]
    bad = [(DEVICE, b"not zlib"), (DEVICE, zlib.compress(b"{}")), ("ingestor-2", good[0]),
           (DEVICE, b"x" * 70_000)]
    acks = Acks()
    messages = [(DEVICE, payload) for payload in good] + bad + [(DEVICE, good[5])]  # and one redelivery
    for number, (device_id, payload) in enumerate(messages):
        ingestor.submit(device_id, payload, acks.ack(number))
    assert acks.wait(len(messages)) == list(range(len(messages)))
    assert stored_count(engine) == 120
    stats = ingestor.stats
    assert (stats["telemetry_stored"], stats["telemetry_duplicate"]) == (120, 1)
    assert (stats["telemetry_malformed"], stats["telemetry_device_mismatch"], stats["telemetry_oversized"]) == (2, 1, 1)


def test_a_killed_decode_worker_is_replaced_and_its_batch_still_stored(engine: Engine) -> None:
    ingestor = TelemetryIngestor(TelemetryStore(engine), batch_size=20, decode_workers=1)
    ingestor.start()
    try:
        start = time.time() - 3600
        acks = Acks()
        ingestor.submit(DEVICE, make_window(DEVICE, 1, start).encode(), acks.ack(0))
        assert acks.wait(1) == [0]
        pool = ingestor._pool  # noqa: SLF001 (the worker to kill)
        assert pool is not None
        for pid in list(pool._processes):  # noqa: SLF001
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        for seq in range(2, 42):
            ingestor.submit(DEVICE, make_window(DEVICE, seq, start + seq).encode(), acks.ack(seq - 1))
        assert acks.wait(41) == list(range(41))
        assert stored_count(engine) == 41
    finally:
        ingestor.stop()


def test_decode_batch_lists_what_it_drops_with_the_reason() -> None:
    window, older = make_window(DEVICE, 2, time.time() - 60), make_window(DEVICE, 1, time.time() - 120)
    payload = window.encode()  # spec version 2; an agent that is not updated yet sends version 1
    decoded = decode_batch([(DEVICE, payload), (DEVICE, b"\x00"), ("other", payload), (DEVICE, payload[:-4]),
                            (DEVICE, V2_PREFIX + zlib.compress(b"\x00" * 40)), (DEVICE, encode_v1(older))],
                           sqlite=True)
    assert decoded.kept == [0, 5] and len(decoded.rows) == 2 and decoded.rows.device_ids == [DEVICE, DEVICE]
    assert [(d.index, d.reason) for d in decoded.dropped] == [(1, "telemetry_malformed"),
                                                             (2, "telemetry_device_mismatch"),
                                                             (3, "telemetry_malformed"), (4, "telemetry_malformed")]


WORKER_OF_A_DOOMED_SERVER = """
import multiprocessing, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from fleet_server.mqtt.telemetry_decode import exit_with_parent
if __name__ == "__main__":
    pool = ProcessPoolExecutor(1, multiprocessing.get_context("spawn"), initializer=exit_with_parent,
                               initargs=(os.getpid(),))
    print(pool.submit(os.getpid).result(), flush=True)
    time.sleep(300)
"""


def test_a_decode_worker_exits_when_its_server_is_killed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "server.py"
    script.write_text(WORKER_OF_A_DOOMED_SERVER)
    server = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[2])
    try:
        assert server.stdout is not None
        worker = int(server.stdout.readline())
        server.kill()  # SIGKILL: no shutdown of the pool
        server.wait(10)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{worker}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{worker}").exists(), "the decode worker outlived its server"
    finally:
        server.kill()
