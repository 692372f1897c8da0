"""Device certificates issued by the fleet CA, device revocations, and the
history of trusted roots (what devices are sent to rotate their root)."""

from datetime import datetime

from pydantic import BaseModel
from pydantic import Field as PydanticField
from sqlalchemy import Text
from sqlmodel import Field, SQLModel

from fleet_server.core.types import UTCDateTime, utcnow
from fleet_server.models import common  # noqa: F401  (constraint naming convention)

MAX_CSR_BYTES = 16 * 1024


class DeviceCertificate(SQLModel, table=True):
    __tablename__ = "device_certificate"

    serial: str = Field(primary_key=True, max_length=40)  # hex
    device_id: str = Field(foreign_key="device.device_id", index=True, max_length=63, ondelete="CASCADE")
    fingerprint_sha256: str = Field(max_length=64)
    not_before: datetime = Field(sa_type=UTCDateTime)
    not_after: datetime = Field(sa_type=UTCDateTime, index=True)
    issued_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class DeviceRevocation(SQLModel, table=True):
    __tablename__ = "device_revocation"

    device_id: str = Field(foreign_key="device.device_id", primary_key=True, max_length=63, ondelete="CASCADE")
    revoked_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    revoked_by: str = Field(max_length=128)
    reason: str = Field(default="", max_length=500)


class TrustedRoot(SQLModel, table=True):
    __tablename__ = "trusted_root"

    version: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    sha256: str = Field(max_length=64, unique=True)
    envelope: str = Field(sa_type=Text)  # canonical JSON of the signed root
    recorded_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class CertificateRequest(BaseModel):
    csr: str = PydanticField(min_length=1, max_length=MAX_CSR_BYTES,
                             description="PEM certificate signing request; its CN must be the device id")


class CertificatePublic(BaseModel):
    certificate: str  # PEM, the device's client certificate
    ca_certificate: str  # PEM, the fleet CA (verifies the broker and, over https, the server)
    serial: str
    not_after: datetime


class RevocationCreate(BaseModel):
    reason: str = PydanticField(default="", max_length=500)


class RevocationPublic(BaseModel):
    device_id: str
    revoked_at: datetime
    revoked_by: str
    reason: str
    certificates_revoked: int
