"""Staged rollouts: the list, a new-rollout form, and one rollout with live
per-phase progress, its devices, A/B cohorts or shadow comparison and the abort
reason, plus the start/pause/resume/abort/rollback and shadow promote/drop
buttons (operator role, CSRF-checked)."""

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session, func, select

from fleet_server.api.deps import RuntimeDep, SessionDep
from fleet_server.dashboard.auth import UiOperatorDep, UiUserDep, check_csrf
from fleet_server.dashboard.charts import Bar, stacked_bar
from fleet_server.dashboard.forms import DEFAULT_PHASES, RolloutForm, parse_phases, rollout_request
from fleet_server.dashboard.pagination import DEFAULT_PAGE_SIZE, Pager, clamp_page
from fleet_server.dashboard.templating import render, state_class
from fleet_server.models.rollout import Rollout
from fleet_server.models.rollout_api import PromoteRequest, RolloutPublic
from fleet_server.rollouts import reports, service, views
from fleet_server.rollouts.policy import Operation, operation_result
from fleet_server.rollouts.states import RolloutState
from fleet_server.runtime import ServerRuntime
from fleet_server.services import releases

router = APIRouter()
STATUS_ORDER = ("succeeded", "notified", "pending", "rolling_back", "rolled_back", "failed", "timed_out",
                "rollback_failed", "incompatible", "skipped")
FINAL_ROLLOUT_STATES = {RolloutState.SUCCEEDED, RolloutState.ABORTED, RolloutState.ROLLED_BACK}
DEVICE_ROWS = 200


def status_bar(counts: dict[str, int], width: int = 640) -> object:
    ordered = sorted(counts.items(), key=lambda item: STATUS_ORDER.index(item[0]) if item[0] in STATUS_ORDER else 99)
    return stacked_bar([Bar(status, count, css_class=f"seg {state_class(status)}") for status, count in ordered],
                       "devices per status", width=width)


def allowed_operations(state: str) -> list[str]:
    return [operation.value for operation in Operation if operation_result(RolloutState(state), operation)]


def is_final(rollout: RolloutPublic) -> bool:
    return rollout.state in FINAL_ROLLOUT_STATES and all(
        status not in ("notified", "rolling_back") for status in rollout.devices)


def _wake(runtime: ServerRuntime) -> None:
    if runtime.rollouts is not None:
        runtime.rollouts.wake()


@router.get("/rollouts", response_class=HTMLResponse)
def rollout_list(request: Request, session: SessionDep, user: UiUserDep,
                 state: Annotated[str, Query(max_length=16)] = "",
                 page: Annotated[int, Query(ge=1)] = 1) -> HTMLResponse:
    state = state if state in {s.value for s in RolloutState} else ""
    count = select(func.count()).select_from(Rollout)
    total = session.exec(count.where(Rollout.state == state) if state else count).one()
    page = clamp_page(page, DEFAULT_PAGE_SIZE, total)
    pager = Pager(page, DEFAULT_PAGE_SIZE, total, (("state", state),) if state else ())
    rows = views.list_rollouts(session, DEFAULT_PAGE_SIZE, pager.offset, state or None)
    return render(request, "rollouts.html", user, rollouts=rows, pager=pager, state=state,
                  states=[s.value for s in RolloutState], bars={row.id: status_bar(row.devices, 220) for row in rows})


@router.get("/rollouts/new", response_class=HTMLResponse)
def rollout_new(request: Request, session: SessionDep, user: UiOperatorDep,
                release: Annotated[str, Query(max_length=200)] = "") -> HTMLResponse:
    choices = [f"{r.name}:{r.version}" for r in reversed(releases.list_releases(session))]
    return render(request, "rollout_new.html", user, choices=choices, chosen=release, default_phases=DEFAULT_PHASES)


@router.post("/rollouts")
async def rollout_create(
    request: Request, runtime: RuntimeDep, session: SessionDep, user: UiOperatorDep,
    release: Annotated[str, Form(max_length=200)],
    csrf_token: Annotated[str, Form(max_length=256)] = "",
    tags: Annotated[str, Form(max_length=4000)] = "",
    device_ids: Annotated[str, Form(max_length=200_000)] = "",
    all_devices: Annotated[bool, Form()] = False,
    phases: Annotated[str, Form(max_length=400)] = DEFAULT_PHASES,
    bake_s: Annotated[float, Form(ge=0, le=7 * 24 * 3600)] = 60.0,
    success_threshold: Annotated[float, Form(ge=0, le=1)] = 0.9,
    max_failure_rate: Annotated[float, Form(ge=0, le=1)] = 0.1,
    auto_rollback: Annotated[bool, Form()] = False,
    name: Annotated[str, Form(max_length=128)] = "",
    start: Annotated[bool, Form()] = False,
    start_at: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Create (and start) a rollout: what ``POST /api/v1/rollouts`` does, from the form."""
    check_csrf(request, user, csrf_token)
    body = rollout_request(RolloutForm(release, tags, device_ids, all_devices, phases, bake_s, success_threshold,
                                       max_failure_rate, auto_rollback, name, start, start_at))

    def create() -> int:
        rollout = service.create_rollout(session, body, user.actor)
        _wake(runtime)
        assert rollout.id is not None
        return rollout.id

    return RedirectResponse(f"/ui/rollouts/{await run_in_threadpool(create)}", status_code=303)


def _detail_context(session: Session, rollout_id: int, device_page: int) -> dict:
    rollout = views.rollout_public(session, rollout_id)
    size = DEVICE_ROWS
    pager = Pager(clamp_page(device_page, size, len(rollout.device_details)), size, len(rollout.device_details))
    phase_bars = {phase.index: status_bar(phase.devices, 360) for phase in rollout.phase_details}
    return {"rollout": rollout, "final": is_final(rollout), "chart": status_bar(rollout.devices),
            "phase_bars": phase_bars, "operations": allowed_operations(rollout.state),
            "devices": rollout.device_details[pager.offset:pager.offset + size], "device_pager": pager,
            "cohorts": reports.cohorts(session, rollout_id) if rollout.release_b is not None else [],
            "shadow": reports.shadow(session, rollout_id) if rollout.action == "shadow" else None,
            "default_phases": DEFAULT_PHASES}


@router.get("/rollouts/{rollout_id}", response_class=HTMLResponse)
def rollout_detail(request: Request, rollout_id: int, session: SessionDep, user: UiUserDep,
                   page: Annotated[int, Query(ge=1)] = 1) -> HTMLResponse:
    return render(request, "rollout.html", user, **_detail_context(session, rollout_id, page))


@router.get("/rollouts/{rollout_id}/progress", response_class=HTMLResponse)
def rollout_progress(request: Request, rollout_id: int, session: SessionDep, user: UiUserDep,
                     page: Annotated[int, Query(ge=1)] = 1) -> HTMLResponse:
    """The live part of the rollout page (polled until the rollout reached a final state)."""
    return render(request, "_rollout_progress.html", user, **_detail_context(session, rollout_id, page))


@router.post("/rollouts/{rollout_id}/shadow/promote")
async def shadow_promote(request: Request, rollout_id: int, runtime: RuntimeDep, session: SessionDep,
                         user: UiOperatorDep, csrf_token: Annotated[str, Form(max_length=256)] = "",
                         phases: Annotated[str, Form(max_length=400)] = DEFAULT_PHASES,
                         bake_s: Annotated[float, Form(ge=0, le=7 * 24 * 3600)] = 60.0) -> Response:
    """Install the shadow candidate for real on the devices that ran it (``POST .../promote``)."""
    check_csrf(request, user, csrf_token)
    body = PromoteRequest(phases=parse_phases(phases, bake_s, RolloutForm.success_threshold))

    def promote() -> int:
        promoted = service.promote_shadow(session, rollout_id, body, user.actor)
        _wake(runtime)
        assert promoted.id is not None
        return promoted.id

    return RedirectResponse(f"/ui/rollouts/{await run_in_threadpool(promote)}", status_code=303)


@router.post("/rollouts/{rollout_id}/shadow/drop")
async def shadow_drop(request: Request, rollout_id: int, runtime: RuntimeDep, session: SessionDep,
                      user: UiOperatorDep, csrf_token: Annotated[str, Form(max_length=256)] = "") -> Response:
    """Remove the shadow candidate from every device that runs it (``POST .../drop``)."""
    check_csrf(request, user, csrf_token)

    def drop() -> None:
        service.drop_shadow(session, rollout_id, user.actor)
        _wake(runtime)

    await run_in_threadpool(drop)
    return RedirectResponse(f"/ui/rollouts/{rollout_id}", status_code=303)


@router.post("/rollouts/{rollout_id}/{operation}")
async def rollout_operate(request: Request, rollout_id: int, operation: Operation, runtime: RuntimeDep,
                          session: SessionDep, user: UiOperatorDep,
                          csrf_token: Annotated[str, Form(max_length=256)] = "") -> Response:
    check_csrf(request, user, csrf_token)

    def operate() -> None:
        service.operate(session, rollout_id, operation, user.actor)
        _wake(runtime)

    await run_in_threadpool(operate)
    return RedirectResponse(f"/ui/rollouts/{rollout_id}", status_code=303)
