"""The MQTT status writer: a batch of reports is stored in one transaction, in arrival order, and each
message is acknowledged only after that commit; a report the database refuses does not lose the others."""

from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, select

from agent.protocol.messages import PresenceMessage, StatusMessage
from fleet_server.models.deployment import DeploymentEvent, DeploymentTarget
from fleet_server.models.device import Device
from fleet_server.mqtt import status_ingest
from fleet_server.mqtt.status_ingest import StatusWriter, _Queued
from tests.fleet_server.deployment_rows import seed_install_deployment

T0 = 1_800_000_000.0
DEVICES = ("dev-1", "dev-2")


@pytest.fixture
def engine(migrated_engine: Engine) -> Iterator[Engine]:
    seed_install_deployment(migrated_engine, DEVICES)
    yield migrated_engine


def events(engine: Engine, device_id: str) -> list[tuple[str, str | None]]:
    with Session(engine) as session:
        target = session.exec(select(DeploymentTarget).where(DeploymentTarget.device_id == device_id)).one()
        rows = session.exec(select(DeploymentEvent).where(DeploymentEvent.target_id == target.id)
                            .order_by(DeploymentEvent.reported_at)).all()
        return [(row.state, row.reason) for row in rows]


def target_state(engine: Engine, device_id: str) -> str:
    with Session(engine) as session:
        return session.exec(select(DeploymentTarget.state).where(DeploymentTarget.device_id == device_id)).one()


class Acks:
    """Acknowledgements, each noting how many transactions had committed when it came."""

    def __init__(self, engine: Engine) -> None:
        self.commits = 0
        self.acked: list[tuple[str, int]] = []
        event.listen(engine, "commit", self._committed)

    def _committed(self, _connection: object) -> None:
        self.commits += 1

    def queued(self, name: str, report: StatusMessage | PresenceMessage) -> _Queued:
        return _Queued(report, lambda: self.acked.append((name, self.commits)))


def writer(engine: Engine, outcomes: Counter[str]) -> StatusWriter:
    return StatusWriter(engine, lambda outcome: outcomes.update([outcome]))


def status(device_id: str, state: str, offset: float, reason: str | None = None) -> StatusMessage:
    return StatusMessage(device_id, state, 1, reason=reason, timestamp=T0 + offset)


def test_a_batch_is_one_transaction_acknowledged_after_its_commit(engine: Engine) -> None:
    acks, outcomes = Acks(engine), Counter[str]()
    batch = [acks.queued("dev-1 downloading", status("dev-1", "downloading", 1)),
             acks.queued("dev-1 presence", PresenceMessage("dev-1", True, timestamp=T0 + 1.5)),
             acks.queued("dev-2 downloading", status("dev-2", "downloading", 1)),
             acks.queued("dev-1 succeeded", status("dev-1", "succeeded", 2)),
             acks.queued("dev-1 succeeded again", status("dev-1", "succeeded", 2)),  # a redelivery
             acks.queued("stranger", status("dev-9", "succeeded", 2))]
    writer(engine, outcomes).process(batch)
    assert acks.commits == 1
    assert acks.acked == [(queued_name, 1) for queued_name in (
        "dev-1 downloading", "dev-1 presence", "dev-2 downloading", "dev-1 succeeded", "dev-1 succeeded again",
        "stranger")]
    assert outcomes == Counter(recorded=4, duplicate=1, unknown_device=1)
    assert events(engine, "dev-1") == [("downloading", None), ("succeeded", None)]
    assert target_state(engine, "dev-1") == "succeeded"
    assert target_state(engine, "dev-2") == "downloading"
    with Session(engine) as session:
        device = session.get(Device, "dev-1")
        assert device is not None and device.online and device.deployment_state == "succeeded"


def refuse_poison(engine: Engine) -> None:
    """Make the database refuse any deployment event whose reason is 'poison'."""
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            connection.execute(text("CREATE TRIGGER poison BEFORE INSERT ON deployment_event "
                                    "WHEN NEW.reason = 'poison' BEGIN SELECT RAISE(ABORT, 'poison refused'); END"))
        else:
            connection.execute(text("CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN "
                                    "IF NEW.reason = 'poison' THEN RAISE EXCEPTION 'poison refused'; END IF; "
                                    "RETURN NEW; END $$ LANGUAGE plpgsql"))
            connection.execute(text("CREATE TRIGGER poison BEFORE INSERT ON deployment_event "
                                    "FOR EACH ROW EXECUTE FUNCTION poison()"))


def test_a_refused_report_does_not_lose_the_rest_of_its_batch(engine: Engine) -> None:
    refuse_poison(engine)
    acks, outcomes = Acks(engine), Counter[str]()
    names = ("dev-1 downloading", "dev-2 poison", "dev-1 failed", "dev-2 installing")
    batch = [acks.queued(names[0], status("dev-1", "downloading", 1)),
             acks.queued(names[1], status("dev-2", "failed", 1, reason="poison")),
             acks.queued(names[2], status("dev-1", "failed", 2, reason="disk full")),
             acks.queued(names[3], status("dev-2", "installing", 3))]
    writer(engine, outcomes).process(batch)
    assert [name for name, _ in acks.acked] == list(names)  # every message acknowledged, in order
    recorded_acks = [commits for name, commits in acks.acked if "poison" not in name]
    assert all(commits >= 1 for commits in recorded_acks)
    assert outcomes["recorded"] == 3 and outcomes.total() == 4
    assert events(engine, "dev-1") == [("downloading", None), ("failed", "disk full")]
    assert events(engine, "dev-2") == [("installing", None)]
    assert target_state(engine, "dev-2") == "installing"


def test_the_writer_thread_stores_what_is_submitted_and_acknowledges_it(engine: Engine) -> None:
    outcomes: Counter[str] = Counter()
    status_writer = writer(engine, outcomes)
    acked: list[str] = []
    ack: Callable[[str], Callable[[], None]] = lambda name: lambda: acked.append(name)  # noqa: E731
    status_writer.start()
    try:
        for offset, state in enumerate(("downloading", "verifying", "installing", "succeeded"), start=1):
            status_writer.submit(status("dev-1", state, offset), ack(state))
        assert status_writer.flush(10)
    finally:
        status_writer.stop()
    assert acked == ["downloading", "verifying", "installing", "succeeded"]
    assert target_state(engine, "dev-1") == "succeeded"
    assert outcomes == Counter(recorded=4)


def flaky(monkeypatch: pytest.MonkeyPatch, owner: object, function: str, failures: int) -> list[int]:
    """Make ``owner.function`` raise OperationalError (database locked) ``failures`` times, then work;
    return the attempts seen. Retries do not wait."""
    real = getattr(owner, function)
    calls: list[int] = []

    def attempt(*args: object) -> object:
        calls.append(len(calls))
        if len(calls) <= failures:
            raise OperationalError("INSERT ...", {}, Exception("database is locked"))
        return real(*args)

    monkeypatch.setattr(owner, function, attempt)
    monkeypatch.setattr(status_ingest, "DB_RETRY_DELAYS_S", (0.0, 0.0, 0.0))
    return calls


def test_a_locked_database_is_retried_and_the_batch_acknowledged_only_once_stored(
        engine: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    calls = flaky(monkeypatch, status_ingest, "commit_batch", failures=2)
    acks, outcomes = Acks(engine), Counter[str]()
    with caplog.at_level("WARNING", "fleet_server.mqtt.status_ingest"):
        writer(engine, outcomes).process([acks.queued("dev-1", status("dev-1", "downloading", 1)),
                                          acks.queued("dev-2", status("dev-2", "downloading", 1))])
    assert len(calls) == 3
    assert [message for message in caplog.messages if "event=ingest_retry" in message][-1].startswith(
        "server event=ingest_retry attempt=2 reports=2")
    assert acks.acked == [("dev-1", 1), ("dev-2", 1)]  # after the one commit that stored them
    assert outcomes == Counter(recorded=2)


def test_a_database_locked_past_the_retries_stores_the_batch_one_report_at_a_time(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    batch_calls = flaky(monkeypatch, status_ingest, "commit_batch", failures=len(status_ingest.DB_RETRY_DELAYS_S) + 1)
    acks, outcomes = Acks(engine), Counter[str]()
    writer(engine, outcomes).process([acks.queued("dev-1", status("dev-1", "downloading", 1)),
                                      acks.queued("dev-2", status("dev-2", "downloading", 1))])
    assert len(batch_calls) == len(status_ingest.DB_RETRY_DELAYS_S) + 1
    assert acks.acked == [("dev-1", 1), ("dev-2", 2)]  # each after its own commit
    assert outcomes == Counter(recorded=2)
    assert target_state(engine, "dev-2") == "downloading"


def test_a_report_that_never_stores_is_counted_as_an_error_and_acknowledged(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = flaky(monkeypatch, status_ingest.ingest, "record_report", failures=100)
    outcomes: Counter[str] = Counter()
    assert writer(engine, outcomes).record_one(status("dev-1", "downloading", 1)) == "error"
    assert len(calls) == len(status_ingest.DB_RETRY_DELAYS_S) + 1
