"""Model registry: upload versions (streamed multipart, optionally with calibration data), list and show them."""

from fastapi import APIRouter, Request, status
from fastapi.concurrency import run_in_threadpool
from sqlmodel import Session

from fleet_server.api.deps import Caller, OperatorDep, RuntimeDep, SessionDep, ViewerDep
from fleet_server.api.errors import ERROR_RESPONSES
from fleet_server.errors import InvalidCalibrationError, InvalidUploadError, UploadTooLargeError
from fleet_server.models.common import ErrorDetail
from fleet_server.models.registry import ModelPublic, ModelVersionPublic
from fleet_server.runtime import ServerRuntime
from fleet_server.services import calibration_profile, registry
from fleet_server.services.model_inspection import inspect_model_file
from fleet_server.services.multipart_upload import StagedFile, receive_form

router = APIRouter(prefix="/models", tags=["models"], responses=ERROR_RESPONSES)

UPLOAD_FORM_SCHEMA = {
    "type": "object",
    "required": ["file", "name"],
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "The ONNX or TFLite model file."},
        "name": {"type": "string", "description": "Model name ([A-Za-z0-9][A-Za-z0-9._-]{0,127})."},
        "metadata": {
            "type": "string",
            "description": "JSON object: {description, lineage: {training_data_uri, training_data_sha256, "
            "training_code_ref, metrics: {name: number}, parent_version}}.",
        },
        "precision": {"type": "string", "default": "fp32"},
        "arch": {"type": "string", "description": "Comma-separated CPU architectures; empty: any."},
        "min_ram_mb": {"type": "integer", "default": 0},
        "calibration": {
            "type": "string", "format": "binary",
            "description": "Optional calibration data (.npz, .npy or CSV, as for compression): the server builds "
            "the reference profile for drift detection from it, and releases of this version carry it.",
        },
    },
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ModelVersionPublic,
    responses={413: {"model": ErrorDetail}},
    openapi_extra={"requestBody": {"required": True,
                                   "content": {"multipart/form-data": {"schema": UPLOAD_FORM_SCHEMA}}}},
)
async def upload_model(request: Request, runtime: RuntimeDep, session: SessionDep,
                       caller: OperatorDep) -> ModelVersionPublic:
    """Upload a model file as the next version of ``name`` (with ``calibration``: and its reference profile)."""
    max_bytes = runtime.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > 2 * max_bytes + 1024 * 1024:
        raise UploadTooLargeError(f"the upload is {declared} bytes, the cap is {max_bytes} bytes per file")
    staging = runtime.artifacts.new_staging_file()
    calibration_staging = runtime.artifacts.new_staging_file()
    try:
        form = await receive_form(request.stream(), request.headers.get("content-type", ""), file_field="file",
                                  staging_path=staging, max_file_bytes=max_bytes,
                                  extra_files={"calibration": calibration_staging})
        if form.file is None:
            raise InvalidUploadError("the form field 'file' (the model file) is required")
        return await run_in_threadpool(_register, runtime, session, form.fields, form.file,
                                       form.extra_files.get("calibration"), caller)
    finally:
        staging.unlink(missing_ok=True)
        calibration_staging.unlink(missing_ok=True)


def _register(runtime: ServerRuntime, session: Session, fields: dict[str, str], staged: StagedFile,
              calibration: StagedFile | None, caller: Caller) -> ModelVersionPublic:
    upload = registry.parse_upload_fields(fields)
    info = inspect_model_file(staged.path)
    profile_sha256 = None
    if calibration is not None:  # checked before anything is stored: bad data fails the whole upload
        if calibration.size == 0:
            raise InvalidCalibrationError("the calibration file is empty")
        profile = calibration_profile.build_reference_profile(staged.path, info, calibration.path)
        profile_sha256 = calibration_profile.store_profile(runtime.artifacts, profile)
    runtime.artifacts.commit(staged.path, staged.sha256)
    row = registry.register_version(session, registry.NewVersion(upload, staged, info, profile_sha256), caller.name)
    return registry.version_public(upload.name, row, released=False)


@router.get("", response_model=list[ModelPublic])
def list_models(session: SessionDep, _viewer: ViewerDep) -> list[ModelPublic]:
    return registry.list_models(session)


@router.get("/{name}", response_model=ModelPublic)
def show_model(name: str, session: SessionDep, _viewer: ViewerDep) -> ModelPublic:
    return registry.model_public(session, name)


@router.get("/{name}/versions", response_model=list[ModelVersionPublic])
def list_versions(name: str, session: SessionDep, _viewer: ViewerDep) -> list[ModelVersionPublic]:
    return registry.list_versions(session, name)


@router.get("/{name}/versions/{version}", response_model=ModelVersionPublic)
def show_version(name: str, version: int, session: SessionDep, _viewer: ViewerDep) -> ModelVersionPublic:
    return registry.version_detail(session, name, version)
