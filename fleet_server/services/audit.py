"""Append to, read, export and verify the audit trail.

``record_audit`` adds one entry inside the caller's transaction: it commits or
rolls back with the change it describes. Appends are serialised on the chain
head row: ``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite the caller's write
transaction (``begin_write``: ``BEGIN IMMEDIATE``) already excludes other
writers. Call it after the change is flushed and before the commit.
"""

import logging
from collections.abc import Iterator
from typing import Any

from sqlmodel import Session, col, select

from fleet_server.core.db import begin_write
from fleet_server.core.types import utcnow
from fleet_server.models.audit import HEAD_ID, AuditEntry, AuditEntryPublic, AuditHead, AuditVerificationPublic
from fleet_server.services.audit_chain import ChainEntry, compute_hash, details_text, verify_chain

logger = logging.getLogger(__name__)

SYSTEM_ACTOR = "system"
EXPORT_BATCH = 500


def _locked_head(session: Session) -> AuditHead:
    head = session.exec(select(AuditHead).where(AuditHead.id == HEAD_ID).with_for_update()).first()
    if head is None:  # the migration inserts it; a schema built without migrations may lack it
        head = AuditHead(id=HEAD_ID)
        session.add(head)
        session.flush()
    return head


def record_audit(session: Session, actor: str, action: str, details: dict[str, Any]) -> AuditEntry:
    """Append ``action`` by ``actor`` with ``details`` (a JSON object; never put secrets in it)."""
    if not session.in_transaction():
        begin_write(session)
    head = _locked_head(session)
    text = details_text(details)
    created_at = utcnow()
    seq = head.seq + 1
    entry_hash = compute_hash(seq, created_at, actor, action, text, head.entry_hash)
    entry = AuditEntry(seq=seq, created_at=created_at, actor=actor[:128], action=action[:64], details=text,
                       prev_hash=head.entry_hash, entry_hash=entry_hash)
    session.add(entry)
    head.seq, head.entry_hash = seq, entry_hash
    session.add(head)
    session.flush()
    logger.info("server event=audit action=%s actor=%s seq=%d", action, actor, seq)
    return entry


def _chain_entry(row: AuditEntry) -> ChainEntry:
    return ChainEntry(row.seq, row.created_at, row.actor, row.action, row.details, row.prev_hash, row.entry_hash)


def iter_entries(session: Session, after_seq: int = 0) -> Iterator[ChainEntry]:
    """Every entry after ``after_seq`` in chain order, read in batches."""
    last = after_seq
    while True:
        rows = session.exec(
            select(AuditEntry).where(col(AuditEntry.seq) > last).order_by(col(AuditEntry.seq)).limit(EXPORT_BATCH)
        ).all()
        if not rows:
            return
        for row in rows:
            yield _chain_entry(row)
        last = rows[-1].seq


def list_entries(session: Session, limit: int = 100, after_seq: int = 0, action: str | None = None,
                 ) -> list[AuditEntryPublic]:
    statement = select(AuditEntry).where(col(AuditEntry.seq) > after_seq)
    if action is not None:
        statement = statement.where(AuditEntry.action == action)
    rows = session.exec(statement.order_by(col(AuditEntry.seq)).limit(limit)).all()
    return [AuditEntryPublic(**_chain_entry(row).to_export() | {"created_at": row.created_at}) for row in rows]


def head(session: Session) -> tuple[int, str]:
    row = session.get(AuditHead, HEAD_ID)
    return (0, AuditHead().entry_hash) if row is None else (row.seq, row.entry_hash)


def verify(session: Session) -> AuditVerificationPublic:
    """Walk the whole chain in the database and compare its end with the head row."""
    head_seq, head_hash = head(session)
    verdict = verify_chain(iter_entries(session), head=(head_seq, head_hash))
    if not verdict.ok:
        logger.error("server event=audit_chain_broken problem=%r", verdict.problem)
    return AuditVerificationPublic(ok=verdict.ok, entries=verdict.entries, head_seq=head_seq, head_hash=head_hash,
                                   problem=verdict.problem)
