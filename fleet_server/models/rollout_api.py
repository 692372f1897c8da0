"""Rollout API schemas: what ``POST /rollouts`` accepts (with the defaults that
make ``edgefleet rollout create MODEL@VERSION --target tag:line-3`` work) and
what the rollout views return."""

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, Field, field_validator, model_validator

from agent.protocol import Runtime
from fleet_server.core.types import utcnow
from fleet_server.models.deployment import MAX_TARGET_IDS, ReleaseRefPublic, ReleaseSelector
from fleet_server.models.device import DeviceIdList, TagList

DAY_S = 24 * 3600.0
MAX_PHASES = 20
MAX_SCHEDULE_DAYS = 366


class TargetCreate(BaseModel):
    """Devices by id, by tag, or all of them; narrowed by the inventory fields."""

    device_ids: DeviceIdList = Field(default_factory=list, max_length=MAX_TARGET_IDS)
    tags: TagList = Field(default_factory=list, max_length=64)
    all: bool = False
    arch: list[str] = Field(default_factory=list, max_length=16)
    min_ram_mb: int | None = Field(default=None, ge=0)
    max_ram_mb: int | None = Field(default=None, ge=0)
    runtimes: list[Runtime] = Field(default_factory=list, max_length=4)

    @field_validator("arch")
    @classmethod
    def _valid_arch(cls, value: list[str]) -> list[str]:
        for arch in value:
            if not arch or len(arch) > 64 or not arch.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"invalid architecture {arch!r}")
        return value

    @model_validator(mode="after")
    def _selects_something(self) -> "TargetCreate":
        if not (self.device_ids or self.tags or self.all):
            raise ValueError("the target needs device_ids, tags or all=true (narrowed by arch/ram/runtimes)")
        return self


class PhaseCreate(BaseModel):
    """A cumulative share (0.1 = 10 %) or count of the target; the last phase always covers it all."""

    share: float | None = Field(default=None, gt=0, le=1)
    count: int | None = Field(default=None, ge=1, le=MAX_TARGET_IDS)
    bake_s: float = Field(default=60.0, ge=0, le=7 * DAY_S)
    success_threshold: float = Field(default=0.9, ge=0, le=1)

    @model_validator(mode="after")
    def _share_or_count(self) -> "PhaseCreate":
        if (self.share is None) == (self.count is None):
            raise ValueError("a phase has either a share or a count")
        return self


def default_phases() -> list[PhaseCreate]:
    return [PhaseCreate(share=share) for share in (0.1, 0.5, 1.0)]


class CriteriaCreate(BaseModel):
    """Abort criteria (see ``fleet_server.rollouts.health.Criteria``)."""

    max_failure_rate: float = Field(default=0.1, ge=0, le=1)
    max_error_rate_increase: float = Field(default=0.05, ge=0, le=1)
    max_latency_ratio: float = Field(default=1.5, ge=1)
    min_latency_increase_ms: float = Field(default=5.0, ge=0)
    max_drift_score: float | None = Field(default=None, ge=0, le=1)
    min_requests: int = Field(default=20, ge=1)
    max_unhealthy_share: float = Field(default=0.1, ge=0, le=1)
    auto_rollback: bool = True


class RolloutCreate(BaseModel):
    release: ReleaseSelector
    release_b: ReleaseSelector | None = None  # A/B: cohort "b" gets this release
    b_share: float = Field(default=0.5, gt=0, lt=1)  # share of the target in cohort "b" (with release_b)
    action: Literal["install", "shadow"] = "install"
    target: TargetCreate
    phases: list[PhaseCreate] = Field(default_factory=default_phases, min_length=1, max_length=MAX_PHASES)
    criteria: CriteriaCreate = Field(default_factory=CriteriaCreate)
    rate_limit_per_min: int = Field(default=300, ge=1, le=1_000_000)
    device_timeout_s: float = Field(default=600.0, ge=1, le=7 * DAY_S)
    max_retries: int = Field(default=2, ge=0, le=10)
    retry_backoff_s: float = Field(default=30.0, ge=0, le=DAY_S)
    baseline_s: float = Field(default=3600.0, ge=0, le=30 * DAY_S)
    name: str | None = Field(default=None, max_length=128)
    start: bool = True  # false: create as a draft, start later
    start_at: AwareDatetime | None = None  # a draft the controller starts at this time (instead of ``start``)

    @model_validator(mode="after")
    def _consistent(self) -> "RolloutCreate":
        shares = [phase.share for phase in self.phases if phase.share is not None]
        counts = [phase.count for phase in self.phases if phase.count is not None]
        if shares != sorted(shares) or counts != sorted(counts):
            raise ValueError("phases are cumulative: each share or count must be at least the previous one")
        if self.release_b is not None and self.action != "install":
            raise ValueError("A/B cohorts are for install rollouts")
        if self.start_at is not None:
            if "start" in self.model_fields_set and self.start:
                raise ValueError("start and start_at exclude each other: a scheduled rollout starts at start_at")
            if self.start_at <= utcnow():
                raise ValueError(f"start_at {self.start_at.isoformat()} is in the past; start now with start: true")
            if self.start_at > utcnow() + timedelta(days=MAX_SCHEDULE_DAYS):
                raise ValueError(f"start_at is more than {MAX_SCHEDULE_DAYS} days ahead")
        return self

    @property
    def starts_now(self) -> bool:
        return self.start and self.start_at is None


class PromoteRequest(BaseModel):
    phases: list[PhaseCreate] = Field(default_factory=default_phases, min_length=1, max_length=MAX_PHASES)
    start: bool = True


# -- views ---------------------------------------------------------------------------------------------


class PhasePublic(BaseModel):
    index: int
    share: float | None
    count: int | None
    size: int  # devices in this phase and the ones before it
    bake_s: float
    success_threshold: float
    state: str
    started_at: datetime | None
    bake_started_at: datetime | None
    completed_at: datetime | None
    devices: dict[str, int]  # this phase's own devices per status


class RolloutDevicePublic(BaseModel):
    device_id: str
    phase: int | None
    cohort: str
    status: str
    variant: str | None
    attempts: int
    sequence: int | None  # the newest directive's sequence number
    deployment_id: int | None  # the deployment that directive belongs to (its per-state history)
    agent_state: str | None  # what the device last reported for it
    reason: str | None
    notified_at: datetime | None
    finished_at: datetime | None


class RolloutSummary(BaseModel):
    id: int
    name: str | None
    release: ReleaseRefPublic
    release_b: ReleaseRefPublic | None
    b_share: float
    action: str
    state: str
    reason: str | None
    current_phase: int
    phases: int
    devices: dict[str, int]  # devices per status
    created_at: datetime
    start_at: datetime | None  # scheduled start of a draft
    started_at: datetime | None
    finished_at: datetime | None


class RolloutPublic(RolloutSummary):
    target: dict[str, Any]
    criteria: dict[str, Any]
    rate_limit_per_min: int
    device_timeout_s: float
    max_retries: int
    retry_backoff_s: float
    baseline_s: float
    source_rollout_id: int | None
    created_by: str
    phase_details: list[PhasePublic]
    device_details: list[RolloutDevicePublic]


class CohortPublic(BaseModel):
    cohort: str
    release: ReleaseRefPublic
    devices: int
    succeeded: int
    requests: int  # telemetry since the rollout started, from devices serving the cohort's release
    errors: int
    error_rate: float | None
    p95_latency_ms: float | None
    drift_score: float | None


class ShadowPublic(BaseModel):
    candidate: ReleaseRefPublic
    devices_running: int  # devices that installed the candidate
    devices_reporting: int  # devices with compared requests in telemetry
    compared: int
    agreement: float | None  # top-1 (classifiers) or within-tolerance share, over all compared requests
    mean_abs_diff: float | None
    serving_p50_ms: float | None  # request-weighted mean of the windows' medians
    candidate_p50_ms: float | None
