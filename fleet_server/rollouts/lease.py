"""The controller lease: one row per lease name, naming its holder and when it
expires. Only the holder drives rollouts; it renews the lease every tick, and
any replica may take a lease that expired (its holder died or hangs). Works
on SQLite (the write transaction is ``BEGIN IMMEDIATE``) and on PostgreSQL
(the row is locked ``FOR UPDATE``; a concurrent first insert loses on the
primary key).
"""

import logging
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from fleet_server.core.db import begin_write
from fleet_server.models.rollout import ControllerLease

logger = logging.getLogger(__name__)

ROLLOUT_LEASE = "rollout-controller"


def acquire(session: Session, holder: str, ttl_s: float, now: datetime, name: str = ROLLOUT_LEASE) -> bool:
    """Take or renew the lease; False while another holder's lease is valid."""
    begin_write(session)
    lease = session.exec(select(ControllerLease).where(ControllerLease.name == name).with_for_update()).first()
    expires = now + timedelta(seconds=ttl_s)
    if lease is None:
        session.add(ControllerLease(name=name, holder=holder, expires_at=expires, acquired_at=now))
    elif lease.holder == holder or lease.expires_at <= now:
        if lease.holder != holder:
            logger.warning("server event=lease_taken_over lease=%s from=%s to=%s expired_at=%s", name,
                           lease.holder, holder, lease.expires_at.isoformat())
            lease.acquired_at = now
        lease.holder, lease.expires_at = holder, expires
        session.add(lease)
    else:
        session.rollback()
        return False
    try:
        session.commit()
    except IntegrityError:  # another replica inserted the row first
        session.rollback()
        return False
    return True


def release(session: Session, holder: str, name: str = ROLLOUT_LEASE) -> None:
    """Give the lease up (on a clean stop), so another replica need not wait for it to expire."""
    begin_write(session)
    lease = session.exec(select(ControllerLease).where(ControllerLease.name == name).with_for_update()).first()
    if lease is not None and lease.holder == holder:
        session.delete(lease)
    session.commit()


def held(session: Session, holder: str, now: datetime, name: str = ROLLOUT_LEASE) -> bool:
    """Inside a write transaction: does ``holder`` still hold the lease? (Locks the row on PostgreSQL,
    so a replica that took the lease over and this one never act at the same time.)"""
    lease = session.exec(select(ControllerLease).where(ControllerLease.name == name).with_for_update()).first()
    return lease is not None and lease.holder == holder and lease.expires_at > now
