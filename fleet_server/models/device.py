"""Enrolled devices: hardware facts, hashed credential, directive sequence and
the latest presence (online, inventory) reported over MQTT."""

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, field_validator
from sqlalchemy import JSON
from sqlmodel import Field, SQLModel

from agent.protocol import InvalidDeviceIdError, Runtime, validate_device_id
from fleet_server.core.types import UTCDateTime, utcnow
from fleet_server.models.common import TAG_PATTERN, TAG_REGEX

MAX_TAGS = 32


def validate_tags(tags: list[str]) -> list[str]:
    for tag in tags:
        if not isinstance(tag, str) or not TAG_REGEX.fullmatch(tag):
            raise ValueError(f"invalid tag {tag!r}: use 1-64 of [A-Za-z0-9._:-], starting with a letter or digit")
    return sorted(set(tags))


def validate_device_ids(device_ids: list[str]) -> list[str]:
    """Valid device ids, duplicates dropped, order kept (a pydantic validator body)."""
    try:
        return list(dict.fromkeys(validate_device_id(device_id) for device_id in device_ids))
    except InvalidDeviceIdError as exc:
        raise ValueError(str(exc)) from None


TagList = Annotated[list[str], AfterValidator(validate_tags)]  # valid, sorted, duplicates dropped
DeviceIdList = Annotated[list[str], AfterValidator(validate_device_ids)]  # valid, order kept, duplicates dropped


class DeviceFactsBase(SQLModel):
    arch: str = Field(min_length=1, max_length=64, schema_extra={"pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]*$"})
    ram_mb: int = Field(ge=0, le=1 << 30)
    runtimes: list[Runtime] = Field(default_factory=list, sa_type=JSON, max_length=8)
    agent_version: str = Field(default="", max_length=64)


class DeviceEnroll(DeviceFactsBase):
    device_id: str = Field(max_length=63)
    bootstrap_token: str = Field(min_length=1, max_length=512)
    tags: TagList = Field(default_factory=list, max_length=MAX_TAGS)
    csr: str | None = Field(default=None, min_length=1, max_length=16384,
                            description="PEM CSR of the device's own key (CN = device id) for its MQTT certificate")

    @field_validator("device_id")
    @classmethod
    def _valid_device_id(cls, value: str) -> str:
        try:
            return validate_device_id(value)
        except InvalidDeviceIdError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("runtimes")
    @classmethod
    def _unique_runtimes(cls, value: list[Runtime]) -> list[Runtime]:
        return list(dict.fromkeys(value))


class EnrollmentPublic(BaseModel):
    device_id: str
    credential: str  # shown once; the server keeps only its hash
    mqtt_url: str
    root: dict[str, Any]  # the signed root envelope to provision as trusted
    artifact_base_url: str | None
    certificate: str | None = None  # PEM client certificate for the CSR sent (CN = device id)
    certificate_not_after: datetime | None = None
    ca_certificate: str | None = None  # PEM fleet CA: verifies the broker (and the server over https)


class Device(DeviceFactsBase, table=True):
    __tablename__ = "device"

    device_id: str = Field(primary_key=True, max_length=63)
    credential_hash: str = Field(max_length=64, unique=True, index=True)
    enrolled_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    credential_rotated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    directive_sequence: int = 0  # last sequence signed for this device
    online: bool = False
    last_seen: datetime | None = Field(default=None, sa_type=UTCDateTime)
    presence_timestamp: float | None = None  # device clock of the newest online presence applied
    uptime_s: float | None = None
    installed_models: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    deployment_state: str | None = Field(default=None, max_length=32)
    deployment_state_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class DeviceTag(SQLModel, table=True):
    __tablename__ = "device_tag"

    device_id: str = Field(foreign_key="device.device_id", primary_key=True, max_length=63, ondelete="CASCADE")
    tag: str = Field(primary_key=True, max_length=64, index=True, schema_extra={"pattern": TAG_PATTERN})


class InstalledModelPublic(BaseModel):
    name: str
    version: int
    variant: str
    sha256: str


class LatestDeploymentPublic(BaseModel):
    deployment_id: int
    sequence: int
    release_name: str
    release_version: int
    state: str
    reason: str | None
    updated_at: datetime


class DevicePublic(BaseModel):
    device_id: str
    arch: str
    ram_mb: int
    runtimes: list[str]
    agent_version: str
    tags: list[str]
    enrolled_at: datetime
    online: bool
    last_seen: datetime | None
    uptime_s: float | None
    current_model: InstalledModelPublic | None
    models: list[InstalledModelPublic]
    deployment_state: str | None  # latest state the device reported (status or presence)
    directive_sequence: int
    latest_deployment: LatestDeploymentPublic | None
