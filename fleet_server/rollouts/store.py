"""Between the database and the pure policy: load a rollout into a
``RolloutView`` and apply the policy's actions to the rows, inside the
controller's write transaction.

Directives are signed with ``fleet_server.services.deployments.sign_directives``
(the same code plain deployments use) in that transaction, so a device's
status and its new directive are committed together: after a crash the
directive is either stored (and published by the publisher, now or after the
restart) or not sent at all. A directive lives as long as the device timeout,
so a device that stayed offline past it cannot install a stale release later.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import bindparam, update
from sqlmodel import Session, col, select

from agent.protocol import Envelope
from agent.protocol.errors import NoCompatibleVariantError
from agent.protocol.metadata import Action, Release
from agent.protocol.verify import DeviceFacts, choose_variant
from fleet_server.core.db import column_rows, select_columns
from fleet_server.keyring import Keyring
from fleet_server.models.deployment import DeploymentTarget
from fleet_server.models.device import Device
from fleet_server.models.release import ReleaseRecord
from fleet_server.models.rollout import Rollout, RolloutDevice, RolloutPhase
from fleet_server.rollouts import policy
from fleet_server.rollouts.health import Criteria
from fleet_server.rollouts.states import DeviceStatus, PhaseState, RolloutState
from fleet_server.services import releases
from fleet_server.services.audit import SYSTEM_ACTOR, record_audit
from fleet_server.services.deployments import OutgoingDirective, sign_directives

logger = logging.getLogger(__name__)

CHUNK = 500
FINAL_ROLLOUT_STATES = frozenset({RolloutState.SUCCEEDED, RolloutState.ABORTED, RolloutState.ROLLED_BACK})
CONTROLLER_ACTOR = f"{SYSTEM_ACTOR}:rollout-controller"


def release_document(record: ReleaseRecord) -> Release:
    return Release.from_dict(Envelope.from_dict(releases.envelope_dict(record), "release").signed)


def criteria_of(rollout: Rollout) -> Criteria:
    fields = Criteria.__dataclass_fields__
    return Criteria(**{key: value for key, value in (rollout.criteria or {}).items() if key in fields})


def by_ids(session: Session, model: type, column: object, ids: Sequence[object]) -> list:
    rows: list = []
    unique = list(dict.fromkeys(ids))
    for offset in range(0, len(unique), CHUNK):
        rows.extend(session.exec(select(model).where(col(column).in_(unique[offset:offset + CHUNK]))))
    return rows


@dataclass
class Loaded:
    rollout: Rollout
    phases: list[RolloutPhase]
    reported_at: dict[str, datetime | None]  # device clock of each device's newest reported state
    view: policy.RolloutView
    keys: dict[str, tuple[int, str, int]]  # device id -> (rollout_device id, cohort, attempts)
    devices: dict[str, RolloutDevice] = field(default_factory=dict)  # rows the actions touch (``rows_for``)

    def rows_for(self, session: Session, device_ids: Sequence[str]) -> None:
        """Load (as ORM rows, to change) the devices the actions name; the view needs none of them."""
        assert self.rollout.id is not None
        missing = [device_id for device_id in dict.fromkeys(device_ids) if device_id not in self.devices]
        for offset in range(0, len(missing), CHUNK):
            self.devices.update((row.device_id, row) for row in session.exec(select(RolloutDevice).where(
                RolloutDevice.rollout_id == self.rollout.id,
                col(RolloutDevice.device_id).in_(missing[offset:offset + CHUNK]))))


def load(session: Session, rollout: Rollout, now: datetime) -> Loaded:
    """The rollout as the policy sees it. Device rows are read as plain columns (one joined query, no
    ORM objects): a tick over thousands of devices that changes nothing stays cheap."""
    assert rollout.id is not None
    phases = list(session.exec(select(RolloutPhase).where(RolloutPhase.rollout_id == rollout.id)
                               .order_by(col(RolloutPhase.index))))
    rd, target = RolloutDevice, DeploymentTarget
    rows = column_rows(session, select_columns(
        rd.device_id, rd.position, rd.phase, rd.status, rd.attempts, rd.notified_at, rd.next_attempt_at,
        rd.rollback_attempts, target.state, target.reason, target.state_reported_at, rd.id, rd.cohort,
    ).outerjoin(target, col(target.id) == rd.target_id).where(col(rd.rollout_id) == rollout.id))
    minute_ago = now - timedelta(minutes=1)
    views = [policy.DeviceView(
        device_id=device_id, position=position, phase=phase, status=DeviceStatus(status), attempts=attempts,
        notified_at=notified_at, next_attempt_at=next_attempt_at, agent_state=agent_state,
        agent_reason=agent_reason, rollback_attempts=rollback_attempts)
        for (device_id, position, phase, status, attempts, notified_at, next_attempt_at, rollback_attempts,
             agent_state, agent_reason, _reported, _id, _cohort) in rows]
    view = policy.RolloutView(
        state=RolloutState(rollout.state), shadow=rollout.action == Action.SHADOW.value,
        current_phase=rollout.current_phase,
        phases=tuple(policy.PhaseView(p.index, p.bake_s, p.success_threshold, PhaseState(p.state),
                                      p.bake_started_at) for p in phases),
        devices=tuple(views), criteria=criteria_of(rollout), rate_limit_per_min=rollout.rate_limit_per_min,
        device_timeout_s=rollout.device_timeout_s, max_retries=rollout.max_retries,
        retry_backoff_s=rollout.retry_backoff_s,
        notified_last_minute=sum(1 for d in views if d.notified_at is not None and d.notified_at > minute_ago))
    return Loaded(rollout, phases, {row[0]: row[10] for row in rows}, view,
                  {row[0]: (row[11], row[12], row[4]) for row in rows})


class Applier:
    """Applies one tick's actions; collects the directives to publish after the commit."""

    def __init__(self, session: Session, loaded: Loaded, keyring: Keyring, now: datetime) -> None:
        self.session = session
        self.loaded = loaded
        self.rollout = loaded.rollout
        self.keyring = keyring
        self.now = now
        self.outgoing: list[OutgoingDirective] = []
        self._releases: dict[str, ReleaseRecord] = {}
        self._documents: dict[str, Release] = {}

    def release(self, cohort: str) -> ReleaseRecord:
        if cohort not in self._releases:
            release_id = self.rollout.release_b_id if cohort == "b" else self.rollout.release_id
            record = self.session.get(ReleaseRecord, release_id)
            assert record is not None
            self._releases[cohort] = record
        return self._releases[cohort]

    def document(self, cohort: str) -> Release:
        """The cohort's release, parsed once per tick (not once per device)."""
        if cohort not in self._documents:
            self._documents[cohort] = release_document(self.release(cohort))
        return self._documents[cohort]

    def apply(self, actions: Sequence[policy.Action]) -> list[OutgoingDirective]:
        notify = [a.device_id for a in actions if isinstance(a, policy.Notify)]
        rollback = [a.device_id for a in actions if isinstance(a, policy.SendRollback)]
        self.loaded.rows_for(self.session, [*rollback,
                                            *(a.device_id for a in actions if isinstance(a, policy.SetDevice))])
        for action in actions:
            if isinstance(action, policy.SetDevice):
                self._set_device(action)
            elif isinstance(action, policy.SetPhase):
                self._set_phase(action)
            elif isinstance(action, policy.SetRollout):
                self._set_rollout(action)
        if notify:
            self._notify(notify)
        if rollback:
            self._roll_back(rollback)
        self.rollout.updated_at = self.now
        self.session.add(self.rollout)
        return self.outgoing

    def _set_device(self, action: policy.SetDevice) -> None:
        row = self.loaded.devices[action.device_id]
        row.status, row.reason, row.next_attempt_at = action.status.value, action.reason, action.next_attempt_at
        if action.status in (DeviceStatus.SUCCEEDED, DeviceStatus.FAILED, DeviceStatus.TIMED_OUT):
            row.finished_at = self.now
        if action.status is DeviceStatus.SUCCEEDED:
            row.installed_at = self.loaded.reported_at.get(action.device_id) or self.now
        row.updated_at = self.now
        self.session.add(row)

    def _set_phase(self, action: policy.SetPhase) -> None:
        phase = self.loaded.phases[action.index]
        phase.state = action.state.value
        if action.state is PhaseState.ACTIVE:
            phase.started_at = self.now
        elif action.state is PhaseState.BAKING:
            phase.bake_started_at = self.now
        elif action.state is PhaseState.COMPLETED:
            phase.completed_at = self.now
        self.session.add(phase)
        logger.info("server event=rollout_phase rollout=%s phase=%d state=%s", self.rollout.id, action.index + 1,
                    action.state.value)

    def _set_rollout(self, action: policy.SetRollout) -> None:
        rollout = self.rollout
        previous = rollout.state
        if action.current_phase is not None:
            rollout.current_phase = action.current_phase
        if action.reason is not None:
            rollout.reason = action.reason
        rollout.state = action.state.value
        if action.state in FINAL_ROLLOUT_STATES:
            rollout.finished_at = self.now
        if previous != rollout.state:
            record_audit(self.session, CONTROLLER_ACTOR, f"rollout.{action.state.value}",
                         {"rollout_id": rollout.id, "from": previous, "reason": rollout.reason})
            logger.info("server event=rollout_state rollout=%s from=%s to=%s reason=%r", rollout.id, previous,
                        rollout.state, rollout.reason)

    def _facts(self, device_ids: list[str]) -> dict[str, DeviceFacts]:
        unique = list(dict.fromkeys(device_ids))
        facts: dict[str, DeviceFacts] = {}
        for offset in range(0, len(unique), CHUNK):
            facts.update((device_id, DeviceFacts(device_id, arch, ram_mb, tuple(runtimes))) for
                         device_id, arch, ram_mb, runtimes in self.session.exec(
                             select(Device.device_id, Device.arch, Device.ram_mb, Device.runtimes)
                             .where(col(Device.device_id).in_(unique[offset:offset + CHUNK]))))
        return facts

    def _notify(self, device_ids: list[str]) -> None:
        """Sign, store and queue a directive per device; the devices' rows are updated with one
        executemany (no ORM object per device: a phase may notify thousands in one tick)."""
        action = Action.SHADOW if self.rollout.action == Action.SHADOW.value else Action.INSTALL
        facts = self._facts(device_ids)
        by_cohort: dict[str, list[str]] = {}
        variants: dict[str, str] = {}
        changes: list[dict] = []
        for device_id in device_ids:
            row_id, cohort, _attempts = self.loaded.keys[device_id]
            try:  # the device's facts may have changed since the rollout was planned
                variants[device_id] = choose_variant(self.document(cohort), facts[device_id]).name
            except NoCompatibleVariantError as exc:
                changes.append({"row_id": row_id, "status": DeviceStatus.INCOMPATIBLE.value, "reason": str(exc),
                                "phase": None, "updated_at": self.now})
                continue
            by_cohort.setdefault(cohort, []).append(device_id)
        self._update_rows(changes)
        changes = []
        for cohort, ids in sorted(by_cohort.items()):
            signed = sign_directives(self.session, self.keyring, self.release(cohort), action, ids,
                                     self.rollout.device_timeout_s)
            for target, _envelope in signed.targets:
                row_id, _cohort, attempts = self.loaded.keys[target.device_id]
                changes.append({"row_id": row_id, "status": DeviceStatus.NOTIFIED.value, "target_id": target.id,
                                "attempts": attempts + 1, "notified_at": self.now, "next_attempt_at": None,
                                "updated_at": self.now, "reason": None, "variant": variants[target.device_id]})
            self.outgoing.extend(signed.outgoing())
        self._update_rows(changes)
        logger.info("server event=rollout_notify rollout=%s devices=%d", self.rollout.id, len(device_ids))

    def _update_rows(self, changes: list[dict]) -> None:
        """``rollout_device`` rows by id, one executemany; after the ORM's pending changes (a device set
        back to pending earlier in this tick), so these win as they would on the ORM row."""
        if not changes:
            return
        self.session.flush()
        table = RolloutDevice.__table__  # type: ignore[attr-defined]
        columns = [key for key in changes[0] if key != "row_id"]  # bind names must differ from column names
        self.session.execute(update(table).where(table.c.id == bindparam("row_id"))
                             .values({key: bindparam(f"new_{key}") for key in columns}),
                             [{"row_id": change["row_id"], **{f"new_{key}": change[key] for key in columns}}
                              for change in changes])

    def _roll_back(self, device_ids: list[str]) -> None:
        action = Action.DROP_SHADOW if self.rollout.action == Action.SHADOW.value else Action.ROLLBACK
        by_cohort: dict[str, list[str]] = {}
        for device_id in device_ids:
            by_cohort.setdefault(self.loaded.devices[device_id].cohort, []).append(device_id)
        for cohort, ids in sorted(by_cohort.items()):
            signed = sign_directives(self.session, self.keyring, self.release(cohort), action, ids,
                                     self.rollout.device_timeout_s)
            for target, _envelope in signed.targets:
                row = self.loaded.devices[target.device_id]
                row.status, row.target_id = DeviceStatus.ROLLING_BACK.value, target.id
                row.rollback_attempts += 1
                row.notified_at, row.updated_at = self.now, self.now
                self.session.add(row)
            self.outgoing.extend(signed.outgoing())
        logger.info("server event=rollout_rollback rollout=%s devices=%d action=%s", self.rollout.id,
                    len(device_ids), action.value)
