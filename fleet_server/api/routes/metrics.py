"""``GET /metrics``: Prometheus text format (viewer role: give Prometheus a viewer token as
``authorization: {credentials: ...}`` in its scrape config)."""

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse
from sqlmodel import Session

from fleet_server.api.deps import RuntimeDep, ViewerDep
from fleet_server.core.types import utcnow
from fleet_server.runtime import ServerRuntime
from fleet_server.services import fleet_metrics
from fleet_server.services.prometheus import CONTENT_TYPE, render

router = APIRouter(tags=["metrics"])


def _exposition(runtime: ServerRuntime) -> str:
    telemetry = runtime.bridge.telemetry
    with Session(runtime.engine) as session:
        families = fleet_metrics.collect(
            session, utcnow(), dict(runtime.bridge.stats), dict(telemetry.stats) if telemetry else {},
            telemetry.pending if telemetry else 0, runtime.monitor.passes if runtime.monitor else 0)
    return render(families)


@router.get("/metrics", response_class=PlainTextResponse, responses={200: {"content": {CONTENT_TYPE: {}}}})
async def metrics(runtime: RuntimeDep, _viewer: ViewerDep) -> PlainTextResponse:
    return PlainTextResponse(await run_in_threadpool(_exposition, runtime), media_type=CONTENT_TYPE)
