"""The web dashboard: server-rendered pages under ``/ui`` on the API's app.

``install_dashboard(app)`` adds the pages, the static assets (shipped in the
package: no CDN), a redirect from ``/`` and HTML error pages for ``/ui`` paths
(API paths keep their JSON errors).
"""

import inspect
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from fleet_server.api.errors import status_for
from fleet_server.core.validation import describe_validation_errors
from fleet_server.dashboard import (
    views_alerts,
    views_audit,
    views_deployments,
    views_fleet,
    views_login,
    views_registry,
    views_rollouts,
    views_tokens,
)
from fleet_server.dashboard.auth import LoginRequiredError
from fleet_server.dashboard.templating import STATIC_DIR, render
from fleet_server.errors import FleetServerError

UI_PREFIX = "/ui"
VIEW_MODULES = (views_login, views_fleet, views_registry, views_deployments, views_rollouts, views_alerts,
                views_audit, views_tokens)


def dashboard_router() -> APIRouter:
    router = APIRouter(prefix=UI_PREFIX, include_in_schema=False)
    for module in VIEW_MODULES:
        router.include_router(module.router)
    return router


ExceptionHandler = Callable[[Request, Any], Response | Awaitable[Response]]


async def _delegate(handler: ExceptionHandler, request: Request, exc: Exception) -> Response:
    """Answer with an API exception handler; Starlette types them as sync or async (the API's are async)."""
    response = handler(request, exc)
    return await response if inspect.isawaitable(response) else response


def _html_errors(app: FastAPI) -> None:
    """For /ui paths: a login redirect or an HTML error page; elsewhere the API's JSON handlers."""
    api_server_error = app.exception_handlers[FleetServerError]
    api_http_error = app.exception_handlers[StarletteHTTPException]
    api_validation_error = app.exception_handlers[RequestValidationError]

    async def server_error(request: Request, exc: Exception) -> Response:
        if not request.url.path.startswith(UI_PREFIX):
            return await _delegate(api_server_error, request, exc)
        if isinstance(exc, LoginRequiredError):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            if request.method != "GET" or request.url.path.endswith("/progress"):
                target = UI_PREFIX + "/"
            return RedirectResponse(f"{UI_PREFIX}/login?next={quote(target, safe='/')}", status_code=303)
        assert isinstance(exc, FleetServerError)
        return render(request, "error.html", None, status_code=status_for(exc), message=str(exc),
                      hint=exc.hint, status=status_for(exc))

    async def http_error(request: Request, exc: Exception) -> Response:
        if not request.url.path.startswith(UI_PREFIX) or request.url.path.startswith(f"{UI_PREFIX}/static"):
            return await _delegate(api_http_error, request, exc)
        assert isinstance(exc, StarletteHTTPException)
        message = "page not found" if exc.status_code == 404 else str(exc.detail)
        return render(request, "error.html", None, status_code=exc.status_code, message=message, hint="",
                      status=exc.status_code)

    async def validation_error(request: Request, exc: Exception) -> Response:
        if not request.url.path.startswith(UI_PREFIX):
            return await _delegate(api_validation_error, request, exc)
        assert isinstance(exc, RequestValidationError)
        return render(request, "error.html", None, status_code=422, status=422,
                      message=describe_validation_errors(exc.errors()), hint="check the form or the link")

    app.add_exception_handler(FleetServerError, server_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)


def install_dashboard(app: FastAPI) -> None:
    app.include_router(dashboard_router())
    app.mount(f"{UI_PREFIX}/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")
    _html_errors(app)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(f"{UI_PREFIX}/", status_code=307)
