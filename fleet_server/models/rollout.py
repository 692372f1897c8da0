"""Staged rollouts: a release (or two, for A/B) sent to a target in phases,
with health gates, and every device's progress; plus the controller lease.

All of a rollout's state lives in these tables, so a restarted server (or
another replica taking over the lease) continues exactly where it was.
Each directive a rollout sends is an ordinary deployment target
(``deployment_target``), so publishing, retries and status ingest are shared
with plain deployments; ``rollout_device.target_id`` points at the newest.
"""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

import fleet_server.models.common  # noqa: F401  (the constraint naming convention applies first)
from fleet_server.core.types import UTCDateTime, utcnow
from fleet_server.rollouts.states import DeviceStatus, RolloutState

__all__ = ["ControllerLease", "DeviceStatus", "Rollout", "RolloutDevice", "RolloutPhase", "RolloutState"]


class Rollout(SQLModel, table=True):
    __tablename__ = "rollout"

    id: int | None = Field(default=None, primary_key=True)
    name: str | None = Field(default=None, max_length=128)
    release_id: int = Field(foreign_key="release.id", index=True)  # cohort "a"
    release_b_id: int | None = Field(default=None, foreign_key="release.id")  # cohort "b" of an A/B rollout
    b_share: float = 0.0
    action: str = Field(max_length=16)  # install or shadow
    state: str = Field(default=RolloutState.DRAFT.value, max_length=16, index=True)
    reason: str | None = Field(default=None, sa_type=Text)  # why it stopped (abort criterion, operator)
    target: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)  # the selector as requested
    criteria: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)  # abort criteria
    rate_limit_per_min: int
    device_timeout_s: float
    max_retries: int
    retry_backoff_s: float
    baseline_s: float  # length of the pre-rollout telemetry window each device is compared with
    current_phase: int = 0
    source_rollout_id: int | None = Field(default=None, foreign_key="rollout.id")  # the shadow it promotes
    created_by: str = Field(default="", max_length=128)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    start_at: datetime | None = Field(default=None, sa_type=UTCDateTime)  # a draft the controller starts then
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class RolloutPhase(SQLModel, table=True):
    __tablename__ = "rollout_phase"
    __table_args__ = (UniqueConstraint("rollout_id", "index"),)

    id: int | None = Field(default=None, primary_key=True)
    rollout_id: int = Field(foreign_key="rollout.id", index=True)
    index: int
    share: float | None = None  # cumulative share of the target (0..1], or
    count: int | None = None  # cumulative number of devices
    bake_s: float
    success_threshold: float
    state: str = Field(default="pending", max_length=16)  # PhaseState
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    bake_started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    completed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class RolloutDevice(SQLModel, table=True):
    __tablename__ = "rollout_device"
    __table_args__ = (
        UniqueConstraint("rollout_id", "device_id"),
        Index("ix_rollout_device_rollout_status", "rollout_id", "status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    rollout_id: int = Field(foreign_key="rollout.id")
    device_id: str = Field(foreign_key="device.device_id", index=True, max_length=63)
    position: int  # order within the rollout (a stable shuffle): phases and notifications follow it
    phase: int | None = None  # None: incompatible, in no phase
    cohort: str = Field(default="a", max_length=1)
    status: str = Field(default=DeviceStatus.PENDING.value, max_length=16)
    variant: str | None = Field(default=None, max_length=128)  # what the server expects the device to pick
    attempts: int = 0  # install directives sent
    target_id: int | None = Field(default=None, foreign_key="deployment_target.id")  # newest directive
    notified_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    next_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)  # retry backoff
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)  # install final (server clock)
    installed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)  # device clock of "succeeded"
    rollback_attempts: int = 0
    reason: str | None = Field(default=None, sa_type=Text)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ControllerLease(SQLModel, table=True):
    """Which server replica drives rollouts: renewed every tick, taken over when it expires."""

    __tablename__ = "controller_lease"

    name: str = Field(primary_key=True, max_length=64)
    holder: str = Field(max_length=128)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    acquired_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
