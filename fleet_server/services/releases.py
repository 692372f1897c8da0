"""Signed releases: turn a model version into a protocol ``Release`` signed with
the release key, and store the exact canonical envelope bytes and their hash.
"""

import logging
from datetime import timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from agent.protocol import ArtifactVariant, Compatibility, Release, Role, Runtime, TensorSpec, canonical_bytes
from agent.protocol.canonical import parse_json
from agent.protocol.envelope import Envelope
from fleet_server.core.db import begin_write
from fleet_server.core.types import utcnow, whole_seconds
from fleet_server.errors import ReleaseExistsError, ReleaseKeyOfflineError, ReleaseNotFoundError
from fleet_server.keyring import Keyring
from fleet_server.models.registry import ModelVersion
from fleet_server.models.release import ReleasePublic, ReleaseRecord, ReleaseSummary, VariantPublic
from fleet_server.services import compression_release, registry
from fleet_server.services.audit import SYSTEM_ACTOR, record_audit

logger = logging.getLogger(__name__)

MAX_ENVELOPE_BYTES = 1024 * 1024
_FILE_SUFFIX = {Runtime.ONNXRUNTIME: "onnx", Runtime.TFLITE: "tflite", Runtime.AGENT: "whl"}


def build_release(name: str, row: ModelVersion, ttl_days: int) -> Release:
    runtime = Runtime(row.runtime)
    suffix = _FILE_SUFFIX[runtime]
    variant = ArtifactVariant(
        name=f"{suffix}-{row.precision}",
        path=f"model.{suffix}",
        runtime=runtime,
        precision=row.precision,
        sha256=row.sha256,
        length=row.size_bytes,
        compatibility=Compatibility(tuple(row.arch), row.min_ram_mb),
    )
    variants, profile_sha256 = compression_release.release_variants(row, variant)
    created = whole_seconds(utcnow())
    return Release(
        name=name,
        version=row.version,
        variants=variants,
        inputs=tuple(TensorSpec(spec["name"], spec["dtype"], tuple(spec["shape"])) for spec in row.inputs),
        outputs=tuple(TensorSpec(spec["name"], spec["dtype"], tuple(spec["shape"])) for spec in row.outputs),
        created=created,
        expires=created + timedelta(days=ttl_days),
        reference_profile_sha256=profile_sha256 or row.reference_profile_sha256,  # compression's, else calibration's
    )


def create_release(session: Session, keyring: Keyring, name: str, version: int, ttl_days: int,
                   actor: str = SYSTEM_ACTOR) -> ReleaseRecord:
    begin_write(session)
    row = registry.get_version(session, name, version)
    if keyring.release_key is None:
        raise ReleaseKeyOfflineError(
            "the release key is offline (no release.pem in the key directory): sign releases where the key is kept"
        )
    existing = session.exec(select(ReleaseRecord).where(ReleaseRecord.model_version_id == row.id)).first()
    if existing is not None:
        raise ReleaseExistsError(f"{name} v{version} is already released (sha256 {existing.sha256})")
    release = build_release(name, row, ttl_days)
    envelope = keyring.sign(Role.RELEASE, release.to_dict())
    return store_release(session, row, release, envelope, actor, signed_by="server")


def store_release(session: Session, row: ModelVersion, release: Release, envelope: Envelope, actor: str,
                  signed_by: str) -> ReleaseRecord:
    """Store a verified signed release of ``row`` (in the caller's write transaction) and commit."""
    name, version = release.name, release.version
    assert row.id is not None
    record = ReleaseRecord(
        model_version_id=row.id,
        name=name,
        version=version,
        envelope=canonical_bytes(envelope.to_dict()).decode("utf-8"),
        sha256=envelope.sha256(),
        created_at=release.created,
        expires_at=release.expires,
    )
    session.add(record)
    try:
        session.flush()
        compression_release.link_release(session, record, release)
        record_audit(session, actor, "release.signed", {"name": name, "version": version, "sha256": record.sha256,
                                                        "signed_by": signed_by})
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ReleaseExistsError(f"{name} v{version} is already released") from None
    logger.info("server event=release_signed name=%s version=%d sha256=%s expires=%s",
                name, version, record.sha256, record.expires_at.isoformat())
    return record


def get_release(session: Session, name: str, version: int) -> ReleaseRecord:
    record = session.exec(
        select(ReleaseRecord).where(ReleaseRecord.name == name, ReleaseRecord.version == version)
    ).first()
    if record is None:
        raise ReleaseNotFoundError(f"release {name} v{version} not found")
    return record


def list_releases(session: Session, name: str | None = None) -> list[ReleaseSummary]:
    statement = select(ReleaseRecord).order_by(col(ReleaseRecord.name), col(ReleaseRecord.version))
    if name is not None:
        statement = statement.where(ReleaseRecord.name == name)
    return [release_summary(record) for record in session.exec(statement).all()]


def envelope_dict(record: ReleaseRecord) -> dict:
    return parse_json(record.envelope, MAX_ENVELOPE_BYTES)


def release_summary(record: ReleaseRecord) -> ReleaseSummary:
    return ReleaseSummary(**_summary_fields(record))


def release_public(record: ReleaseRecord) -> ReleasePublic:
    return ReleasePublic(**_summary_fields(record), envelope=envelope_dict(record),
                         compression=compression_release.release_report(record))


def _summary_fields(record: ReleaseRecord) -> dict:
    release = Release.from_dict(Envelope.from_dict(envelope_dict(record), "release").signed)
    variants = [
        VariantPublic(
            name=variant.name,
            runtime=variant.runtime.value,
            precision=variant.precision,
            sha256=variant.sha256,
            length=variant.length,
            arch=list(variant.compatibility.arch),
            min_ram_mb=variant.compatibility.min_ram_mb,
        )
        for variant in release.variants
    ]
    return {
        "name": record.name,
        "version": record.version,
        "sha256": record.sha256,
        "created_at": record.created_at,
        "expires_at": record.expires_at,
        "variants": variants,
    }
