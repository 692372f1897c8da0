"""Model registry: register uploaded model files as new versions; list and show them.

Version numbers are allocated per model name inside the inserting
transaction; the unique (model_id, version) constraint turns a race between
concurrent uploads into a retry instead of a duplicate.
"""

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from fleet_server.core.db import begin_write
from fleet_server.core.validation import describe_validation_errors
from fleet_server.errors import (
    InvalidUploadError,
    ModelNotFoundError,
    ModelVersionNotFoundError,
    VersionAllocationError,
)
from fleet_server.models.common import NAME_PATTERN, TensorSchema
from fleet_server.models.registry import (
    Lineage,
    ModelMetadata,
    ModelPublic,
    ModelRecord,
    ModelVersion,
    ModelVersionPublic,
)
from fleet_server.models.release import ReleaseRecord
from fleet_server.services.audit import SYSTEM_ACTOR, record_audit
from fleet_server.services.model_inspection import ModelInfo
from fleet_server.services.multipart_upload import StagedFile

logger = logging.getLogger(__name__)

VERSION_ALLOCATION_ATTEMPTS = 8
ARCH_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class UploadFields(BaseModel):
    """The text fields of ``POST /api/v1/models`` (besides ``file``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=128, pattern=f"^{NAME_PATTERN}$")
    metadata: ModelMetadata = Field(default_factory=ModelMetadata)
    precision: str = Field(default="fp32", max_length=64, pattern=f"^{NAME_PATTERN}$")
    arch: list[str] = Field(default_factory=list, max_length=32)
    min_ram_mb: int = Field(default=0, ge=0, le=1 << 30)

    @field_validator("metadata", mode="before")
    @classmethod
    def _parse_metadata_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value.strip():
                return {}
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"metadata is not valid JSON: {exc.msg}") from None
        return value

    @field_validator("arch", mode="before")
    @classmethod
    def _split_arch(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("arch")
    @classmethod
    def _valid_arch(cls, value: list[str]) -> list[str]:
        for arch in value:
            if not re.fullmatch(ARCH_PATTERN, arch):
                raise ValueError(f"invalid architecture {arch!r}")
        return list(dict.fromkeys(value))


def parse_upload_fields(fields: dict[str, str]) -> UploadFields:
    unknown = set(fields) - set(UploadFields.model_fields)
    if unknown:
        raise InvalidUploadError(f"unknown form fields: {sorted(unknown)}")
    if "name" not in fields:
        raise InvalidUploadError("the form field 'name' is required")
    data: dict[str, Any] = {key: value for key, value in fields.items() if value != "" or key == "name"}
    try:
        return UploadFields.model_validate(data)
    except ValidationError as exc:
        raise InvalidUploadError(describe_validation_errors(exc.errors())) from None


@dataclass(frozen=True)
class NewVersion:
    fields: UploadFields
    file: StagedFile
    info: ModelInfo
    reference_profile_sha256: str | None = None  # from calibration data uploaded with the model


def register_version(session: Session, new: NewVersion, actor: str = SYSTEM_ACTOR) -> ModelVersion:
    """Insert ``new`` as the next version of its model (creating the model on first upload)."""
    metadata = new.fields.metadata
    for attempt in range(1, VERSION_ALLOCATION_ATTEMPTS + 1):
        begin_write(session)
        try:
            model = session.exec(select(ModelRecord).where(ModelRecord.name == new.fields.name)).first()
            if model is None:
                model = ModelRecord(name=new.fields.name)
                session.add(model)
                session.flush()
            assert model.id is not None  # read, or inserted by the flush
            latest = session.exec(select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id)).one()
            row = ModelVersion(
                model_id=model.id,
                version=(latest or 0) + 1,
                sha256=new.file.sha256,
                size_bytes=new.file.size,
                format=new.info.format,
                runtime=new.info.runtime.value,
                precision=new.fields.precision,
                arch=new.fields.arch,
                min_ram_mb=new.fields.min_ram_mb,
                filename=new.file.filename,
                description=metadata.description,
                inputs=[spec.to_dict() for spec in new.info.inputs],
                outputs=[spec.to_dict() for spec in new.info.outputs],
                lineage=None if metadata.lineage is None else metadata.lineage.model_dump(),
                reference_profile_sha256=new.reference_profile_sha256,
            )
            session.add(row)
            session.flush()
            record_audit(session, actor, "model.uploaded", {"name": new.fields.name, "version": row.version,
                                                            "sha256": row.sha256, "bytes": row.size_bytes})
            session.commit()
        except IntegrityError:
            session.rollback()
            logger.info("server event=version_race model=%s attempt=%d", new.fields.name, attempt)
            continue
        logger.info("server event=model_version_registered model=%s version=%d sha256=%s bytes=%d format=%s",
                    new.fields.name, row.version, row.sha256, row.size_bytes, row.format)
        return row
    raise VersionAllocationError(f"could not allocate a version of {new.fields.name!r}; retry the upload")


def get_model(session: Session, name: str) -> ModelRecord:
    model = session.exec(select(ModelRecord).where(ModelRecord.name == name)).first()
    if model is None:
        raise ModelNotFoundError(f"model {name!r} not found")
    return model


def get_version(session: Session, name: str, version: int) -> ModelVersion:
    model = get_model(session, name)
    row = session.exec(
        select(ModelVersion).where(ModelVersion.model_id == model.id, ModelVersion.version == version)
    ).first()
    if row is None:
        raise ModelVersionNotFoundError(f"model {name!r} has no version {version}")
    return row


def list_models(session: Session) -> list[ModelPublic]:
    statement = (
        select(ModelRecord, func.max(ModelVersion.version), func.count(col(ModelVersion.id)))
        .join(ModelVersion, col(ModelVersion.model_id) == ModelRecord.id, isouter=True)
        .group_by(col(ModelRecord.id))
        .order_by(ModelRecord.name)
    )
    return [
        ModelPublic(name=model.name, created_at=model.created_at, latest_version=latest, version_count=count)
        for model, latest, count in session.exec(statement).all()
    ]


def model_public(session: Session, name: str) -> ModelPublic:
    model = get_model(session, name)
    latest, count = session.exec(
        select(func.max(ModelVersion.version), func.count(col(ModelVersion.id)))
        .where(ModelVersion.model_id == model.id)
    ).one()
    return ModelPublic(name=model.name, created_at=model.created_at, latest_version=latest, version_count=count)


def list_versions(session: Session, name: str) -> list[ModelVersionPublic]:
    model = get_model(session, name)
    rows = session.exec(
        select(ModelVersion).where(ModelVersion.model_id == model.id).order_by(col(ModelVersion.version))
    ).all()
    released = _released_ids(session, [row.id for row in rows if row.id is not None])
    return [version_public(name, row, row.id in released) for row in rows]


def version_detail(session: Session, name: str, version: int) -> ModelVersionPublic:
    row = get_version(session, name, version)
    return version_public(name, row, bool(_released_ids(session, [row.id])) if row.id is not None else False)


def _released_ids(session: Session, version_ids: list[int]) -> set[int]:
    if not version_ids:
        return set()
    statement = select(ReleaseRecord.model_version_id).where(col(ReleaseRecord.model_version_id).in_(version_ids))
    return set(session.exec(statement).all())


def version_public(name: str, row: ModelVersion, released: bool) -> ModelVersionPublic:
    return ModelVersionPublic(
        name=name,
        version=row.version,
        sha256=row.sha256,
        size_bytes=row.size_bytes,
        format=row.format,
        runtime=row.runtime,
        precision=row.precision,
        arch=list(row.arch),
        min_ram_mb=row.min_ram_mb,
        filename=row.filename,
        description=row.description,
        reference_profile_sha256=row.reference_profile_sha256,
        inputs=[TensorSchema.model_validate(spec) for spec in row.inputs],
        outputs=[TensorSchema.model_validate(spec) for spec in row.outputs],
        lineage=None if row.lineage is None else Lineage.model_validate(row.lineage),
        created_at=row.created_at,
        released=released,
    )
