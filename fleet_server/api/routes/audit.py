"""The audit trail (admin only): entries, chain verification, JSON-lines export."""

import json
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from sqlmodel import Session

from fleet_server.api.deps import AdminDep, RuntimeDep, SessionDep
from fleet_server.api.errors import ERROR_RESPONSES
from fleet_server.models.audit import AuditEntryPublic, AuditVerificationPublic
from fleet_server.services import audit

router = APIRouter(prefix="/audit", tags=["audit"], responses=ERROR_RESPONSES)
# Checked before the export starts streaming: once it has, an error can no longer be an HTTP error.
AfterSeq = Annotated[int, Query(ge=0, le=2**63 - 1, description="Entries after this sequence number")]


@router.get("", response_model=list[AuditEntryPublic])
def list_entries(session: SessionDep, _admin: AdminDep,
                 after_seq: AfterSeq = 0,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                 action: Annotated[str | None, Query(max_length=64)] = None) -> list[AuditEntryPublic]:
    """Entries in chain order after ``after_seq``."""
    return audit.list_entries(session, limit, after_seq, action)


@router.get("/verify", response_model=AuditVerificationPublic)
def verify_chain(session: SessionDep, _admin: AdminDep) -> AuditVerificationPublic:
    """Recompute every entry's hash and link; ``ok`` is false with the first problem found."""
    return audit.verify(session)


@router.get("/export", response_class=StreamingResponse,
            responses={200: {"content": {"application/x-ndjson": {}}, "description": "One entry per line."}})
def export_entries(runtime: RuntimeDep, _admin: AdminDep,
                   after_seq: AfterSeq = 0) -> StreamingResponse:
    """Every entry as JSON lines, in chain order (verify offline with ``edgefleet audit verify --file``)."""

    def lines() -> Iterator[bytes]:
        with Session(runtime.engine) as session:
            for entry in audit.iter_entries(session, after_seq):
                yield json.dumps(entry.to_export(), sort_keys=True).encode("utf-8") + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")
