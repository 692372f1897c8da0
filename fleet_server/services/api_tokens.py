"""Operator API tokens: issue (shown once, stored as sha256), authenticate,
list and revoke. Every issue and revocation is in the audit trail."""

import logging
from datetime import timedelta

from sqlmodel import Session, col, select

from fleet_server.core.db import begin_write
from fleet_server.core.security import hash_token, new_token
from fleet_server.core.types import utcnow
from fleet_server.errors import TokenNotFoundError
from fleet_server.models.tokens import ApiToken, ApiTokenCreate, ApiTokenIssued, ApiTokenPublic, Role
from fleet_server.services.audit import record_audit

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "efo_"  # recognisable in leaked-secret scanners; devices' credentials have none


def actor_name(token: ApiToken) -> str:
    return f"token:{token.name}#{token.id}"


def is_active(token: ApiToken) -> bool:
    return token.revoked_at is None and (token.expires_at is None or token.expires_at > utcnow())


def public(token: ApiToken) -> ApiTokenPublic:
    assert token.id is not None
    return ApiTokenPublic(id=token.id, name=token.name, role=Role(token.role), created_at=token.created_at,
                          created_by=token.created_by, expires_at=token.expires_at, revoked_at=token.revoked_at,
                          active=is_active(token))


def issue(session: Session, request: ApiTokenCreate, actor: str) -> ApiTokenIssued:
    secret = TOKEN_PREFIX + new_token()
    now = utcnow()
    expires = None if request.expires_days is None else now + timedelta(days=request.expires_days)
    begin_write(session)
    token = ApiToken(name=request.name, role=request.role.value, token_hash=hash_token(secret), created_at=now,
                     created_by=actor, expires_at=expires)
    session.add(token)
    session.flush()
    record_audit(session, actor, "token.issued", {"token_id": token.id, "name": token.name, "role": token.role,
                                                  "expires_at": expires})
    session.commit()
    logger.info("server event=token_issued id=%s name=%r role=%s by=%s", token.id, token.name, token.role, actor)
    return ApiTokenIssued(**public(token).model_dump(), token=secret)


def authenticate(session: Session, secret: str) -> ApiToken | None:
    """The active token ``secret`` is, or None."""
    if not secret.startswith(TOKEN_PREFIX):
        return None
    return by_hash(session, hash_token(secret))


def by_hash(session: Session, token_hash: str) -> ApiToken | None:
    """The active token whose sha256 is ``token_hash`` (the dashboard's session holds only the hash), or None."""
    token = session.exec(select(ApiToken).where(ApiToken.token_hash == token_hash)).first()
    return token if token is not None and is_active(token) else None


def list_tokens(session: Session, include_inactive: bool = False) -> list[ApiTokenPublic]:
    tokens = session.exec(select(ApiToken).order_by(col(ApiToken.id))).all()
    return [public(token) for token in tokens if include_inactive or is_active(token)]


def revoke(session: Session, token_id: int, actor: str) -> ApiTokenPublic:
    begin_write(session)
    token = session.get(ApiToken, token_id)
    if token is None:
        raise TokenNotFoundError(f"no API token with id {token_id}")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        token.revoked_by = actor
        session.add(token)
        session.flush()
        record_audit(session, actor, "token.revoked", {"token_id": token.id, "name": token.name,
                                                       "role": token.role})
        logger.info("server event=token_revoked id=%s name=%r by=%s", token.id, token.name, actor)
    session.commit()
    return public(token)
