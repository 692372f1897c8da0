"""Bootstrap tokens: what a device presents once to enroll.

An admin issues a token (optionally bound to one device id) that expires and
is consumed by the first enrollment that uses it, inside that enrollment's
transaction. ``EDGEFLEET_BOOTSTRAP_TOKEN``, when set, is a multi-use
provisioning token for development and demos only: it never expires, so a
production server leaves it unset and issues single-use tokens.
"""

import logging
from datetime import timedelta

from sqlmodel import Session, col, select

from fleet_server.core.db import begin_write
from fleet_server.core.security import hash_token, new_token, tokens_equal
from fleet_server.core.types import utcnow
from fleet_server.errors import AuthenticationError, TokenNotFoundError
from fleet_server.models.tokens import BootstrapToken, BootstrapTokenCreate, BootstrapTokenIssued, BootstrapTokenPublic
from fleet_server.services.audit import record_audit

logger = logging.getLogger(__name__)

PROVISIONING = "provisioning-token"  # what the audit trail names for EDGEFLEET_BOOTSTRAP_TOKEN
REFUSED = "invalid, used or expired bootstrap token"


def public(token: BootstrapToken) -> BootstrapTokenPublic:
    assert token.id is not None
    return BootstrapTokenPublic(id=token.id, device_id=token.device_id, created_at=token.created_at,
                                created_by=token.created_by, expires_at=token.expires_at, used_at=token.used_at,
                                used_by=token.used_by)


def issue(session: Session, request: BootstrapTokenCreate, actor: str) -> BootstrapTokenIssued:
    secret = new_token()
    now = utcnow()
    begin_write(session)
    token = BootstrapToken(token_hash=hash_token(secret), device_id=request.device_id, created_at=now,
                           created_by=actor, expires_at=now + timedelta(seconds=request.ttl_s))
    session.add(token)
    session.flush()
    record_audit(session, actor, "bootstrap_token.issued", {"token_id": token.id, "device_id": token.device_id,
                                                            "expires_at": token.expires_at})
    session.commit()
    logger.info("server event=bootstrap_token_issued id=%s device=%s expires=%s by=%s", token.id,
                token.device_id or "*", token.expires_at.isoformat(), actor)
    return BootstrapTokenIssued(**public(token).model_dump(), token=secret)


def list_tokens(session: Session, include_inactive: bool = False) -> list[BootstrapTokenPublic]:
    now = utcnow()
    rows = session.exec(select(BootstrapToken).order_by(col(BootstrapToken.id))).all()
    return [public(row) for row in rows if include_inactive or (row.used_at is None and row.expires_at > now)]


def revoke(session: Session, token_id: int, actor: str) -> BootstrapTokenPublic:
    """Make an unused token unusable (it expires now)."""
    begin_write(session)
    token = session.get(BootstrapToken, token_id)
    if token is None:
        raise TokenNotFoundError(f"no bootstrap token with id {token_id}")
    now = utcnow()
    if token.used_at is None and token.expires_at > now:
        token.expires_at = now
        session.add(token)
        session.flush()
        record_audit(session, actor, "bootstrap_token.revoked", {"token_id": token.id, "device_id": token.device_id})
    session.commit()
    return public(token)


def consume(session: Session, secret: str, device_id: str, provisioning_token: str = "") -> str:
    """Check ``secret`` for enrolling ``device_id`` and use it up; return the audit actor.

    Call inside the enrollment's write transaction: the token is spent only if it commits.
    """
    if provisioning_token and tokens_equal(secret, provisioning_token):
        return PROVISIONING
    token = session.exec(
        select(BootstrapToken).where(BootstrapToken.token_hash == hash_token(secret)).with_for_update()
    ).first()
    reason = None
    if token is None:
        reason = "unknown"
    elif token.used_at is not None:
        reason = "already_used"
    elif token.expires_at <= utcnow():
        reason = "expired"
    elif token.device_id is not None and token.device_id != device_id:
        reason = "other_device"
    if reason is not None or token is None:
        logger.warning("server event=enroll_refused device=%s reason=%s", device_id, reason)
        raise AuthenticationError(REFUSED)
    token.used_at = utcnow()
    token.used_by = device_id
    session.add(token)
    session.flush()
    return f"bootstrap:{token.id}"
