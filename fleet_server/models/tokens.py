"""Operator API tokens (role-based, hashed, expiring, revocable) and single-use
bootstrap tokens that enroll one device."""

import enum
from datetime import datetime

from pydantic import BaseModel, field_validator
from pydantic import Field as PydanticField
from sqlmodel import Field, SQLModel

from agent.protocol import InvalidDeviceIdError, validate_device_id
from fleet_server.core.types import UTCDateTime, utcnow
from fleet_server.models import common  # noqa: F401  (constraint naming convention)

TOKEN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ._@:-]{0,63}$"
MAX_TOKEN_DAYS = 3650
MAX_BOOTSTRAP_TTL_S = 30 * 24 * 3600


class Role(enum.StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return ROLE_ORDER.index(self)

    def allows(self, needed: "Role") -> bool:
        return self.rank >= needed.rank


ROLE_ORDER = (Role.VIEWER, Role.OPERATOR, Role.ADMIN)


class ApiToken(SQLModel, table=True):
    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64)
    role: str = Field(max_length=16)
    token_hash: str = Field(max_length=64, unique=True, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    created_by: str = Field(max_length=128)
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_by: str | None = Field(default=None, max_length=128)


class ApiTokenCreate(BaseModel):
    name: str = PydanticField(pattern=TOKEN_NAME_PATTERN, description="Who or what holds the token")
    role: Role
    expires_days: int | None = PydanticField(default=90, ge=1, le=MAX_TOKEN_DAYS,
                                             description="Days until the token expires; null: never")


class ApiTokenPublic(BaseModel):
    id: int
    name: str
    role: Role
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    active: bool


class ApiTokenIssued(ApiTokenPublic):
    token: str  # shown once; the server keeps only its hash


class BootstrapToken(SQLModel, table=True):
    __tablename__ = "bootstrap_token"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True, index=True)
    device_id: str | None = Field(default=None, max_length=63)  # None: any device id
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    created_by: str = Field(max_length=128)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    used_by: str | None = Field(default=None, max_length=63)


class BootstrapTokenCreate(BaseModel):
    device_id: str | None = PydanticField(default=None, max_length=63,
                                          description="Only this device may enroll with it; null: any")
    ttl_s: int = PydanticField(default=24 * 3600, ge=60, le=MAX_BOOTSTRAP_TTL_S,
                               description="Seconds until the unused token expires")

    @field_validator("device_id")
    @classmethod
    def _valid_device_id(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return validate_device_id(value)
        except InvalidDeviceIdError as exc:
            raise ValueError(str(exc)) from None


class BootstrapTokenPublic(BaseModel):
    id: int
    device_id: str | None
    created_at: datetime
    created_by: str
    expires_at: datetime
    used_at: datetime | None
    used_by: str | None


class BootstrapTokenIssued(BootstrapTokenPublic):
    token: str  # shown once; single use
