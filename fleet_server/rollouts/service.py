"""Rollout operations: create (resolve the target, plan phases, cohorts and
variants), start, pause, resume, abort, roll back, and promote a shadow
candidate. Each runs in one write transaction with its audit entry; the
controller (``fleet_server.rollouts.controller``) does the rest.
"""

import logging
from datetime import datetime

from sqlalchemy import insert
from sqlmodel import Session, col, select

from agent.protocol.metadata import Action
from agent.protocol.verify import DeviceFacts
from fleet_server.core.db import begin_write
from fleet_server.core.types import utcnow
from fleet_server.errors import DeviceNotFoundError, NoTargetsError, RolloutNotFoundError, RolloutStateError
from fleet_server.models.deployment import ReleaseSelector
from fleet_server.models.device import Device, DeviceTag
from fleet_server.models.release import ReleaseRecord
from fleet_server.models.rollout import Rollout, RolloutDevice, RolloutPhase
from fleet_server.models.rollout_api import CriteriaCreate, PromoteRequest, RolloutCreate, TargetCreate
from fleet_server.rollouts import planning
from fleet_server.rollouts.policy import Operation, operation_result
from fleet_server.rollouts.states import DeviceStatus, PhaseState, RolloutState
from fleet_server.rollouts.store import release_document
from fleet_server.services import releases
from fleet_server.services.audit import record_audit

logger = logging.getLogger(__name__)

INSERT_CHUNK = 1000  # rollout_device rows per batched INSERT


def get_rollout(session: Session, rollout_id: int, lock: bool = False) -> Rollout:
    """The rollout; ``lock``: row-locked for the transaction (operators and the controller never interleave)."""
    statement = select(Rollout).where(Rollout.id == rollout_id)
    rollout = session.exec(statement.with_for_update() if lock else statement).first()
    if rollout is None:
        raise RolloutNotFoundError(f"rollout {rollout_id} not found")
    return rollout


def device_facts(device: Device) -> DeviceFacts:
    return DeviceFacts(device.device_id, device.arch, device.ram_mb, tuple(device.runtimes))


def target_spec(target: TargetCreate) -> planning.TargetSpec:
    return planning.TargetSpec(
        device_ids=tuple(target.device_ids), tags=tuple(target.tags), all_devices=target.all,
        filter=planning.InventoryFilter(tuple(target.arch), target.min_ram_mb, target.max_ram_mb,
                                        tuple(runtime.value for runtime in target.runtimes)))


def resolve_target(session: Session, target: TargetCreate) -> list[Device]:
    """The enrolled devices the target selects (unknown device ids are an error)."""
    if target.device_ids:
        known = set(session.exec(select(Device.device_id).where(col(Device.device_id).in_(target.device_ids))))
        unknown = [device_id for device_id in target.device_ids if device_id not in known]
        if unknown:
            raise DeviceNotFoundError(f"unknown device ids: {unknown[:10]}")
    statement = select(Device)
    if not target.all:
        tagged = select(DeviceTag.device_id).where(col(DeviceTag.tag).in_(target.tags or [""]))
        statement = statement.where(col(Device.device_id).in_(target.device_ids) | col(Device.device_id).in_(tagged))
    candidates = list(session.exec(statement))
    tags: dict[str, set[str]] = {}
    for row in session.exec(select(DeviceTag).where(col(DeviceTag.device_id).in_([d.device_id for d in candidates]))):
        tags.setdefault(row.device_id, set()).add(row.tag)
    chosen = set(planning.select_targets(target_spec(target), [device_facts(d) for d in candidates], tags))
    return sorted((d for d in candidates if d.device_id in chosen), key=lambda d: d.device_id)


def _release(session: Session, selector: ReleaseSelector) -> ReleaseRecord:
    return releases.get_release(session, selector.name, selector.version)


def create_rollout(session: Session, request: RolloutCreate, actor: str) -> Rollout:
    begin_write(session)
    rollout = _insert_rollout(session, request, actor)
    session.commit()
    return rollout


def _insert_rollout(session: Session, request: RolloutCreate, actor: str, source_rollout_id: int | None = None,
                    devices: list[Device] | None = None) -> Rollout:
    """Add the rollout, its phases and its planned devices inside the caller's write transaction."""
    release_a = _release(session, request.release)
    release_b = _release(session, request.release_b) if request.release_b is not None else None
    targets = devices if devices is not None else resolve_target(session, request.target)
    if not targets:
        raise NoTargetsError("the rollout's target selects no enrolled device",
                             hint="check the tags/ids with 'edgefleet device list', or loosen the inventory filter")
    assert release_a.id is not None  # read from the database
    now = utcnow()
    rollout = Rollout(
        name=request.name, release_id=release_a.id, release_b_id=release_b.id if release_b else None,
        b_share=request.b_share if release_b else 0.0, action=request.action,
        target=request.target.model_dump(mode="json"), criteria=request.criteria.model_dump(mode="json"),
        rate_limit_per_min=request.rate_limit_per_min, device_timeout_s=request.device_timeout_s,
        max_retries=request.max_retries, retry_backoff_s=request.retry_backoff_s, baseline_s=request.baseline_s,
        source_rollout_id=source_rollout_id, created_by=actor[:128], created_at=now, updated_at=now,
        start_at=request.start_at,
    )
    if request.starts_now:
        rollout.state, rollout.started_at = RolloutState.RUNNING.value, now
    session.add(rollout)
    session.flush()
    assert rollout.id is not None
    phases = [planning.PhaseSpec(p.share, p.count, p.bake_s, p.success_threshold) for p in request.phases]
    for index, phase in enumerate(request.phases):
        session.add(RolloutPhase(
            rollout_id=rollout.id, index=index, share=phase.share, count=phase.count, bake_s=phase.bake_s,
            success_threshold=phase.success_threshold,
            state=(PhaseState.ACTIVE if request.starts_now and index == 0 else PhaseState.PENDING).value,
            started_at=now if request.starts_now and index == 0 else None))
    cohorts = {"a": release_document(release_a)} | ({"b": release_document(release_b)} if release_b else {})
    placements = planning.plan(rollout.id, [device_facts(d) for d in targets], phases, cohorts, rollout.b_share)
    rows = [{"rollout_id": rollout.id, "device_id": placement.device_id, "position": placement.position,
             "phase": placement.phase, "cohort": placement.cohort, "variant": placement.variant,
             "status": (DeviceStatus.INCOMPATIBLE if placement.phase is None else DeviceStatus.PENDING).value,
             "reason": placement.reason, "attempts": 0, "rollback_attempts": 0, "updated_at": now}
            for placement in placements]
    session.flush()  # the phases first
    for offset in range(0, len(rows), INSERT_CHUNK):  # batched (executemany), not one ORM object per device
        session.execute(insert(RolloutDevice.__table__), rows[offset:offset + INSERT_CHUNK])  # type: ignore[attr-defined]
    incompatible = sum(1 for placement in placements if placement.phase is None)
    record_audit(session, actor, "rollout.created", {
        "rollout_id": rollout.id, "release": release_a.name, "version": release_a.version,
        "release_b": f"{release_b.name} v{release_b.version}" if release_b else None, "action": request.action,
        "devices": len(placements), "incompatible": incompatible, "phases": len(phases), "started": request.starts_now,
        "start_at": request.start_at.isoformat() if request.start_at else None, "source_rollout_id": source_rollout_id})
    logger.info("server event=rollout_created rollout=%d release=%s version=%d action=%s devices=%d "
                "incompatible=%d phases=%d state=%s", rollout.id, release_a.name, release_a.version, request.action,
                len(placements), incompatible, len(phases), rollout.state)
    return rollout


def operate(session: Session, rollout_id: int, operation: Operation, actor: str,
            reason: str | None = None, now: datetime | None = None) -> Rollout:
    """Start, pause, resume, abort or roll back a rollout (409 when its state does not allow it)."""
    begin_write(session)
    rollout = get_rollout(session, rollout_id, lock=True)
    state = RolloutState(rollout.state)
    target = operation_result(state, operation)
    if target is None:
        raise RolloutStateError(f"cannot {operation.value} rollout {rollout_id}: it is {state.value}")
    now = now or utcnow()
    rollout.state, rollout.updated_at = target.value, now
    if operation is Operation.START:
        rollout.started_at = now
        first = session.exec(select(RolloutPhase).where(RolloutPhase.rollout_id == rollout_id,
                                                        RolloutPhase.index == 0)).one()
        first.state, first.started_at = PhaseState.ACTIVE.value, now
        session.add(first)
    if operation in (Operation.ABORT, Operation.ROLLBACK):
        verb = "aborted" if operation is Operation.ABORT else "rolled back"
        rollout.reason = reason or f"{verb} by {actor}"
        pending = session.exec(select(RolloutDevice).where(
            RolloutDevice.rollout_id == rollout_id, RolloutDevice.status == DeviceStatus.PENDING.value))
        for device in pending:
            device.status, device.reason, device.updated_at = DeviceStatus.SKIPPED.value, f"the rollout was {verb}", now
            session.add(device)
        if operation is Operation.ABORT:
            rollout.finished_at = now
    session.add(rollout)
    record_audit(session, actor, f"rollout.{operation.value}", {"rollout_id": rollout_id, "from": state.value,
                                                                 "to": target.value, "reason": rollout.reason})
    session.commit()
    logger.info("server event=rollout_%s rollout=%d from=%s to=%s actor=%s", operation.value, rollout_id,
                state.value, target.value, actor)
    return rollout


def drop_shadow(session: Session, rollout_id: int, actor: str) -> Rollout:
    """Remove a shadow rollout's candidate from every device that runs it."""
    rollout = get_rollout(session, rollout_id)
    if rollout.action != Action.SHADOW.value:
        raise RolloutStateError(f"rollout {rollout_id} is not a shadow rollout",
                                hint="use 'edgefleet rollout rollback' to undo an install rollout")
    session.rollback()
    return operate(session, rollout_id, Operation.ROLLBACK, actor, reason=f"shadow dropped by {actor}")


def promote_shadow(session: Session, rollout_id: int, request: PromoteRequest, actor: str) -> Rollout:
    """Install a shadow rollout's candidate for real on the devices that ran it (a new install rollout)."""
    begin_write(session)
    source = get_rollout(session, rollout_id, lock=True)
    if source.action != Action.SHADOW.value:
        raise RolloutStateError(f"rollout {rollout_id} is not a shadow rollout")
    if source.state not in (RolloutState.RUNNING.value, RolloutState.PAUSED.value, RolloutState.SUCCEEDED.value):
        raise RolloutStateError(f"cannot promote rollout {rollout_id}: it is {source.state}")
    shadowing = list(session.exec(select(RolloutDevice).where(
        RolloutDevice.rollout_id == rollout_id, RolloutDevice.status == DeviceStatus.SUCCEEDED.value)))
    if not shadowing:
        raise RolloutStateError(f"no device runs the candidate of rollout {rollout_id} yet")
    release = session.get(ReleaseRecord, source.release_id)
    assert release is not None
    devices = [session.get(Device, row.device_id) for row in shadowing]
    create = RolloutCreate(
        release=ReleaseSelector(name=release.name, version=release.version),
        target=TargetCreate(device_ids=[row.device_id for row in shadowing]), phases=request.phases,
        criteria=CriteriaCreate.model_validate(source.criteria), rate_limit_per_min=source.rate_limit_per_min,
        device_timeout_s=source.device_timeout_s, max_retries=source.max_retries,
        retry_backoff_s=source.retry_backoff_s, baseline_s=source.baseline_s, start=request.start,
        name=f"promote shadow rollout {rollout_id}")
    now = utcnow()
    source.state, source.finished_at, source.updated_at = RolloutState.SUCCEEDED.value, now, now
    source.reason = "candidate promoted"
    session.add(source)
    promoted = _insert_rollout(session, create, actor, source_rollout_id=rollout_id,
                               devices=[d for d in devices if d is not None])
    session.commit()
    logger.info("server event=rollout_promoted shadow_rollout=%d rollout=%d", rollout_id, promoted.id)
    return promoted


