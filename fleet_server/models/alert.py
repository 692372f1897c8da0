"""Alerts (drift, latency regression, error rate, device offline) and their deliveries.

``active_key`` identifies the condition while the alert fires and is cleared
when it resolves; its unique constraint (NULLs never collide) keeps two
evaluator passes, or two server replicas, from opening the same alert twice.
Each webhook (and the continuous-training hook) gets one delivery row per
alert event, retried with backoff; its state is what the API shows.
"""

import enum
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import JSON, Index
from sqlmodel import Field, SQLModel

import fleet_server.models.common  # noqa: F401  (the constraint naming convention applies first)
from fleet_server.core.types import UTCDateTime, utcnow


class AlertKind(enum.StrEnum):
    DRIFT = "drift"
    LATENCY = "latency"
    ERROR_RATE = "error_rate"
    OFFLINE = "offline"


class AlertState(enum.StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # gave up after the last attempt


class Alert(SQLModel, table=True):
    __tablename__ = "alert"
    __table_args__ = (Index("ix_alert_state_opened_at", "state", "opened_at"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32)
    scope: str = Field(max_length=16)  # "device" or "cohort"
    subject: str = Field(max_length=255)  # device id, or the cohort's tag
    model_name: str | None = Field(default=None, max_length=128)
    model_version: int | None = None
    state: str = Field(default=AlertState.FIRING.value, max_length=16)
    active_key: str | None = Field(default=None, max_length=512, unique=True)
    summary: str = Field(max_length=500)
    details: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    opened_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    resolved_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class AlertDelivery(SQLModel, table=True):
    __tablename__ = "alert_delivery"
    __table_args__ = (Index("ix_alert_delivery_state_next_attempt_at", "state", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    alert_id: int = Field(foreign_key="alert.id", index=True, ondelete="CASCADE")
    event: str = Field(max_length=16)  # "firing", "resolved" or "retrain"
    target: str = Field(max_length=2048)  # webhook URL, or "command" for the retraining command
    state: str = Field(default=DeliveryState.PENDING.value, max_length=16)
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    claimed_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, max_length=1000)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)


class AlertDeliveryPublic(BaseModel):
    id: int
    event: str
    target: str
    state: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    delivered_at: datetime | None


class AlertPublic(BaseModel):
    id: int
    kind: str
    scope: str
    subject: str
    model_name: str | None
    model_version: int | None
    state: str
    summary: str
    details: dict[str, Any]
    opened_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    deliveries: list[AlertDeliveryPublic]
