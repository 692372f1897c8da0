"""How a compression job enters a release: the passing variants in preference
order, then the original as the float fallback; the reference profile's
sha256 in the signed document; and the job's report returned with the release.

``build_release`` (online signing and offline release requests) and
``store_release`` call in here, so both ways of signing carry the same variants.
"""

from dataclasses import replace
from typing import Any

from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import object_session
from sqlmodel import Session, col, select

from agent.protocol.metadata import ArtifactVariant, Compatibility, Release, Runtime
from fleet_server.errors import CompressionInProgressError
from fleet_server.models.compression import (
    JOB_SUCCEEDED,
    UNFINISHED,
    CompressionJob,
    ModelVariant,
    ReleaseCompression,
)
from fleet_server.models.registry import ModelVersion
from fleet_server.models.release import ReleaseRecord


def latest_job(session: OrmSession, row: ModelVersion) -> CompressionJob | None:
    """The newest succeeded job of ``row``; raises while one is still queued or running.

    ``session`` may be the plain SQLAlchemy session ``object_session`` returns (``scalars``, not ``exec``)."""
    running = session.scalars(select(CompressionJob).where(CompressionJob.model_version_id == row.id,
                                                           col(CompressionJob.status).in_(UNFINISHED))).first()
    if running is not None:
        raise CompressionInProgressError(f"compression job {running.id} of this model version is {running.status}; "
                                         "release it when the job has finished")
    return session.scalars(select(CompressionJob).where(CompressionJob.model_version_id == row.id,
                                                        CompressionJob.status == JOB_SUCCEEDED)
                           .order_by(col(CompressionJob.id).desc())).first()


def release_variants(row: ModelVersion, original: ArtifactVariant) -> tuple[tuple[ArtifactVariant, ...], str | None]:
    """The variants of a release of ``row`` and its reference profile sha256 (``original`` alone if uncompressed)."""
    session = object_session(row)
    job = None if session is None else latest_job(session, row)
    if job is None or session is None:
        return (original,), None
    stored = session.scalars(select(ModelVariant).where(ModelVariant.job_id == job.id)
                             .order_by(col(ModelVariant.position))).all()
    variants = tuple(
        ArtifactVariant(name=v.name, path=v.path, runtime=Runtime(v.runtime), precision=v.precision, sha256=v.sha256,
                        length=v.size_bytes, compatibility=Compatibility(tuple(v.arch), v.min_ram_mb))
        for v in stored
    )
    fallback = replace(original, name=f"{original.name.split('-')[0]}-original")
    return (*variants, fallback), job.profile_sha256


def link_release(session: Session, record: ReleaseRecord, release: Release) -> None:
    """Remember which job a just-stored release was built from (matched on its variants and profile)."""
    if release.reference_profile_sha256 is None or record.id is None:
        return
    signed = {(variant.name, variant.sha256) for variant in release.variants}
    candidates = session.exec(select(CompressionJob).where(
        CompressionJob.model_version_id == record.model_version_id, CompressionJob.status == JOB_SUCCEEDED,
        CompressionJob.profile_sha256 == release.reference_profile_sha256).order_by(col(CompressionJob.id).desc()))
    for job in candidates.all():
        variants = session.exec(select(ModelVariant).where(ModelVariant.job_id == job.id)).all()
        if {(v.name, v.sha256) for v in variants} <= signed:
            assert job.id is not None
            session.add(ReleaseCompression(release_id=record.id, job_id=job.id))
            return


def release_report(record: ReleaseRecord) -> dict[str, Any] | None:
    """The compression report of the job a release was built from, with the release's variant order."""
    session = object_session(record)
    if session is None or record.id is None:
        return None
    link = session.get(ReleaseCompression, record.id)
    if link is None:
        return None
    job = session.get(CompressionJob, link.job_id)
    if job is None or job.report is None:
        return None
    return {"job_id": job.id, **job.report}
