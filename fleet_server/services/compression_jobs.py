"""Compression jobs in the database: submit (checked up front), read, and the
bookkeeping the worker does (progress, success with the stored variants,
failure). A job's variants become visible in one transaction together with
its ``succeeded`` status, so a failed or interrupted job leaves nothing a
release could pick up.
"""

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from compression.errors import CompressionError
from compression.settings import CompressionSettings, GateThresholds
from compression.variants import missing_toolchain, variant_names
from fleet_server.core.db import begin_write, write_session
from fleet_server.core.types import utcnow
from fleet_server.errors import (
    CompressionInProgressError,
    CompressionJobNotFoundError,
    DatasetNotFoundError,
    InvalidCompressionRequestError,
    ReleaseExistsError,
)
from fleet_server.models.compression import (
    JOB_FAILED,
    JOB_QUEUED,
    JOB_RUNNING,
    JOB_SUCCEEDED,
    UNFINISHED,
    CompressedVariantPublic,
    CompressionJob,
    CompressionJobPublic,
    CompressionRequest,
    ModelVariant,
)
from fleet_server.models.registry import ModelRecord, ModelVersion
from fleet_server.models.release import ReleaseRecord
from fleet_server.services import registry
from fleet_server.services.artifact_store import ArtifactStore
from fleet_server.services.audit import record_audit

logger = logging.getLogger(__name__)

STALE_AFTER = timedelta(seconds=120)  # no heartbeat for this long: the server running the job is gone


def settings_from_request(request: CompressionRequest) -> CompressionSettings:
    try:
        return CompressionSettings(
            variants=None if request.variants is None else tuple(dict.fromkeys(request.variants)),
            calibration_method=request.calibration_method,
            max_calibration_rows=request.max_calibration_rows,
            max_evaluation_rows=request.max_evaluation_rows,
            latency_runs=request.latency_runs,
            latency_warmup=min(10, request.latency_runs),
            ram_budget_mb=request.ram_budget_mb,
            thresholds=GateThresholds(**request.thresholds.model_dump()),
        )
    except CompressionError as exc:
        raise InvalidCompressionRequestError(str(exc)) from None


def submit(session: Session, datasets: ArtifactStore, name: str, version: int, request: CompressionRequest,
           actor: str, owner: str) -> CompressionJob:
    """Check everything that can be checked without running, then queue the job."""
    settings = settings_from_request(request)
    for what, sha256 in (("calibration", request.calibration_sha256), ("validation", request.validation_sha256)):
        if sha256 is not None and datasets.find(sha256) is None:
            raise DatasetNotFoundError(f"no uploaded {what} data set has sha256 {sha256}")
    begin_write(session)
    row = registry.get_version(session, name, version)
    missing = missing_toolchain(row.format)
    if missing:
        raise InvalidCompressionRequestError(f"this server cannot compress {row.format} models: {', '.join(missing)} "
                                             "not installed", hint="pip install 'edgefleet[compress]' on the server")
    if settings.variants is not None:
        allowed = variant_names(row.format)
        wrong = [item for item in settings.variants if item not in allowed]
        if wrong:
            raise InvalidCompressionRequestError(f"variants {wrong} do not apply to a {row.format} model; "
                                                 f"choose from {', '.join(allowed)}")
    if session.exec(select(ReleaseRecord.id).where(ReleaseRecord.model_version_id == row.id)).first() is not None:
        raise ReleaseExistsError(f"{name} v{version} is already released; compress a new version instead")
    reap_stale(session, row.id)
    running = session.exec(select(CompressionJob).where(CompressionJob.model_version_id == row.id,
                                                        col(CompressionJob.status).in_(UNFINISHED))).first()
    if running is not None:
        raise CompressionInProgressError(f"compression job {running.id} of {name} v{version} is {running.status}")
    assert row.id is not None
    job = CompressionJob(model_version_id=row.id, settings=settings.to_dict(),
                         calibration_sha256=request.calibration_sha256, validation_sha256=request.validation_sha256,
                         created_by=actor[:128], owner=owner)
    session.add(job)
    session.flush()
    record_audit(session, actor, "compression.queued", {"name": name, "version": version, "job": job.id,
                                                        "variants": list(settings.variants or ()),
                                                        "calibration_sha256": request.calibration_sha256})
    session.commit()
    logger.info("server event=compression_queued job=%d model=%s version=%d variants=%s", job.id, name, version,
                ",".join(settings.variants or ("all",)))
    return job


def reap_stale(session: Session, model_version_id: int | None = None) -> int:
    """Fail unfinished jobs whose worker stopped sending heartbeats (in the caller's write transaction)."""
    statement = select(CompressionJob).where(col(CompressionJob.status).in_(UNFINISHED),
                                             CompressionJob.heartbeat_at < utcnow() - STALE_AFTER)
    if model_version_id is not None:
        statement = statement.where(CompressionJob.model_version_id == model_version_id)
    jobs = session.exec(statement).all()
    for job in jobs:
        _fail(job, "the server running this job stopped before it finished; submit it again")
        session.add(job)
    return len(jobs)


def _fail(job: CompressionJob, error: str) -> None:
    job.status, job.error, job.finished_at, job.stage = JOB_FAILED, error, utcnow(), "failed"


@dataclass(frozen=True)
class StoredVariant:
    name: str
    runtime: str
    precision: str
    path: str
    sha256: str
    size_bytes: int
    arch: tuple[str, ...]
    min_ram_mb: int


def mark_running(engine: Engine, job_id: int, owner: str) -> CompressionJob | None:
    """Claim a queued job for ``owner``; None if it is no longer queued."""
    with write_session(engine) as session:
        job = session.get(CompressionJob, job_id)
        if job is None or job.status != JOB_QUEUED:
            return None
        job.status, job.owner, job.started_at, job.heartbeat_at = JOB_RUNNING, owner, utcnow(), utcnow()
        job.stage = "starting"
        session.add(job)
        return job


def record_progress(engine: Engine, job_id: int, stage: str, progress: float) -> None:
    with write_session(engine) as session:
        job = session.get(CompressionJob, job_id)
        if job is not None and job.status == JOB_RUNNING:
            job.stage, job.progress, job.heartbeat_at = stage[:128], round(progress, 4), utcnow()
            session.add(job)


def heartbeat(engine: Engine, owner: str, job_ids: list[int]) -> None:
    if not job_ids:
        return
    with write_session(engine) as session:
        for job in session.exec(select(CompressionJob).where(col(CompressionJob.id).in_(job_ids),
                                                             col(CompressionJob.status).in_(UNFINISHED))).all():
            job.heartbeat_at = utcnow()
            session.add(job)


def record_success(engine: Engine, job_id: int, variants: list[StoredVariant], profile_sha256: str,
                   report: dict[str, Any]) -> None:
    """The variants, the report and ``succeeded`` in one transaction (dropped if the job was failed meanwhile)."""
    with write_session(engine) as session:
        job = session.get(CompressionJob, job_id)
        if job is None or job.id is None or job.status != JOB_RUNNING:
            logger.warning("server event=compression_result_dropped job=%d reason=no_longer_running", job_id)
            return
        for position, variant in enumerate(variants):
            session.add(ModelVariant(job_id=job.id, model_version_id=job.model_version_id, position=position,
                                     name=variant.name, runtime=variant.runtime, precision=variant.precision,
                                     path=variant.path, sha256=variant.sha256, size_bytes=variant.size_bytes,
                                     arch=list(variant.arch), min_ram_mb=variant.min_ram_mb))
        job.status, job.stage, job.progress, job.finished_at = JOB_SUCCEEDED, "done", 1.0, utcnow()
        job.report, job.profile_sha256, job.heartbeat_at = report, profile_sha256, utcnow()
        session.add(job)


def record_failure(engine: Engine, job_id: int, error: str) -> None:
    with write_session(engine) as session:
        job = session.get(CompressionJob, job_id)
        if job is not None and job.status in UNFINISHED:
            _fail(job, error[:4000])
            session.add(job)


def fail_unfinished(engine: Engine, owner: str, error: str) -> None:
    with write_session(engine) as session:
        for job in session.exec(select(CompressionJob).where(CompressionJob.owner == owner,
                                                             col(CompressionJob.status).in_(UNFINISHED))).all():
            _fail(job, error)
            session.add(job)


# -- reading -----------------------------------------------------------------------------------------------


def get_job(session: Session, job_id: int) -> CompressionJob:
    job = session.get(CompressionJob, job_id)
    if job is None:
        raise CompressionJobNotFoundError(f"compression job {job_id} not found")
    return job


def list_jobs(session: Session, name: str, version: int) -> list[CompressionJobPublic]:
    row = registry.get_version(session, name, version)
    jobs = session.exec(select(CompressionJob).where(CompressionJob.model_version_id == row.id)
                        .order_by(col(CompressionJob.id).desc())).all()
    return [job_public(session, job, include_report=False) for job in jobs]


def job_variants(session: Session, job_id: int) -> list[ModelVariant]:
    return list(session.exec(select(ModelVariant).where(ModelVariant.job_id == job_id)
                             .order_by(col(ModelVariant.position))).all())


def job_public(session: Session, job: CompressionJob, include_report: bool = True) -> CompressionJobPublic:
    version_row = session.get(ModelVersion, job.model_version_id)
    assert version_row is not None and job.id is not None
    model = session.get(ModelRecord, version_row.model_id)
    assert model is not None
    stale = job.status in UNFINISHED and job.heartbeat_at < utcnow() - STALE_AFTER
    return CompressionJobPublic(
        id=job.id, name=model.name, version=version_row.version,
        status=JOB_FAILED if stale else job.status,
        stage=job.stage, progress=job.progress,
        error="the server running this job stopped before it finished" if stale else job.error,
        settings=job.settings, calibration_sha256=job.calibration_sha256, validation_sha256=job.validation_sha256,
        profile_sha256=job.profile_sha256, created_at=job.created_at, started_at=job.started_at,
        finished_at=job.finished_at,
        variants=[CompressedVariantPublic(position=v.position, name=v.name, runtime=v.runtime, precision=v.precision,
                                          sha256=v.sha256, size_bytes=v.size_bytes, arch=list(v.arch),
                                          min_ram_mb=v.min_ram_mb) for v in job_variants(session, job.id)],
        report=job.report if include_report else None,
    )
