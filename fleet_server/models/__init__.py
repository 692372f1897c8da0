"""SQLModel tables and API schemas. Importing this package registers every
table on ``SQLModel.metadata`` (what Alembic migrates and compares)."""

from fleet_server.models.deployment import Deployment, DeploymentEvent, DeploymentTarget
from fleet_server.models.device import Device, DeviceTag
from fleet_server.models.registry import ModelRecord, ModelVersion
from fleet_server.models.release import ReleaseRecord

__all__ = [
    "Deployment", "DeploymentEvent", "DeploymentTarget", "Device", "DeviceTag", "ModelRecord", "ModelVersion",
    "ReleaseRecord",
]
