"""Deliver alert events to webhooks (HTTP POST, JSON) and run the continuous-training command.

A worker thread picks due pending deliveries, claims each with a conditional
UPDATE (so two server replicas never send the same one at the same time),
sends it, and records the outcome: delivered on a 2xx answer (or exit code 0
for the command); otherwise retried with exponential backoff until
``max_attempts``, then failed. The state of every delivery is what the alert
API shows.

The retraining command gets the JSON payload on stdin and the model in
``EDGEFLEET_MODEL_NAME`` / ``EDGEFLEET_MODEL_VERSION``.
"""

import json
import logging
import os
import shlex
import subprocess
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import Engine, or_, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, func, select

from fleet_server.alerting.alerts import RETRAIN_COMMAND_TARGET, redact_target
from fleet_server.core.db import write_session
from fleet_server.core.types import utcnow
from fleet_server.models.alert import AlertDelivery, DeliveryState

logger = logging.getLogger(__name__)

CLAIM_S = 120
BATCH = 20
POLL_S = 2.0


@dataclass(frozen=True)
class DeliverySettings:
    timeout_s: float = 5.0
    max_attempts: int = 8
    retry_base_s: float = 2.0
    retry_max_s: float = 300.0
    retrain_command: str = ""


def retry_delay(attempts: int, base: float, cap: float) -> float:
    """Seconds before attempt ``attempts + 1``: base, 2 base, 4 base, ... capped."""
    return min(cap, base * 2 ** max(0, attempts - 1))


class DeliveryWorker:
    def __init__(self, engine: Engine, settings: DeliverySettings) -> None:
        self.engine = engine
        self.settings = settings
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._http = httpx.Client(timeout=settings.timeout_s, follow_redirects=False)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="edgefleet-alert-delivery", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.settings.timeout_s + 5)
            self._thread = None
        self._http.close()

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                while self.deliver_due() and not self._stopping.is_set():
                    pass
            except Exception:
                logger.exception("server event=alert_delivery_failed")
            self._wake.wait(self._until_next_due())
            self._wake.clear()

    def _until_next_due(self) -> float:
        """Seconds until the next pending delivery is due (at most ``POLL_S``)."""
        try:
            with Session(self.engine) as session:
                due = session.exec(select(func.min(AlertDelivery.next_attempt_at)).where(
                    AlertDelivery.state == DeliveryState.PENDING.value)).one()
        except SQLAlchemyError:
            return POLL_S
        if due is None:
            return POLL_S
        if due.tzinfo is None:
            due = due.replace(tzinfo=UTC)
        return min(POLL_S, max(0.05, (due - utcnow()).total_seconds()))

    def deliver_due(self) -> int:
        """Send the deliveries that are due now; return how many were attempted."""
        now = utcnow()
        with Session(self.engine, expire_on_commit=False) as session:
            due = session.exec(select(AlertDelivery.id).where(
                AlertDelivery.state == DeliveryState.PENDING.value, AlertDelivery.next_attempt_at <= now,
                or_(col(AlertDelivery.claimed_until).is_(None), col(AlertDelivery.claimed_until) < now),
            ).order_by(col(AlertDelivery.id)).limit(BATCH)).all()
        attempted = 0
        for delivery_id in due:
            if delivery_id is None or self._stopping.is_set():
                break
            delivery = self._claim(delivery_id, now)
            if delivery is None:
                continue
            attempted += 1
            error = self._send(delivery)
            self._record(delivery, error)
        return attempted

    def _claim(self, delivery_id: int, now: datetime) -> AlertDelivery | None:
        with write_session(self.engine) as session:
            claimed = session.connection().execute(update(AlertDelivery.__table__).where(  # type: ignore[attr-defined]
                AlertDelivery.__table__.c.id == delivery_id,  # type: ignore[attr-defined]
                AlertDelivery.__table__.c.state == DeliveryState.PENDING.value,  # type: ignore[attr-defined]
                or_(AlertDelivery.__table__.c.claimed_until.is_(None),  # type: ignore[attr-defined]
                    AlertDelivery.__table__.c.claimed_until < now),  # type: ignore[attr-defined]
            ).values(claimed_until=now + timedelta(seconds=CLAIM_S)))
            if claimed.rowcount != 1:
                return None
            return session.get(AlertDelivery, delivery_id)

    def _send(self, delivery: AlertDelivery) -> str | None:
        """None on success, else what went wrong."""
        if delivery.target == RETRAIN_COMMAND_TARGET:
            return self._run_command(delivery)
        try:
            response = self._http.post(delivery.target, json=delivery.payload,
                                       headers={"User-Agent": "edgefleet-alerts",
                                                "X-EdgeFleet-Event": delivery.event})
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"

    def _run_command(self, delivery: AlertDelivery) -> str | None:
        argv = shlex.split(self.settings.retrain_command)
        if not argv:
            return "EDGEFLEET_RETRAIN_COMMAND is not set"
        model = delivery.payload.get("model") or {}
        env = {**os.environ, "EDGEFLEET_MODEL_NAME": str(model.get("name") or ""),
               "EDGEFLEET_MODEL_VERSION": str(model.get("version") or "")}
        try:
            result = subprocess.run(argv, input=json.dumps(delivery.payload).encode(), env=env, capture_output=True,
                                    timeout=max(30.0, self.settings.timeout_s), check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{type(exc).__name__}: {exc}"
        if result.returncode != 0:
            return f"exit code {result.returncode}: {result.stderr.decode(errors='replace').strip()[-300:]}"
        return None

    def _record(self, delivery: AlertDelivery, error: str | None) -> None:
        now = utcnow()
        attempts = delivery.attempts + 1
        values: dict[str, object] = {"attempts": attempts, "claimed_until": None}
        if error is None:
            values.update(state=DeliveryState.DELIVERED.value, delivered_at=now, last_error=None)
            logger.info("server event=alert_delivered id=%s alert=%s event=%s target=%s attempts=%d", delivery.id,
                        delivery.alert_id, delivery.event, redact_target(delivery.target), attempts)
        elif attempts >= self.settings.max_attempts:
            values.update(state=DeliveryState.FAILED.value, last_error=error[:1000])
            logger.error("server event=alert_delivery_gave_up id=%s target=%s attempts=%d error=%s", delivery.id,
                         redact_target(delivery.target), attempts, error)
        else:
            delay = retry_delay(attempts, self.settings.retry_base_s, self.settings.retry_max_s)
            values.update(last_error=error[:1000], next_attempt_at=now + timedelta(seconds=delay))
            logger.warning("server event=alert_delivery_retry id=%s target=%s attempts=%d delay_s=%.1f error=%s",
                           delivery.id, redact_target(delivery.target), attempts, delay, error)
        with write_session(self.engine) as session:
            session.connection().execute(update(AlertDelivery.__table__).where(  # type: ignore[attr-defined]
                AlertDelivery.__table__.c.id == delivery.id).values(**values))  # type: ignore[attr-defined]
