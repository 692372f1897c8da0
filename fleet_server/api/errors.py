"""Map errors to JSON responses ``{"detail": "..."}``: server errors to their
4xx status, request validation to one readable 422, anything unexpected to a
logged 500 without internals."""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from fleet_server.core.validation import describe_validation_errors
from fleet_server.errors import (
    AuthenticationError,
    ConflictError,
    FleetServerError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RangeNotSatisfiableError,
    UploadTooLargeError,
)
from fleet_server.models.common import ErrorDetail

logger = logging.getLogger(__name__)

STATUS_BY_ERROR: tuple[tuple[type[FleetServerError], int], ...] = (
    (AuthenticationError, 401),
    (PermissionDeniedError, 403),
    (NotFoundError, 404),
    (ConflictError, 409),
    (UploadTooLargeError, 413),
    (RangeNotSatisfiableError, 416),
    (InvalidRequestError, 422),
)

ERROR_RESPONSES: dict[int | str, dict] = {
    status: {"model": ErrorDetail} for status in (401, 403, 404, 409, 422)
}


def status_for(exc: FleetServerError) -> int:
    for error_type, status in STATUS_BY_ERROR:
        if isinstance(exc, error_type):
            return status
    return 500


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _fleet_server_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FleetServerError)
    status = status_for(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, AuthenticationError):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, RangeNotSatisfiableError):
        headers["Content-Range"] = f"bytes */{exc.size}"
    if status >= 500:
        logger.error("server event=request_failed method=%s path=%s error=%s: %s", request.method,
                     request.url.path, type(exc).__name__, exc)
    elif status in (401, 403):
        logger.info("server event=request_refused method=%s path=%s status=%d", request.method,
                    request.url.path, status)
    return _error(status, str(exc), headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return _error(422, describe_validation_errors(exc.errors()))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return _error(exc.status_code, str(exc.detail), dict(exc.headers or {}))


async def _out_of_range(request: Request, exc: Exception) -> JSONResponse:
    """A number the database cannot hold (e.g. an id past 2**63): the request is invalid, not the server."""
    logger.info("server event=request_refused method=%s path=%s status=422 reason=out_of_range", request.method,
                request.url.path)
    return _error(422, "a value in the request is out of range")


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("server event=request_crashed method=%s path=%s error=%s", request.method,
                     request.url.path, type(exc).__name__)
    return _error(500, "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(FleetServerError, _fleet_server_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OverflowError, _out_of_range)  # SQLite: integer too large to bind
    app.add_exception_handler(DataError, _out_of_range)  # PostgreSQL: value out of range for its column
    app.add_exception_handler(Exception, _unexpected_error)
