"""Liveness for process supervisors and tests (no authentication)."""

from fastapi import APIRouter
from pydantic import BaseModel

from fleet_server.api.deps import PublicDep, RuntimeDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    mqtt_connected: bool


@router.get("/health", response_model=Health)
def health(runtime: RuntimeDep, _public: PublicDep) -> Health:
    return Health(status="ok", mqtt_connected=runtime.bridge.connected)
