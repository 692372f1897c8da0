"""Rollouts: staged, health-gated releases to a target (ids, tags, inventory), A/B cohorts and shadow
candidates; start, pause, resume, abort, roll back; cohort telemetry and shadow agreement."""

from typing import Annotated

from fastapi import APIRouter, Query, status

from fleet_server.api.deps import OperatorDep, RuntimeDep, SessionDep, ViewerDep
from fleet_server.api.errors import ERROR_RESPONSES
from fleet_server.models.rollout_api import (
    CohortPublic,
    PromoteRequest,
    RolloutCreate,
    RolloutPublic,
    RolloutSummary,
    ShadowPublic,
)
from fleet_server.rollouts import reports, service, views
from fleet_server.rollouts.policy import Operation
from fleet_server.rollouts.states import RolloutState

router = APIRouter(prefix="/rollouts", tags=["rollouts"], responses=ERROR_RESPONSES)


def _wake(runtime: RuntimeDep) -> None:
    if runtime.rollouts is not None:
        runtime.rollouts.wake()


@router.post("", status_code=status.HTTP_201_CREATED, response_model=RolloutPublic)
def create_rollout(body: RolloutCreate, runtime: RuntimeDep, session: SessionDep,
                   caller: OperatorDep) -> RolloutPublic:
    """Plan a rollout (phases, cohorts, the variant each device will pick; incompatible devices are reported,
    never notified) and start it unless ``start`` is false."""
    rollout = service.create_rollout(session, body, caller.name)
    _wake(runtime)
    assert rollout.id is not None
    return views.rollout_public(session, rollout.id)


@router.get("", response_model=list[RolloutSummary])
def list_rollouts(session: SessionDep, _viewer: ViewerDep,
                  state: Annotated[RolloutState | None, Query()] = None,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                  offset: Annotated[int, Query(ge=0)] = 0) -> list[RolloutSummary]:
    return views.list_rollouts(session, limit, offset, state.value if state else None)


@router.get("/{rollout_id}", response_model=RolloutPublic)
def show_rollout(rollout_id: int, session: SessionDep, _viewer: ViewerDep) -> RolloutPublic:
    return views.rollout_public(session, rollout_id)


def _operate(rollout_id: int, operation: Operation, runtime: RuntimeDep, session: SessionDep,
             caller: OperatorDep) -> RolloutPublic:
    service.operate(session, rollout_id, operation, caller.name)
    _wake(runtime)
    return views.rollout_public(session, rollout_id)


@router.post("/{rollout_id}/start", response_model=RolloutPublic)
def start_rollout(rollout_id: int, runtime: RuntimeDep, session: SessionDep, caller: OperatorDep) -> RolloutPublic:
    """Start a draft."""
    return _operate(rollout_id, Operation.START, runtime, session, caller)


@router.post("/{rollout_id}/pause", response_model=RolloutPublic)
def pause_rollout(rollout_id: int, runtime: RuntimeDep, session: SessionDep, caller: OperatorDep) -> RolloutPublic:
    """Hold: no device is notified and no phase starts until resumed (reports and abort criteria still apply)."""
    return _operate(rollout_id, Operation.PAUSE, runtime, session, caller)


@router.post("/{rollout_id}/resume", response_model=RolloutPublic)
def resume_rollout(rollout_id: int, runtime: RuntimeDep, session: SessionDep, caller: OperatorDep) -> RolloutPublic:
    return _operate(rollout_id, Operation.RESUME, runtime, session, caller)


@router.post("/{rollout_id}/abort", response_model=RolloutPublic)
def abort_rollout(rollout_id: int, runtime: RuntimeDep, session: SessionDep, caller: OperatorDep) -> RolloutPublic:
    """Stop notifying devices; those that took the release keep it (see rollback)."""
    return _operate(rollout_id, Operation.ABORT, runtime, session, caller)


@router.post("/{rollout_id}/rollback", response_model=RolloutPublic)
def rollback_rollout(rollout_id: int, runtime: RuntimeDep, session: SessionDep,
                     caller: OperatorDep) -> RolloutPublic:
    """Send a signed rollback directive to every device that took the release (shadow rollouts: drop it)."""
    return _operate(rollout_id, Operation.ROLLBACK, runtime, session, caller)


@router.get("/{rollout_id}/cohorts", response_model=list[CohortPublic])
def rollout_cohorts(rollout_id: int, session: SessionDep, _viewer: ViewerDep) -> list[CohortPublic]:
    """Telemetry of each cohort on its release since the rollout started (A/B side by side)."""
    return reports.cohorts(session, rollout_id)


@router.get("/{rollout_id}/shadow", response_model=ShadowPublic)
def rollout_shadow(rollout_id: int, session: SessionDep, _viewer: ViewerDep) -> ShadowPublic:
    """How the shadow candidate agrees with the served model, from the devices' telemetry."""
    return reports.shadow(session, rollout_id)


@router.post("/{rollout_id}/promote", status_code=status.HTTP_201_CREATED, response_model=RolloutPublic)
def promote_shadow(rollout_id: int, runtime: RuntimeDep, session: SessionDep, caller: OperatorDep,
                   body: PromoteRequest | None = None) -> RolloutPublic:
    """Install the shadow candidate for real on the devices that ran it: a new (staged) install rollout."""
    promoted = service.promote_shadow(session, rollout_id, body or PromoteRequest(), caller.name)
    _wake(runtime)
    assert promoted.id is not None
    return views.rollout_public(session, promoted.id)


@router.post("/{rollout_id}/drop", response_model=RolloutPublic)
def drop_shadow(rollout_id: int, runtime: RuntimeDep, session: SessionDep, caller: OperatorDep) -> RolloutPublic:
    """Remove the shadow candidate from every device that runs it."""
    service.drop_shadow(session, rollout_id, caller.name)
    _wake(runtime)
    return views.rollout_public(session, rollout_id)
