"""Signed releases: one per model version, stored as the exact canonical envelope bytes."""

from datetime import datetime
from typing import Any

from sqlalchemy import Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from fleet_server.core.types import UTCDateTime, utcnow
from fleet_server.models.common import NAME_PATTERN

MAX_RELEASE_TTL_DAYS = 3650


class ReleaseCreate(SQLModel):
    model: str = Field(max_length=128, schema_extra={"pattern": f"^{NAME_PATTERN}$"})
    version: int = Field(ge=1)
    expires_days: int | None = Field(default=None, ge=1, le=MAX_RELEASE_TTL_DAYS)


class ReleaseRecord(SQLModel, table=True):
    __tablename__ = "release"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    model_version_id: int = Field(foreign_key="model_version.id", unique=True)
    name: str = Field(max_length=128, index=True)
    version: int
    envelope: str = Field(sa_type=Text)  # canonical JSON of the signed envelope, as signed
    sha256: str = Field(max_length=64, unique=True)  # Envelope.sha256(): what directives reference
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)


class VariantPublic(SQLModel):
    name: str
    runtime: str
    precision: str
    sha256: str
    length: int
    arch: list[str]
    min_ram_mb: int


class ReleaseSummary(SQLModel):
    name: str
    version: int
    sha256: str
    created_at: datetime
    expires_at: datetime
    variants: list[VariantPublic]


class ReleasePublic(ReleaseSummary):
    envelope: dict[str, Any]  # the signed release envelope exactly as stored
    compression: dict[str, Any] | None = None  # the compression report of the variants it carries
