"""Model registry: models and their immutable, monotonically numbered versions."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydanticField
from sqlalchemy import JSON, BigInteger, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from fleet_server.core.types import UTCDateTime, utcnow
from fleet_server.models.common import NAME_PATTERN, SHA256_PATTERN, TensorSchema


class Lineage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    training_data_uri: str | None = PydanticField(default=None, max_length=2048)
    training_data_sha256: str | None = PydanticField(default=None, pattern=f"^{SHA256_PATTERN}$")
    training_code_ref: str | None = PydanticField(default=None, max_length=1024)
    metrics: dict[str, float] = PydanticField(default_factory=dict, max_length=256)
    parent_version: int | None = PydanticField(default=None, ge=1)


class ModelMetadata(BaseModel):
    """The optional ``metadata`` form field of an upload (a JSON object)."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = PydanticField(default=None, max_length=4000)
    lineage: Lineage | None = None


class ModelRecord(SQLModel, table=True):
    __tablename__ = "model"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128, unique=True, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ModelVersionBase(SQLModel):
    version: int
    sha256: str = Field(max_length=64, index=True)
    size_bytes: int = Field(sa_type=BigInteger)
    format: str = Field(max_length=16)  # "onnx" or "tflite"
    runtime: str = Field(max_length=32)  # protocol Runtime value
    precision: str = Field(max_length=128)
    arch: list[str] = Field(default_factory=list, sa_type=JSON)
    min_ram_mb: int = 0
    filename: str | None = Field(default=None, max_length=255)
    description: str | None = Field(default=None, sa_type=Text)
    # built from calibration data uploaded with the version; releases name it unless compression supplies one
    reference_profile_sha256: str | None = Field(default=None, max_length=64)


class ModelVersion(ModelVersionBase, table=True):
    __tablename__ = "model_version"
    __table_args__ = (UniqueConstraint("model_id", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    model_id: int = Field(foreign_key="model.id", index=True)
    inputs: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    outputs: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    lineage: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ModelVersionPublic(ModelVersionBase):
    name: str = Field(schema_extra={"pattern": NAME_PATTERN})
    inputs: list[TensorSchema]
    outputs: list[TensorSchema]
    lineage: Lineage | None
    created_at: datetime
    released: bool


class ModelPublic(SQLModel):
    name: str
    created_at: datetime
    latest_version: int | None
    version_count: int
