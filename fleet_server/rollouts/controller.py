"""The rollout controller: the I/O loop around the pure policy.

A daemon thread ticks every ``rollout_tick_s``. Each tick it takes or renews
the controller lease (``fleet_server.rollouts.lease``): only the holder acts,
so with several server replicas exactly one drives rollouts and another
takes over when the holder's lease expires. For every rollout in progress
it loads the state, asks ``policy.decide`` what to do, applies the actions
in one write transaction (directives are signed and stored there) and,
after the commit, publishes the new directives. Everything it knows is in
the database, so a restarted server simply continues.

Health gates read telemetry (``telemetry_query.health_by_device``) outside
the write transaction, at most every ``rollout_health_interval_s`` per
rollout: each succeeded device's windows since it installed the release
against its windows in the ``baseline_s`` before the rollout started.
"""

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, select

from fleet_server.core.db import begin_write
from fleet_server.core.types import utcnow
from fleet_server.errors import RolloutStateError
from fleet_server.keyring import Keyring
from fleet_server.models.rollout import Rollout, RolloutDevice
from fleet_server.mqtt.directive_publisher import DirectivePublisher
from fleet_server.rollouts import lease, policy, service, store
from fleet_server.rollouts.health import HealthSample
from fleet_server.rollouts.policy import Operation
from fleet_server.rollouts.states import DeviceStatus, RolloutState
from fleet_server.services.telemetry_query import health_by_device

logger = logging.getLogger(__name__)

SCHEDULER = "scheduler"  # the actor of scheduled starts in the audit log
TICKED_STATES = (RolloutState.RUNNING.value, RolloutState.PAUSED.value, RolloutState.ROLLING_BACK.value)
GATED_STATES = (RolloutState.RUNNING.value, RolloutState.PAUSED.value)
STRAGGLER_WINDOW = timedelta(days=1)  # finished rollouts still follow late reports this long
STRAGGLER_STATUSES = (DeviceStatus.NOTIFIED.value, DeviceStatus.ROLLING_BACK.value, DeviceStatus.TIMED_OUT.value)


@dataclass(frozen=True)
class ControllerSettings:
    tick_s: float = 1.0
    lease_ttl_s: float = 15.0
    health_interval_s: float = 5.0


@dataclass
class _HealthCache:
    at: float
    samples: dict[str, HealthSample]


class RolloutController:
    def __init__(self, engine: Engine, keyring: Keyring, publisher: DirectivePublisher, holder: str,
                 settings: ControllerSettings = ControllerSettings()) -> None:
        self.engine = engine
        self.keyring = keyring
        self.publisher = publisher
        self.holder = holder
        self.settings = settings
        self.leader = False
        self._health: dict[int, _HealthCache] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="edgefleet-rollout-controller", daemon=True)
        self._thread.start()
        logger.info("server event=rollout_controller_started holder=%s tick_s=%.2f", self.holder, self.settings.tick_s)

    def wake(self) -> None:
        """Tick now instead of at the next interval (after an operator changed a rollout)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)
        if self.leader:
            try:
                with Session(self.engine) as session:
                    lease.release(session, self.holder)
            except OperationalError as exc:
                logger.warning("server event=lease_release_failed error=%s", exc.orig or exc)
        self.leader = False

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.settings.tick_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.tick()
            except OperationalError as exc:  # the database is briefly unavailable or locked
                logger.warning("server event=rollout_tick_failed error=%s", exc.orig or exc)
            except Exception:
                logger.exception("server event=rollout_tick_crashed")

    # -- one tick ---------------------------------------------------------------------------------

    def tick(self, now: datetime | None = None) -> bool:
        """Act on every rollout in progress if this server holds the lease; returns whether it did.

        ``now`` fixes the clock (tests). Without it every write reads the clock once it holds its
        locks, so a change committed meanwhile (an operator's start, say) is never dated after it.
        """
        with Session(self.engine, expire_on_commit=False) as session:
            leader = lease.acquire(session, self.holder, self.settings.lease_ttl_s, now or utcnow())
        if leader != self.leader:
            logger.info("server event=rollout_controller_%s holder=%s", "leading" if leader else "standby",
                        self.holder)
            self.leader = leader
        if not leader:
            return False
        self._start_scheduled(now)
        for rollout_id in self._due(now or utcnow()):
            if self._stop.is_set():
                break
            self.tick_rollout(rollout_id, now)
        return True

    def _start_scheduled(self, now: datetime | None) -> None:
        """Start the drafts whose ``start_at`` has come (as ``rollout start`` would, by "scheduler")."""
        with Session(self.engine) as session:
            due = [rollout_id for rollout_id in session.exec(select(Rollout.id).where(
                Rollout.state == RolloutState.DRAFT.value, col(Rollout.start_at) <= (now or utcnow()))
                .order_by(col(Rollout.id))) if rollout_id is not None]
        for rollout_id in due:
            with Session(self.engine, expire_on_commit=False) as session:
                try:
                    service.operate(session, rollout_id, Operation.START, SCHEDULER, now=now)
                except RolloutStateError as exc:  # started, or aborted, by someone else meanwhile
                    logger.info("server event=rollout_schedule_skipped rollout=%d reason=%s", rollout_id, exc)

    def _due(self, now: datetime) -> list[int]:
        """Rollouts in progress, and finished ones still waiting for devices that may report late."""
        with Session(self.engine) as session:
            active = {rollout_id for rollout_id in session.exec(
                select(Rollout.id).where(col(Rollout.state).in_(TICKED_STATES))) if rollout_id is not None}
            late = set(session.exec(
                select(RolloutDevice.rollout_id).join(Rollout, col(Rollout.id) == RolloutDevice.rollout_id)
                .where(col(Rollout.finished_at) > now - STRAGGLER_WINDOW,
                       col(RolloutDevice.status).in_(STRAGGLER_STATUSES)).distinct()))
        return sorted(active | late)

    def tick_rollout(self, rollout_id: int, now: datetime | None = None) -> list[policy.Action]:
        read_at = now or utcnow()
        health = self._health_for(rollout_id, read_at)
        if not self._has_work(rollout_id, read_at, health):
            return []  # most ticks: no write transaction, so status ingest is never kept waiting for nothing
        with Session(self.engine, expire_on_commit=False) as session:
            begin_write(session)
            if not lease.held(session, self.holder, now or utcnow()):  # another replica took over meanwhile
                session.rollback()
                self.leader = False
                return []
            rollout = session.exec(select(Rollout).where(Rollout.id == rollout_id).with_for_update()).first()
            now = now or utcnow()  # read under the lock: later than anything committed to this rollout
            if rollout is None:
                session.rollback()
                return []
            loaded = store.load(session, rollout, now)
            actions = policy.decide(loaded.view, now, health)
            if not actions:
                session.rollback()
                return []
            outgoing = store.Applier(session, loaded, self.keyring, now).apply(actions)
            session.commit()
        if outgoing:
            self.publisher.publish(outgoing)
        return actions

    def _has_work(self, rollout_id: int, now: datetime, health: dict[str, HealthSample]) -> bool:
        """Whether the policy would act, judged in a read transaction (decided again under the lock)."""
        with Session(self.engine) as session:
            rollout = session.get(Rollout, rollout_id)
            return rollout is not None and bool(policy.decide(store.load(session, rollout, now).view, now, health))

    # -- health --------------------------------------------------------------------------------------

    def _health_for(self, rollout_id: int, now: datetime) -> dict[str, HealthSample]:
        cached = self._health.get(rollout_id)
        if cached is not None and time.monotonic() - cached.at < self.settings.health_interval_s:
            return cached.samples
        with Session(self.engine) as session:
            rollout = session.get(Rollout, rollout_id)
            if rollout is None or rollout.state not in GATED_STATES or rollout.started_at is None \
                    or rollout.action != "install":
                samples: dict[str, HealthSample] = {}
            else:
                samples = self._measure(session, rollout, now)
        self._health[rollout_id] = _HealthCache(time.monotonic(), samples)
        return samples

    @staticmethod
    def _measure(session: Session, rollout: Rollout, now: datetime) -> dict[str, HealthSample]:
        assert rollout.started_at is not None
        took = list(session.exec(select(RolloutDevice).where(
            RolloutDevice.rollout_id == rollout.id, RolloutDevice.status == DeviceStatus.SUCCEEDED.value)))
        if not took:
            return {}
        ids = [row.device_id for row in took]
        baseline = health_by_device(session, ids, rollout.started_at - timedelta(seconds=rollout.baseline_s),
                                    rollout.started_at)
        by_start: dict[datetime, list[str]] = {}
        for row in took:
            start = (row.installed_at or row.finished_at or now).replace(microsecond=0)
            by_start.setdefault(start, []).append(row.device_id)
        current: dict = {}
        for start, group in by_start.items():
            current.update(health_by_device(session, group, start, now + timedelta(seconds=1)))
        return {device_id: HealthSample(baseline.get(device_id), current.get(device_id)) for device_id in ids}
