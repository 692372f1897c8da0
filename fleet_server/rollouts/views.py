"""What the API shows of rollouts: the list, and one rollout with its phases and devices."""

from collections import Counter

from sqlmodel import Session, col, func, select

from fleet_server.core.db import select_columns
from fleet_server.models.deployment import DeploymentTarget, ReleaseRefPublic
from fleet_server.models.release import ReleaseRecord
from fleet_server.models.rollout import Rollout, RolloutDevice, RolloutPhase
from fleet_server.models.rollout_api import PhasePublic, RolloutDevicePublic, RolloutPublic, RolloutSummary
from fleet_server.rollouts.planning import PhaseSpec, cumulative_sizes
from fleet_server.rollouts.service import get_rollout


def release_ref(session: Session, release_id: int | None) -> ReleaseRefPublic | None:
    if release_id is None:
        return None
    release = session.get(ReleaseRecord, release_id)
    assert release is not None
    return ReleaseRefPublic(name=release.name, version=release.version, sha256=release.sha256)


def _summary_fields(session: Session, rollout: Rollout, counts: dict[str, int], phases: int) -> dict:
    assert rollout.id is not None
    return {
        "id": rollout.id, "name": rollout.name, "release": release_ref(session, rollout.release_id),
        "release_b": release_ref(session, rollout.release_b_id), "b_share": rollout.b_share,
        "action": rollout.action, "state": rollout.state, "reason": rollout.reason,
        "current_phase": rollout.current_phase, "phases": phases, "devices": counts,
        "created_at": rollout.created_at, "start_at": rollout.start_at, "started_at": rollout.started_at,
        "finished_at": rollout.finished_at,
    }


def list_rollouts(session: Session, limit: int = 100, offset: int = 0,
                  state: str | None = None) -> list[RolloutSummary]:
    statement = select(Rollout).order_by(col(Rollout.id).desc()).offset(offset).limit(limit)
    if state is not None:
        statement = statement.where(Rollout.state == state)
    rollouts = list(session.exec(statement))
    ids = [rollout.id for rollout in rollouts]
    counts: dict[int, dict[str, int]] = {}
    phases: dict[int, int] = {}
    if ids:
        for rollout_id, status, count in session.exec(
            select(RolloutDevice.rollout_id, RolloutDevice.status, func.count())
            .where(col(RolloutDevice.rollout_id).in_(ids))
            .group_by(col(RolloutDevice.rollout_id), col(RolloutDevice.status))
        ):
            counts.setdefault(rollout_id, {})[status] = count
        for rollout_id, count in session.exec(
            select(RolloutPhase.rollout_id, func.count()).where(col(RolloutPhase.rollout_id).in_(ids))
            .group_by(col(RolloutPhase.rollout_id))
        ):
            phases[rollout_id] = count
    return [RolloutSummary(**_summary_fields(session, rollout, counts.get(rollout.id or 0, {}),
                                             phases.get(rollout.id or 0, 0))) for rollout in rollouts]


def rollout_public(session: Session, rollout_id: int) -> RolloutPublic:
    rollout = get_rollout(session, rollout_id)
    phases = list(session.exec(select(RolloutPhase).where(RolloutPhase.rollout_id == rollout_id)
                               .order_by(col(RolloutPhase.index))))
    # plain columns in one joined query: no ORM object per device (the status of a 10,000-device rollout)
    rd, target = RolloutDevice, DeploymentTarget
    rows = sorted(session.execute(
        select_columns(rd.device_id, rd.phase, rd.cohort, rd.status, rd.variant, rd.attempts, rd.reason,
                       rd.notified_at, rd.finished_at, rd.position, target.sequence, target.deployment_id,
                       target.state)
        .outerjoin(target, col(target.id) == rd.target_id)
        .where(col(rd.rollout_id) == rollout_id)).all(),
        key=lambda row: (row.phase if row.phase is not None else 1 << 30, row.position))
    placed = [row for row in rows if row.phase is not None]
    sizes = cumulative_sizes(len(placed), [PhaseSpec(p.share, p.count, p.bake_s, p.success_threshold)
                                           for p in phases])
    per_phase: dict[int, Counter[str]] = {}
    for row in placed:
        per_phase.setdefault(row.phase, Counter())[row.status] += 1
    phase_views = [PhasePublic(
        index=p.index, share=p.share, count=p.count, size=sizes[p.index] if p.index < len(sizes) else 0,
        bake_s=p.bake_s, success_threshold=p.success_threshold, state=p.state, started_at=p.started_at,
        bake_started_at=p.bake_started_at, completed_at=p.completed_at,
        devices=dict(per_phase.get(p.index, Counter()))) for p in phases]
    devices = [RolloutDevicePublic(
        device_id=row.device_id, phase=row.phase, cohort=row.cohort, status=row.status, variant=row.variant,
        attempts=row.attempts, sequence=row.sequence, deployment_id=row.deployment_id, agent_state=row.state,
        reason=row.reason, notified_at=row.notified_at, finished_at=row.finished_at) for row in rows]
    counts = dict(Counter(row.status for row in rows))
    return RolloutPublic(
        **_summary_fields(session, rollout, counts, len(phases)),
        target=rollout.target, criteria=rollout.criteria, rate_limit_per_min=rollout.rate_limit_per_min,
        device_timeout_s=rollout.device_timeout_s, max_retries=rollout.max_retries,
        retry_backoff_s=rollout.retry_backoff_s, baseline_s=rollout.baseline_s,
        source_rollout_id=rollout.source_rollout_id, created_by=rollout.created_by, phase_details=phase_views,
        device_details=devices)
