"""Trust anchors: the fleet CA certificate and CRL (for brokers), the history of
root metadata (devices walk it to rotate their root), and reloading the keys
after ``edgefleet keys rotate-root``."""

from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel

from fleet_server.api.deps import AdminDep, CallerDep, PublicDep, RuntimeDep, SessionDep
from fleet_server.api.errors import ERROR_RESPONSES
from fleet_server.keyring import load_keyring
from fleet_server.services import certificates, root_history

router = APIRouter(tags=["trust"], responses=ERROR_RESPONSES)
PEM: dict[int | str, dict[str, Any]] = {200: {"content": {"application/x-pem-file": {}}}}


class CallerPublic(BaseModel):
    actor: str  # what the audit trail records for this caller
    role: str | None  # operator role; None for a device
    device_id: str | None


class KeysReloaded(BaseModel):
    root_version: int
    new_root_versions: list[int]


@router.get("/whoami", response_model=CallerPublic)
def whoami(caller: CallerDep) -> CallerPublic:
    """Who this token is (``edgefleet login`` checks a token with it)."""
    return CallerPublic(actor=caller.name, role=caller.role.value if caller.role else None,
                        device_id=caller.device.device_id if caller.device else None)


@router.get("/pki/ca.pem", response_class=Response, responses=PEM)
def ca_certificate(runtime: RuntimeDep, _public: PublicDep) -> Response:
    """The fleet CA certificate: brokers verify device certificates with it, devices the broker."""
    assert runtime.ca is not None
    return Response(runtime.ca.certificate_pem, media_type="application/x-pem-file")


@router.get("/pki/crl.pem", response_class=Response, responses=PEM)
def revocation_list(runtime: RuntimeDep, session: SessionDep, _public: PublicDep) -> Response:
    """The current CRL (revoked device certificates), for a broker on another host."""
    assert runtime.ca is not None
    return Response(certificates.crl_pem(session, runtime.ca), media_type="application/x-pem-file")


@router.get("/root", response_model=dict[str, Any])
def current_root(runtime: RuntimeDep, _public: PublicDep) -> dict[str, Any]:
    """The signed root the server uses now."""
    return runtime.keyring.root_envelope


@router.get("/root/{version}", response_model=dict[str, Any])
def root_version(version: int, session: SessionDep, _public: PublicDep) -> dict[str, Any]:
    """Signed root ``version``: a device trusting version N fetches N+1, N+2, ... until 404."""
    return root_history.get(session, version)


@router.post("/keys/reload", response_model=KeysReloaded)
def reload_keys(runtime: RuntimeDep, session: SessionDep, caller: AdminDep) -> KeysReloaded:
    """Re-read the key directory (after a root rotation): record new roots, sign with the new keys from now on."""
    keyring = load_keyring(runtime.settings.resolved_key_dir)
    added = root_history.record(session, root_history.keyring_roots(keyring), caller.name)
    runtime.keyring = keyring
    if runtime.rollouts is not None:
        runtime.rollouts.keyring = keyring  # the rollout controller signs its directives with the new keys too
    return KeysReloaded(root_version=keyring.root.version, new_root_versions=added)
