"""Alerts in the database: apply a reconcile plan in one transaction, queue the deliveries,
and the views the API shows.

Opening or resolving an alert queues one delivery per configured webhook. A
drift alert for a cohort also queues the continuous-training hook (a webhook
and/or a command), once per model version and drift episode: only when no
other cohort of that model version already had a drift alert firing.
"""

import logging
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from fleet_server.alerting.rules import COHORT, AlertPlan, Condition, reconcile
from fleet_server.core.db import begin_write
from fleet_server.core.types import utcnow
from fleet_server.errors import AlertNotFoundError
from fleet_server.models.alert import (
    Alert,
    AlertDelivery,
    AlertDeliveryPublic,
    AlertKind,
    AlertPublic,
    AlertState,
)

logger = logging.getLogger(__name__)

RETRAIN_COMMAND_TARGET = "command"
MONITOR_ACTOR = "system:monitor"


@dataclass(frozen=True)
class HookTargets:
    webhooks: tuple[str, ...] = ()
    retrain_webhook: str | None = None
    retrain_command: bool = False

    @property
    def retrain(self) -> tuple[str, ...]:
        return tuple(target for target in (self.retrain_webhook,
                                           RETRAIN_COMMAND_TARGET if self.retrain_command else None) if target)


def alert_payload(alert: Alert, event: str) -> dict[str, Any]:
    return {
        "event": event, "alert_id": alert.id, "kind": alert.kind, "scope": alert.scope, "subject": alert.subject,
        "model": None if alert.model_name is None else {"name": alert.model_name, "version": alert.model_version},
        "state": alert.state, "summary": alert.summary, "details": alert.details,
        "opened_at": alert.opened_at.isoformat(), "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at
        else None,
    }


def retrain_payload(alert: Alert, cohorts: Sequence[Alert]) -> dict[str, Any]:
    return {
        "event": "retrain", "reason": "drift", "alert_id": alert.id,
        "model": {"name": alert.model_name, "version": alert.model_version},
        "cohorts": [{"tag": cohort.subject, "summary": cohort.summary, "drift": cohort.details} for cohort in cohorts],
    }


def _audit(session: Session, action: str, alert: Alert) -> None:
    try:
        from fleet_server.services.audit import record_audit
    except ImportError:  # the audit trail is optional
        return
    record_audit(session, MONITOR_ACTOR, action, {"alert_id": alert.id, "kind": alert.kind, "scope": alert.scope,
                                                  "subject": alert.subject, "summary": alert.summary})


class AlertBook:
    def __init__(self, targets: HookTargets) -> None:
        self.targets = targets

    def apply(self, session: Session, conditions: Sequence[Condition], now: datetime | None = None) -> AlertPlan:
        """Open, refresh and resolve alerts to match ``conditions``; queue their deliveries."""
        now = now or utcnow()
        begin_write(session)
        firing = {alert.active_key: alert for alert in session.exec(
            select(Alert).where(Alert.state == AlertState.FIRING.value)).all() if alert.active_key}
        plan = reconcile({key: alert.id for key, alert in firing.items() if alert.id is not None}, conditions)
        by_id = {alert.id: alert for alert in firing.values()}
        opened = []
        for condition in plan.open:
            alert = Alert(kind=condition.kind.value, scope=condition.scope, subject=condition.subject,
                          model_name=condition.model_name, model_version=condition.model_version,
                          active_key=condition.key, summary=condition.summary[:500], details=condition.details,
                          opened_at=now, updated_at=now)
            session.add(alert)
            opened.append(alert)
        for alert_id, condition in plan.refresh:
            alert = by_id[alert_id]
            alert.summary, alert.details, alert.updated_at = condition.summary[:500], condition.details, now
            session.add(alert)
        resolved = []
        for alert_id in plan.resolve:
            alert = by_id[alert_id]
            alert.state, alert.active_key, alert.resolved_at, alert.updated_at = (
                AlertState.RESOLVED.value, None, now, now)
            session.add(alert)
            resolved.append(alert)
        session.flush()
        for alert in opened:
            self._queue(session, alert, "firing", now)
            _audit(session, "alert.opened", alert)
            logger.warning("server event=alert_opened id=%s kind=%s scope=%s subject=%s summary=%r", alert.id,
                           alert.kind, alert.scope, alert.subject, alert.summary)
        for alert in resolved:
            self._queue(session, alert, "resolved", now)
            _audit(session, "alert.resolved", alert)
            logger.info("server event=alert_resolved id=%s kind=%s subject=%s", alert.id, alert.kind, alert.subject)
        self._queue_retraining(session, opened, firing.values(), now)
        try:
            session.commit()
        except IntegrityError:  # another replica opened the same alert first; the next pass sees it
            session.rollback()
            logger.info("server event=alert_apply_conflict detail='another server replica applied the same change'")
        return plan

    def _queue(self, session: Session, alert: Alert, event: str, now: datetime) -> None:
        assert alert.id is not None  # queued after the flush that inserted the alert
        for url in self.targets.webhooks:
            session.add(AlertDelivery(alert_id=alert.id, event=event, target=url, next_attempt_at=now,
                                      created_at=now, payload=alert_payload(alert, event)))

    def _queue_retraining(self, session: Session, opened: list[Alert], already: Any, now: datetime) -> None:
        if not self.targets.retrain:
            return
        drift = [a for a in opened if a.kind == AlertKind.DRIFT.value and a.scope == COHORT]
        busy = {(a.model_name, a.model_version) for a in already if a.kind == AlertKind.DRIFT.value
                and a.scope == COHORT}
        versions: dict[tuple[str | None, int | None], list[Alert]] = {}
        for alert in drift:
            versions.setdefault((alert.model_name, alert.model_version), []).append(alert)
        for version, cohorts in versions.items():
            if version in busy:
                continue
            assert cohorts[0].id is not None  # opened alerts are flushed before retraining is queued
            for target in self.targets.retrain:
                session.add(AlertDelivery(alert_id=cohorts[0].id, event="retrain", target=target,
                                          next_attempt_at=now, created_at=now,
                                          payload=retrain_payload(cohorts[0], cohorts)))
            logger.warning("server event=retrain_requested model=%s version=%s cohorts=%s", version[0], version[1],
                           ",".join(alert.subject for alert in cohorts))


def redact_target(target: str) -> str:
    """A webhook URL without credentials or query (they may hold tokens)."""
    if target == RETRAIN_COMMAND_TARGET:
        return target
    parts = urllib.parse.urlsplit(target)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def alert_public(alert: Alert, deliveries: Sequence[AlertDelivery]) -> AlertPublic:
    return AlertPublic(
        id=alert.id or 0, kind=alert.kind, scope=alert.scope, subject=alert.subject, model_name=alert.model_name,
        model_version=alert.model_version, state=alert.state, summary=alert.summary, details=alert.details,
        opened_at=alert.opened_at, updated_at=alert.updated_at, resolved_at=alert.resolved_at,
        deliveries=[AlertDeliveryPublic(
            id=d.id or 0, event=d.event, target=redact_target(d.target), state=d.state, attempts=d.attempts,
            next_attempt_at=d.next_attempt_at if d.state == "pending" else None, last_error=d.last_error,
            delivered_at=d.delivered_at) for d in deliveries],
    )


def list_alerts(session: Session, state: str | None = None, kind: str | None = None, subject: str | None = None,
                limit: int = 100) -> list[AlertPublic]:
    statement = select(Alert).order_by(col(Alert.opened_at).desc(), col(Alert.id).desc()).limit(limit)
    if state is not None:
        statement = statement.where(Alert.state == state)
    if kind is not None:
        statement = statement.where(Alert.kind == kind)
    if subject is not None:
        statement = statement.where(Alert.subject == subject)
    alerts = session.exec(statement).all()
    deliveries: dict[int, list[AlertDelivery]] = {}
    ids = [alert.id for alert in alerts if alert.id is not None]
    if ids:
        for delivery in session.exec(select(AlertDelivery).where(col(AlertDelivery.alert_id).in_(ids))
                                     .order_by(col(AlertDelivery.id))):
            deliveries.setdefault(delivery.alert_id, []).append(delivery)
    return [alert_public(alert, deliveries.get(alert.id or 0, [])) for alert in alerts]


def get_alert(session: Session, alert_id: int) -> AlertPublic:
    alert = session.get(Alert, alert_id)
    if alert is None:
        raise AlertNotFoundError(f"alert {alert_id} not found")
    deliveries = session.exec(select(AlertDelivery).where(AlertDelivery.alert_id == alert_id)
                              .order_by(col(AlertDelivery.id))).all()
    return alert_public(alert, deliveries)
