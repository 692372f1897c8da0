"""Compression: upload calibration/validation data sets, start a compression
job for a model version (runs in the background), follow its progress and
read its report."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, status
from fastapi.concurrency import run_in_threadpool

from fleet_server.api.deps import OperatorDep, RuntimeDep, SessionDep, ViewerDep
from fleet_server.api.errors import ERROR_RESPONSES
from fleet_server.errors import CompressionInProgressError, InvalidUploadError
from fleet_server.models.common import ErrorDetail
from fleet_server.models.compression import CompressionJobPublic, CompressionRequest, DatasetPublic
from fleet_server.services import compression_jobs
from fleet_server.services.compression_worker import CompressionWorker
from fleet_server.services.multipart_upload import StagedFile, receive_form

router = APIRouter(tags=["compression"], responses=ERROR_RESPONSES)

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
DATASET_FORM_SCHEMA = {
    "type": "object",
    "required": ["file"],
    "properties": {"file": {"type": "string", "format": "binary",
                            "description": ".npz (arrays named after the model inputs, labels under 'labels'), "
                                           ".npy (one input) or CSV (numeric, optional 'label' column)."}},
}


def get_worker(request: Request) -> CompressionWorker:
    return request.app.state.compression


WorkerDep = Annotated[CompressionWorker, Depends(get_worker)]


@router.post("/datasets", status_code=status.HTTP_201_CREATED, response_model=DatasetPublic,
             responses={413: {"model": ErrorDetail}},
             openapi_extra={"requestBody": {"required": True,
                                            "content": {"multipart/form-data": {"schema": DATASET_FORM_SCHEMA}}}})
async def upload_dataset(request: Request, runtime: RuntimeDep, worker: WorkerDep,
                         _operator: OperatorDep) -> DatasetPublic:
    """Store a calibration or validation data set (content-addressed; compression jobs name it by sha256)."""
    max_bytes = runtime.settings.max_upload_bytes
    staging = worker.datasets.new_staging_file()
    try:
        form = await receive_form(request.stream(), request.headers.get("content-type", ""), file_field="file",
                                  staging_path=staging, max_file_bytes=max_bytes)
        if form.file is None:
            raise InvalidUploadError("the form field 'file' (the data set) is required")
        if form.fields:
            raise InvalidUploadError(f"unknown form fields: {sorted(form.fields)}")
        return await run_in_threadpool(_store_dataset, worker, form.file)
    finally:
        staging.unlink(missing_ok=True)


def _store_dataset(worker: CompressionWorker, staged: StagedFile) -> DatasetPublic:
    with open(staged.path, "rb") as handle:
        head = handle.read(4096)
    if head.startswith(ZIP_MAGIC):
        kind = "npz"
    elif head.startswith(NPY_MAGIC):
        kind = "npy"
    else:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.start < len(head) - 4:  # not just a multi-byte character cut at the end of the sample
                raise InvalidUploadError("the data set is neither .npz, .npy nor UTF-8 CSV text") from None
        if not head.strip():
            raise InvalidUploadError("the data set is empty")
        kind = "csv"
    worker.datasets.commit(staged.path, staged.sha256)
    return DatasetPublic(sha256=staged.sha256, size_bytes=staged.size, format=kind)


@router.post("/models/{name}/versions/{version}/compress", status_code=status.HTTP_202_ACCEPTED,
             response_model=CompressionJobPublic)
def compress_version(name: str, version: int, body: CompressionRequest, session: SessionDep, worker: WorkerDep,
                     caller: OperatorDep) -> CompressionJobPublic:
    """Queue a compression job; follow it at ``GET /compression-jobs/{id}``."""
    job = compression_jobs.submit(session, worker.datasets, name, version, body, caller.name, worker.owner)
    assert job.id is not None
    worker.enqueue(job.id)
    return compression_jobs.job_public(session, job)


@router.get("/models/{name}/versions/{version}/compress", response_model=list[CompressionJobPublic])
def list_compression_jobs(name: str, version: int, session: SessionDep,
                          _viewer: ViewerDep) -> list[CompressionJobPublic]:
    """The compression jobs of a model version, newest first (without their reports)."""
    return compression_jobs.list_jobs(session, name, version)


@router.get("/compression-jobs/{job_id}", response_model=CompressionJobPublic)
def show_compression_job(job_id: int, session: SessionDep, _viewer: ViewerDep) -> CompressionJobPublic:
    """Status, stage and progress (0..1) of a job; its variants and report once it succeeded."""
    return compression_jobs.job_public(session, compression_jobs.get_job(session, job_id))


@router.get("/compression-jobs/{job_id}/report", response_model=dict[str, Any])
def compression_report(job_id: int, session: SessionDep, _viewer: ViewerDep) -> dict[str, Any]:
    """The JSON compression report (every variant, passed or rejected, with its figures and reasons)."""
    job = compression_jobs.get_job(session, job_id)
    if job.report is None:
        raise CompressionInProgressError(f"compression job {job_id} is {job.status}: it has no report"
                                         + (f" ({job.error})" if job.error else ""))
    return job.report
