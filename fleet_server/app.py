"""The FastAPI application: ``create_app(settings)`` wires the routers, the
error handlers and a lifespan that starts and stops the server runtime."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.concurrency import run_in_threadpool

from agent import __version__
from fleet_server.api.body_limit import BodyLimitMiddleware
from fleet_server.api.errors import install_error_handlers
from fleet_server.api.roles import install_role_docs
from fleet_server.api.routes import (
    alerts,
    artifacts,
    bootstrap_tokens,
    compression,
    deployments,
    devices,
    health,
    metrics,
    models,
    offline_releases,
    releases,
    telemetry,
    trust,
)
from fleet_server.api.routes import audit as audit_routes
from fleet_server.api.routes import rollouts as rollout_routes
from fleet_server.api.routes import tokens as api_tokens
from fleet_server.core.config import Settings
from fleet_server.dashboard import install_dashboard
from fleet_server.runtime import ServerRuntime, start_runtime
from fleet_server.services.compression_worker import start_compression_worker

API_PREFIX = "/api/v1"


def api_router() -> APIRouter:
    router = APIRouter(prefix=API_PREFIX)
    for module in (health, models, releases, artifacts, devices, deployments, api_tokens, bootstrap_tokens,
                   offline_releases, audit_routes, trust, compression, rollout_routes,
                   telemetry, alerts):
        router.include_router(module.router)
    return router


def create_app(settings: Settings | None = None, runtime: ServerRuntime | None = None) -> FastAPI:
    """The app; its lifespan starts a runtime from ``settings`` unless one is given (already started)."""
    settings = settings or (runtime.settings if runtime is not None else Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started = runtime if runtime is not None else await run_in_threadpool(start_runtime, settings)
        app.state.runtime = started
        app.state.compression = start_compression_worker(started)
        try:
            yield
        finally:
            await run_in_threadpool(app.state.compression.stop)
            await run_in_threadpool(started.stop)

    app = FastAPI(
        title="EdgeFleet fleet server",
        version=__version__,
        description="Model registry, signed releases, device enrollment and MQTT deployments.",
        lifespan=lifespan,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware)
    app.include_router(api_router())
    app.include_router(metrics.router)  # /metrics, where Prometheus looks
    install_role_docs(app)
    install_dashboard(app)
    return app
