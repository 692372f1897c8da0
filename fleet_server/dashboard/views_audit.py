"""The audit trail, newest first, with the result of verifying its hash chain."""

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlmodel import col, select

from fleet_server.api.deps import SessionDep
from fleet_server.dashboard.auth import UiUserDep
from fleet_server.dashboard.pagination import DEFAULT_PAGE_SIZE, Pager, clamp_page
from fleet_server.dashboard.templating import render
from fleet_server.models.audit import AuditEntry
from fleet_server.services import audit

router = APIRouter()


@router.get("/audit", response_class=HTMLResponse)
def audit_log(request: Request, session: SessionDep, user: UiUserDep, page: Annotated[int, Query(ge=1)] = 1,
              verify: bool = False) -> HTMLResponse:
    head_seq, head_hash = audit.head(session)
    page = clamp_page(page, DEFAULT_PAGE_SIZE, head_seq)
    pager = Pager(page, DEFAULT_PAGE_SIZE, head_seq)
    newest = head_seq - pager.offset  # entries are numbered 1..head_seq without gaps
    rows = session.exec(
        select(AuditEntry).where(col(AuditEntry.seq) <= newest, col(AuditEntry.seq) > newest - DEFAULT_PAGE_SIZE)
        .order_by(col(AuditEntry.seq).desc())
    ).all()
    verification = audit.verify(session) if verify else None
    return render(request, "audit.html", user, entries=rows, pager=pager, head_seq=head_seq, head_hash=head_hash,
                  verification=verification)
