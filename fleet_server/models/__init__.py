"""SQLModel tables and API schemas. Importing this package registers every
table on ``SQLModel.metadata`` (what Alembic migrates and compares)."""

from fleet_server.models.alert import Alert, AlertDelivery
from fleet_server.models.audit import AuditEntry, AuditHead
from fleet_server.models.compression import CompressionJob, ModelVariant, ReleaseCompression
from fleet_server.models.deployment import Deployment, DeploymentEvent, DeploymentTarget
from fleet_server.models.device import Device, DeviceTag
from fleet_server.models.drift import DriftEvaluation
from fleet_server.models.pki import DeviceCertificate, DeviceRevocation, TrustedRoot
from fleet_server.models.registry import ModelRecord, ModelVersion
from fleet_server.models.release import ReleaseRecord
from fleet_server.models.replica import ServerReplica
from fleet_server.models.rollout import ControllerLease, Rollout, RolloutDevice, RolloutPhase
from fleet_server.models.telemetry import ReferenceProfileRecord, TelemetryWindowRecord
from fleet_server.models.tokens import ApiToken, BootstrapToken

__all__ = [
    "Deployment", "DeploymentEvent", "DeploymentTarget", "Device", "DeviceTag", "ModelRecord", "ModelVersion",
    "ReleaseRecord",
    "Alert", "AlertDelivery", "DriftEvaluation", "ReferenceProfileRecord", "TelemetryWindowRecord",
    "ControllerLease", "Rollout", "RolloutDevice", "RolloutPhase",
    "ServerReplica",
    "CompressionJob", "ModelVariant", "ReleaseCompression",
    "AuditEntry", "AuditHead", "ApiToken", "BootstrapToken", "DeviceCertificate", "DeviceRevocation", "TrustedRoot",
]
