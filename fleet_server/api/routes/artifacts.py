"""Content-addressed artifact downloads with Range (resumable), ETag and HEAD.

The bytes go out through ``FileRangeResponse`` (large reads off the event loop,
or zero-copy where the ASGI server offers it); for the highest rates put nginx
in front of the store (docs/deployment.md).
"""

import logging
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Request, Response, status
from fastapi import Path as PathParam

from fleet_server.api.deps import ArtifactReaderDep, RuntimeDep, SessionDep
from fleet_server.api.errors import ERROR_RESPONSES
from fleet_server.api.file_range_response import FileRangeResponse
from fleet_server.errors import ArtifactNotFoundError
from fleet_server.models.common import SHA256_PATTERN, ErrorDetail
from fleet_server.services.byte_ranges import ByteRange, parse_range

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/artifacts", tags=["artifacts"], responses=ERROR_RESPONSES)

Sha256Param = Annotated[str, PathParam(pattern=f"^{SHA256_PATTERN}$", description="sha256 of the content, hex")]
DOWNLOAD_RESPONSES: dict[int | str, dict] = {
    200: {"content": {"application/octet-stream": {}}, "description": "The whole artifact."},
    206: {"content": {"application/octet-stream": {}}, "description": "The requested byte range."},
    304: {"description": "If-None-Match matched the ETag."},
    416: {"model": ErrorDetail, "description": "The range does not overlap the artifact."},
}


def _locate(runtime: RuntimeDep, sha256: str) -> tuple[Path, int]:
    path = runtime.artifacts.find(sha256)
    if path is None:
        raise ArtifactNotFoundError(f"no artifact with sha256 {sha256}")
    return path, path.stat().st_size


def _plan(request: Request, sha256: str, size: int) -> tuple[int, ByteRange | None, dict[str, str]]:
    """Status, selected range and headers shared by GET and HEAD."""
    etag = f'"{sha256}"'
    headers = {"ETag": etag, "Accept-Ranges": "bytes", "Cache-Control": "private, max-age=31536000, immutable"}
    if_none_match = request.headers.get("if-none-match")
    if if_none_match and (if_none_match.strip() == "*" or etag in [tag.strip() for tag in if_none_match.split(",")]):
        return status.HTTP_304_NOT_MODIFIED, None, headers
    if_range = request.headers.get("if-range")
    byte_range = None if if_range is not None and if_range.strip() != etag else parse_range(
        request.headers.get("range"), size)
    if byte_range is None:
        headers["Content-Length"] = str(size)
        return status.HTTP_200_OK, None, headers
    headers["Content-Length"] = str(byte_range.length)
    headers["Content-Range"] = byte_range.content_range(size)
    return status.HTTP_206_PARTIAL_CONTENT, byte_range, headers


@router.get("/{sha256}", response_class=FileRangeResponse, status_code=200, responses=DOWNLOAD_RESPONSES)
async def download_artifact(sha256: Sha256Param, request: Request, runtime: RuntimeDep, session: SessionDep,
                            caller: ArtifactReaderDep) -> Response:
    session.close()  # the caller is known: give the connection back before a transfer that may take minutes
    path, size = _locate(runtime, sha256)
    status_code, byte_range, headers = _plan(request, sha256, size)
    if status_code == status.HTTP_304_NOT_MODIFIED:
        return Response(status_code=status_code, headers=headers)
    start, length = (0, size) if byte_range is None else (byte_range.start, byte_range.length)
    logger.info("server event=artifact_download sha256=%s caller=%s start=%d bytes=%d", sha256, caller.name,
                start, length)
    return FileRangeResponse(path, start, length, status_code, headers)


@router.head("/{sha256}", responses=DOWNLOAD_RESPONSES)
def artifact_headers(sha256: Sha256Param, request: Request, runtime: RuntimeDep,
                     _caller: ArtifactReaderDep) -> Response:
    _path, size = _locate(runtime, sha256)
    status_code, _range, headers = _plan(request, sha256, size)
    return Response(status_code=status_code, headers=headers, media_type="application/octet-stream")
