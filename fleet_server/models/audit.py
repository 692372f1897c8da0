"""The audit trail: append-only, hash-chained entries and the chain head.

Entry ``n`` stores the hash of entry ``n - 1`` (``prev_hash``) and its own hash
over (seq, time, actor, action, details, prev_hash), so editing or deleting an
entry breaks the chain. The single ``audit_head`` row names the newest entry: it
is what appends lock (serialising them) and what catches a truncated tail.
"""

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Text
from sqlmodel import Field, SQLModel

from fleet_server.core.types import UTCDateTime, utcnow
from fleet_server.models import common  # noqa: F401  (constraint naming convention)

GENESIS_HASH = "0" * 64
HEAD_ID = 1


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_entry"

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    actor: str = Field(max_length=128, index=True)
    action: str = Field(max_length=64, index=True)
    details: str = Field(sa_type=Text)  # canonical JSON, exactly as hashed
    prev_hash: str = Field(max_length=64)
    entry_hash: str = Field(max_length=64, unique=True)


class AuditHead(SQLModel, table=True):
    __tablename__ = "audit_head"

    id: int = Field(default=HEAD_ID, primary_key=True, sa_column_kwargs={"autoincrement": False})
    seq: int = 0
    entry_hash: str = Field(default=GENESIS_HASH, max_length=64)


class AuditEntryPublic(BaseModel):
    seq: int
    created_at: datetime
    actor: str
    action: str
    details: dict[str, Any]
    prev_hash: str
    entry_hash: str


class AuditVerificationPublic(BaseModel):
    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    problem: str | None  # the first inconsistency found, if any
