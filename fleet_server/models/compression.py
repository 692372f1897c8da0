"""Compression jobs, the variants they produced (artifacts linked to the model
version), calibration data sets, and which job a signed release was built from."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydanticField
from sqlalchemy import JSON, BigInteger, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from fleet_server.core.types import UTCDateTime, utcnow
from fleet_server.models.common import NAME_PATTERN, SHA256_PATTERN

JOB_QUEUED = "queued"
JOB_RUNNING = "running"
JOB_SUCCEEDED = "succeeded"
JOB_FAILED = "failed"
UNFINISHED = (JOB_QUEUED, JOB_RUNNING)


class CompressionJob(SQLModel, table=True):
    __tablename__ = "compression_job"

    id: int | None = Field(default=None, primary_key=True)
    model_version_id: int = Field(foreign_key="model_version.id", index=True)
    status: str = Field(default=JOB_QUEUED, max_length=16, index=True)
    stage: str = Field(default="queued", max_length=128)
    progress: float = 0.0
    settings: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    calibration_sha256: str = Field(max_length=64)
    validation_sha256: str | None = Field(default=None, max_length=64)
    report: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    profile_sha256: str | None = Field(default=None, max_length=64)
    error: str | None = Field(default=None, sa_type=Text)
    owner: str = Field(default="", max_length=64)  # the worker (server process) running it
    created_by: str = Field(default="", max_length=128)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    heartbeat_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ModelVariant(SQLModel, table=True):
    """A variant that passed the gate, stored as a content-addressed artifact; ``position`` is its release rank."""

    __tablename__ = "model_variant"
    __table_args__ = (UniqueConstraint("job_id", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="compression_job.id", index=True)
    model_version_id: int = Field(foreign_key="model_version.id", index=True)
    position: int
    name: str = Field(max_length=128)
    runtime: str = Field(max_length=32)
    precision: str = Field(max_length=64)
    path: str = Field(max_length=255)  # file name in the device's model slot
    sha256: str = Field(max_length=64, index=True)
    size_bytes: int = Field(sa_type=BigInteger)
    arch: list[str] = Field(default_factory=list, sa_type=JSON)
    min_ram_mb: int = 0


class ReleaseCompression(SQLModel, table=True):
    """The compression job whose variants and report a release carries."""

    __tablename__ = "release_compression"

    release_id: int = Field(foreign_key="release.id", primary_key=True)
    job_id: int = Field(foreign_key="compression_job.id", index=True)


class DatasetPublic(BaseModel):
    sha256: str
    size_bytes: int
    format: str  # npz, npy or csv


class ThresholdsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_top1_agreement: float = PydanticField(default=0.99, ge=0.0, le=1.0)
    max_accuracy_drop: float = PydanticField(default=0.01, ge=0.0, le=1.0)
    min_sqnr_db: float | None = PydanticField(default=None, ge=-100.0, le=300.0)
    max_relative_error: float = PydanticField(default=0.05, ge=0.0, le=1000.0)


class CompressionRequest(BaseModel):
    """``POST /models/{name}/versions/{version}/compress``: data sets (uploaded to ``/datasets``) and options."""

    model_config = ConfigDict(extra="forbid")

    calibration_sha256: str = PydanticField(pattern=f"^{SHA256_PATTERN}$")
    validation_sha256: str | None = PydanticField(default=None, pattern=f"^{SHA256_PATTERN}$")
    variants: list[str] | None = PydanticField(default=None, min_length=1, max_length=16)
    calibration_method: str = PydanticField(default="minmax", pattern="^(minmax|percentile|entropy)$")
    thresholds: ThresholdsIn = PydanticField(default_factory=ThresholdsIn)
    ram_budget_mb: int = PydanticField(default=256, ge=1, le=1 << 20)
    max_calibration_rows: int = PydanticField(default=512, ge=1, le=100_000)
    max_evaluation_rows: int = PydanticField(default=5000, ge=1, le=1_000_000)
    latency_runs: int = PydanticField(default=100, ge=1, le=10_000)


class CompressedVariantPublic(BaseModel):
    position: int
    name: str = PydanticField(pattern=f"^{NAME_PATTERN}$")
    runtime: str
    precision: str
    sha256: str
    size_bytes: int
    arch: list[str]
    min_ram_mb: int


class CompressionJobPublic(BaseModel):
    id: int
    name: str
    version: int
    status: str
    stage: str
    progress: float
    error: str | None
    settings: dict[str, Any]
    calibration_sha256: str
    validation_sha256: str | None
    profile_sha256: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    variants: list[CompressedVariantPublic]
    report: dict[str, Any] | None
