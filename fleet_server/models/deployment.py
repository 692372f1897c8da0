"""Deployments: a release sent to a set of devices, one signed directive per
device (target), and every state change a device reported for it."""

from datetime import datetime

from pydantic import BaseModel, field_validator
from pydantic import Field as PydanticField
from sqlalchemy import Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from agent.protocol import Action
from fleet_server.core.types import UTCDateTime, utcnow
from fleet_server.models.common import NAME_PATTERN
from fleet_server.models.device import DeviceIdList, TagList

PENDING_STATE = "pending"  # directive stored, no report from the device yet
DEPLOYMENT_ACTIONS = (Action.INSTALL, Action.ROLLBACK)  # shadow and drop_shadow go through rollouts
MAX_TARGET_IDS = 10_000


class ReleaseSelector(BaseModel):
    name: str = PydanticField(max_length=128, pattern=f"^{NAME_PATTERN}$")
    version: int = PydanticField(ge=1)


class DeploymentCreate(BaseModel):
    release: ReleaseSelector
    device_ids: DeviceIdList = PydanticField(default_factory=list, max_length=MAX_TARGET_IDS)
    tags: TagList = PydanticField(default_factory=list, max_length=64)
    action: Action = Action.INSTALL

    @field_validator("action")
    @classmethod
    def _plain_action(cls, value: Action) -> Action:
        if value not in DEPLOYMENT_ACTIONS:
            raise ValueError(f"a deployment installs or rolls back; '{value}' is a rollout action "
                             "(POST /api/v1/rollouts)")
        return value


class Deployment(SQLModel, table=True):
    __tablename__ = "deployment"

    id: int | None = Field(default=None, primary_key=True)
    release_id: int = Field(foreign_key="release.id", index=True)
    action: str = Field(max_length=16)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class DeploymentTarget(SQLModel, table=True):
    __tablename__ = "deployment_target"
    __table_args__ = (UniqueConstraint("device_id", "sequence"),)

    id: int | None = Field(default=None, primary_key=True)
    deployment_id: int = Field(foreign_key="deployment.id", index=True)
    device_id: str = Field(foreign_key="device.device_id", index=True, max_length=63)
    sequence: int
    directive: str = Field(sa_type=Text)  # canonical JSON of the signed directive envelope
    directive_expires_at: datetime = Field(sa_type=UTCDateTime)
    published_at: datetime | None = Field(default=None, sa_type=UTCDateTime)  # broker acknowledged
    state: str = Field(default=PENDING_STATE, max_length=32)
    reason: str | None = Field(default=None, sa_type=Text)
    state_reported_at: datetime | None = Field(default=None, sa_type=UTCDateTime)  # device clock
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class DeploymentEvent(SQLModel, table=True):
    __tablename__ = "deployment_event"
    __table_args__ = (
        UniqueConstraint("target_id", "state", "reported_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    target_id: int = Field(foreign_key="deployment_target.id", index=True)
    state: str = Field(max_length=32)
    reason: str | None = Field(default=None, sa_type=Text)
    variant: str | None = Field(default=None, max_length=128)
    reported_at: datetime = Field(sa_type=UTCDateTime)  # device clock
    recorded_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class DeploymentEventPublic(BaseModel):
    state: str
    reason: str | None
    variant: str | None
    reported_at: datetime
    recorded_at: datetime


class DeploymentTargetPublic(BaseModel):
    device_id: str
    sequence: int
    state: str
    reason: str | None
    updated_at: datetime
    published_at: datetime | None
    directive_expires_at: datetime
    history: list[DeploymentEventPublic]


class ReleaseRefPublic(BaseModel):
    name: str
    version: int
    sha256: str


class DeploymentSummary(BaseModel):
    id: int
    release: ReleaseRefPublic
    action: str
    created_at: datetime
    states: dict[str, int]  # device count per state


class DeploymentPublic(DeploymentSummary):
    targets: list[DeploymentTargetPublic]
