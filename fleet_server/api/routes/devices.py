"""Devices: enrollment with a bootstrap token (and a CSR for the MQTT certificate),
certificate renewal by the device, revocation, list (filters, pages), show and tags."""

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from fleet_server.api.deps import AdminDep, DeviceDep, OperatorDep, PublicDep, RuntimeDep, SessionDep, ViewerDep
from fleet_server.api.errors import ERROR_RESPONSES
from fleet_server.models.common import TAG_PATTERN
from fleet_server.models.device import DeviceEnroll, DevicePublic, EnrollmentPublic
from fleet_server.models.device_tags import DeviceTagsUpdate
from fleet_server.models.pki import CertificatePublic, CertificateRequest, RevocationCreate, RevocationPublic
from fleet_server.services import certificates, device_query, device_tags, devices

router = APIRouter(prefix="/devices", tags=["devices"], responses=ERROR_RESPONSES)


@router.post("/enroll", status_code=status.HTTP_201_CREATED, response_model=EnrollmentPublic,
             responses={200: {"model": EnrollmentPublic, "description": "Re-enrolled: the credential was rotated."}})
def enroll(body: DeviceEnroll, request: Request, response: Response, runtime: RuntimeDep,
           session: SessionDep, _public: PublicDep) -> EnrollmentPublic:
    """Enroll a device (201) or re-enroll it (200, new credential). Authenticated by the bootstrap token
    in the body (single use), or by the development provisioning token when the server has one."""
    enrollment = devices.enroll_device(session, body, runtime.bootstrap_token, runtime.ca,
                                       timedelta(days=runtime.settings.device_cert_days))
    if not enrollment.created:
        response.status_code = status.HTTP_200_OK
    certificate = enrollment.certificate
    return EnrollmentPublic(
        device_id=enrollment.device.device_id,
        credential=enrollment.credential,
        mqtt_url=runtime.device_mqtt_url(request.url.hostname),
        root=runtime.keyring.root_envelope,
        artifact_base_url=runtime.settings.artifact_base_url,
        certificate=certificate.certificate if certificate else None,
        certificate_not_after=certificate.not_after if certificate else None,
        ca_certificate=runtime.ca.certificate_pem.decode("ascii") if runtime.ca is not None else None,
    )


@router.post("/me/certificate", response_model=CertificatePublic)
def renew_certificate(body: CertificateRequest, runtime: RuntimeDep, session: SessionDep,
                      device: DeviceDep) -> CertificatePublic:
    """A device renews its MQTT client certificate with a fresh CSR (CN = its device id)."""
    assert runtime.ca is not None
    return certificates.renew(session, runtime.ca, device.device_id, body.csr,
                              timedelta(days=runtime.settings.device_cert_days))


@router.post("/{device_id}/revoke", response_model=RevocationPublic)
def revoke_device(device_id: str, body: RevocationCreate, runtime: RuntimeDep, session: SessionDep,
                  caller: AdminDep) -> RevocationPublic:
    """Revoke a device: its credential is refused at once, its certificates join the broker's CRL."""
    assert runtime.ca is not None
    return certificates.revoke(session, runtime.ca, device_id, caller.name, body.reason)


@router.get("", response_model=list[DevicePublic],
            responses={200: {"headers": {"X-Total-Count": {"description": "Devices matching the filters",
                                                           "schema": {"type": "integer"}}}}})
def list_devices(session: SessionDep, _viewer: ViewerDep, response: Response,
                 tag: Annotated[str | None, Query(pattern=f"^{TAG_PATTERN}$")] = None,
                 online: bool | None = None,
                 state: Annotated[str | None, Query(max_length=32, description="Latest reported deployment "
                                                    "state; 'none': never reported")] = None,
                 model: Annotated[str | None, Query(max_length=160, description="Current model: NAME or "
                                                    "NAME:VERSION")] = None,
                 limit: Annotated[int, Query(ge=1, le=device_query.MAX_PAGE)] = device_query.MAX_PAGE,
                 offset: Annotated[int, Query(ge=0)] = 0) -> list[DevicePublic]:
    """Devices ordered by id, one page at a time; ``X-Total-Count`` has the number of matches."""
    page = device_query.query_devices(session, device_query.DeviceFilter(tag, online, state, model), limit, offset)
    response.headers["X-Total-Count"] = str(page.total)
    return page.devices


@router.patch("/{device_id}/tags", response_model=DevicePublic)
def change_tags(device_id: str, body: DeviceTagsUpdate, session: SessionDep, caller: OperatorDep) -> DevicePublic:
    """Add and remove tags (a tag in both lists is added)."""
    device_tags.update_tags(session, device_id, body.add, body.remove, caller.name)
    return devices.device_public(session, device_id)


@router.get("/{device_id}", response_model=DevicePublic)
def show_device(device_id: str, session: SessionDep, _viewer: ViewerDep) -> DevicePublic:
    return devices.device_public(session, device_id)
