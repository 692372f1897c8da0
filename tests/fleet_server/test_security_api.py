"""API tokens, bootstrap tokens, device certificates, revocation, offline release
signing, request limits and the audit trail, through the HTTP API."""

import json
from datetime import timedelta
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlmodel import Session, select

from agent.protocol.canonical import canonical_bytes
from agent.protocol.messages import StatusMessage
from fleet_server.core.types import utcnow
from fleet_server.models.tokens import ApiToken, BootstrapToken
from fleet_server.services import ingest, offline_release
from fleet_server.services.ingest import IngestOutcome
from tests.fleet_server.conftest import Api
from tests.fleet_server.security_helpers import bearer, bootstrap_token, issue_token, make_csr


def enroll_with(api: Api, device_id: str, token: str, **fields: Any) -> Any:
    body = {"device_id": device_id, "bootstrap_token": token, "arch": "x86_64", "ram_mb": 512,
            "runtimes": ["onnxruntime"], "agent_version": "t", **fields}
    return api.client.post("/api/v1/devices/enroll", json=body)


def expire(api: Api, table: type, row_id: int) -> None:
    with Session(api.runtime.engine) as session:
        row = session.get(table, row_id)
        row.expires_at = utcnow() - timedelta(seconds=1)
        session.add(row)
        session.commit()


def test_api_tokens_are_hashed_shown_once_and_stop_working_when_revoked_or_expired(api: Api) -> None:
    issued = api.post("/tokens", json={"name": "ci bot", "role": "viewer"}).json()
    secret = issued["token"]
    assert issued["role"] == "viewer" and issued["active"]
    assert api.get("/models", headers=bearer(secret)).status_code == 200
    listed = api.get("/tokens").text
    assert secret not in listed and "token_hash" not in listed
    with Session(api.runtime.engine) as session:
        stored = session.exec(select(ApiToken).where(ApiToken.id == issued["id"])).one()
    assert stored.token_hash != secret and secret not in stored.model_dump_json()
    assert api.client.delete(f"/api/v1/tokens/{issued['id']}", headers=api.headers).json()["active"] is False
    assert api.get("/models", headers=bearer(secret)).status_code == 401
    other = api.post("/tokens", json={"name": "short", "role": "operator", "expires_days": 1}).json()
    expire(api, ApiToken, other["id"])
    assert api.get("/models", headers=bearer(other["token"])).status_code == 401
    assert api.post("/tokens", json={"name": "x", "role": "root"}).status_code == 422
    actions = [entry["action"] for entry in api.get("/audit", params={"limit": 1000}).json()]
    assert actions.count("token.issued") >= 2 and "token.revoked" in actions


def test_bootstrap_tokens_enroll_one_device_once_before_they_expire(api: Api) -> None:
    token = bootstrap_token(api)
    assert enroll_with(api, "boot-1", token).status_code == 201
    assert enroll_with(api, "boot-2", token).status_code == 401  # used up
    bound = bootstrap_token(api, device_id="boot-3")
    assert enroll_with(api, "boot-4", bound).status_code == 401  # for another device
    assert enroll_with(api, "boot-3", bound).status_code == 201
    expired = api.post("/bootstrap-tokens", json={"ttl_s": 60}).json()
    expire(api, BootstrapToken, expired["id"])
    assert enroll_with(api, "boot-5", expired["token"]).status_code == 401
    revoked = api.post("/bootstrap-tokens", json={}).json()
    assert api.client.delete(f"/api/v1/bootstrap-tokens/{revoked['id']}", headers=api.headers).status_code == 200
    assert enroll_with(api, "boot-6", revoked["token"]).status_code == 401
    used = {t["id"]: t for t in api.get("/bootstrap-tokens", params={"include_inactive": True}).json()}
    assert used[expired["id"]]["used_at"] is None and "token" not in used[expired["id"]]
    assert api.get("/devices/boot-5").status_code == 404


def test_a_csr_gets_a_client_certificate_for_the_device_and_nothing_else(api: Api) -> None:
    csr, key = make_csr("cert-1")
    answer = enroll_with(api, "cert-1", bootstrap_token(api), csr=csr).json()
    certificate = x509.load_pem_x509_certificate(answer["certificate"].encode())
    ca = x509.load_pem_x509_certificate(answer["ca_certificate"].encode())
    certificate.verify_directly_issued_by(ca)
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "cert-1"
    assert certificate.public_key() == key.public_key()
    usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert certificate.not_valid_after_utc - certificate.not_valid_before_utc <= timedelta(days=7, minutes=5)
    assert "PRIVATE" not in json.dumps(answer)
    for device_id, bad_csr in (("cert-2", make_csr("someone-else")[0]), ("cert-3", "not a csr"),
                               ("cert-4", make_csr("edgefleet.server")[0])):
        refused = enroll_with(api, device_id, bootstrap_token(api), csr=bad_csr)
        assert refused.status_code == 422 and "csr" in refused.json()["detail"].lower()
        assert api.get(f"/devices/{device_id}").status_code == 404  # nothing half-enrolled
    renewed = api.post("/devices/me/certificate", headers=bearer(answer["credential"]),
                       json={"csr": make_csr("cert-1")[0]})
    assert renewed.status_code == 200
    assert x509.load_pem_x509_certificate(renewed.json()["certificate"].encode()).serial_number != \
        certificate.serial_number


def test_revocation_refuses_the_device_everywhere_and_lists_its_certificates(api: Api) -> None:
    answer = enroll_with(api, "rev-1", bootstrap_token(api), csr=make_csr("rev-1")[0]).json()
    serial = x509.load_pem_x509_certificate(answer["certificate"].encode()).serial_number
    api.released_model("rev-model")
    revoked = api.post("/devices/rev-1/revoke", json={"reason": "stolen"}).json()
    assert revoked["certificates_revoked"] == 1 and revoked["revoked_by"] == "admin"
    crl = x509.load_pem_x509_crl(api.get("/pki/crl.pem", headers={}).content)
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    assert api.runtime.ca.crl_path.read_bytes().startswith(b"-----BEGIN X509 CRL")
    assert api.get("/root", headers=bearer(answer["credential"])).status_code == 200  # public anyway
    assert api.post("/devices/me/certificate", headers=bearer(answer["credential"]),
                    json={"csr": make_csr("rev-1")[0]}).status_code == 401
    deploy = api.post("/deployments", json={"release": {"name": "rev-model", "version": 1},
                                            "device_ids": ["rev-1"]})
    assert deploy.status_code == 422  # a revoked device gets no directives
    with Session(api.runtime.engine) as session:
        outcome = ingest.record_status(session, StatusMessage("rev-1", "succeeded", 1))
    assert outcome is IngestOutcome.UNKNOWN_DEVICE  # and nothing it publishes is recorded
    assert enroll_with(api, "rev-1", bootstrap_token(api)).status_code == 409


def test_a_release_signed_offline_is_verified_before_it_is_stored(api: Api) -> None:
    version = api.upload(name="offline-model").json()["version"]
    request = api.get(f"/models/offline-model/versions/{version}/release-request").json()
    keyring = api.runtime.keyring
    assert request["release_keyids"] == list(keyring.root.roles["release"].keyids)
    by_rollout = offline_release.sign_request(request, [keyring.rollout_key])
    refused = api.post("/releases/signed", json={"envelope": by_rollout})
    assert refused.status_code == 422 and "WrongRoleError" in refused.json()["detail"]
    signed = offline_release.sign_request(request, [keyring.release_key], keyring.root)
    tampered = json.loads(canonical_bytes(signed))
    tampered["signed"]["variants"][0]["sha256"] = "0" * 64
    assert api.post("/releases/signed", json={"envelope": tampered}).status_code == 422
    accepted = api.post("/releases/signed", json={"envelope": signed})
    assert accepted.status_code == 201 and accepted.json()["envelope"] == signed
    assert api.post("/releases/signed", json={"envelope": signed}).status_code == 409
    entry = api.get("/audit", params={"action": "release.signed", "limit": 1000}).json()[-1]
    assert entry["details"]["signed_by"] == "offline" and entry["details"]["version"] == version


def test_oversized_and_malformed_bodies_are_4xx_never_5xx(api: Api) -> None:
    huge = b'{"name": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    assert api.client.post("/api/v1/tokens", content=huge, headers={**api.headers, "Content-Type":
                                                                     "application/json"}).status_code == 413

    def chunks() -> Any:
        for _ in range(80):
            yield b"x" * 65536

    streamed = api.client.post("/api/v1/tokens", content=chunks(), headers={**api.headers,
                                                                              "Content-Type": "application/json"})
    assert streamed.status_code == 413
    for body in (b"{oops", b"[]", b'{"name": 5, "role": ["admin"]}', b'{"name": "\\ud800", "role": "viewer"}'):
        response = api.client.post("/api/v1/tokens", content=body,
                                   headers={**api.headers, "Content-Type": "application/json"})
        assert response.status_code == 422 and isinstance(response.json()["detail"], str), body


def test_every_change_is_in_the_verified_audit_trail_with_its_actor(api: Api) -> None:
    operator = issue_token(api, "operator", "audited operator")
    empty = api.client.post("/api/v1/models", headers=bearer(operator),
                            files={"file": ("m.onnx", b"", "application/octet-stream")}, data={"name": "audited"})
    assert empty.status_code == 422  # an empty file is not a model: nothing recorded
    uploaded = api.upload(name="audited")
    assert uploaded.status_code == 201
    api.client.post("/api/v1/releases", headers=bearer(operator), json={"model": "audited", "version": 1})
    api.enroll("audited-dev", tags=("audit",))
    api.client.post("/api/v1/deployments", headers=bearer(operator),
                    json={"release": {"name": "audited", "version": 1}, "tags": ["audit"]})
    entries = api.get("/audit", params={"limit": 1000}).json()
    by_action = {entry["action"]: entry for entry in entries}
    assert by_action["model.uploaded"]["details"]["name"] == "audited"
    assert by_action["release.signed"]["actor"].startswith("token:audited operator#")
    assert by_action["deployment.created"]["details"]["devices"] == 1
    assert by_action["device.enrolled"]["actor"] == "provisioning-token"
    assert [entry["seq"] for entry in entries] == list(range(1, len(entries) + 1))
    assert api.get("/audit/verify").json()["ok"] is True
    exported = api.get("/audit/export").text.splitlines()
    assert len(exported) == len(entries) and json.loads(exported[0])["seq"] == 1
    assert [json.loads(line)["seq"] for line in api.get("/audit/export", params={"after_seq": 2}).text.splitlines()] \
        == list(range(3, len(entries) + 1))
    for path in ("/audit", "/audit/export"):  # beyond what the database holds: refused before any answer starts
        refused = api.get(path, params={"after_seq": 2**63})
        assert refused.status_code == 422 and "after_seq" in refused.text, refused.text
