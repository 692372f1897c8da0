"""Enrollment (bootstrap token, credential rotation, validation) and the device views."""

from datetime import UTC, datetime

from agent.protocol import load_trusted_root
from fleet_server.core.security import hash_token
from fleet_server.models.device import Device
from tests.fleet_server.conftest import Api, admin_headers


def test_enroll_returns_credential_broker_and_root(api: Api) -> None:
    response = api.enroll("enroll-1", tags=("lab", "floor-2"))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["device_id"] == "enroll-1"
    assert body["mqtt_url"] == api.runtime.broker_address.url and body["mqtt_url"].startswith("mqtt://127.0.0.1:")
    assert body["artifact_base_url"] is None
    assert load_trusted_root(body["root"], datetime.now(UTC)).version == 1
    assert len(body["credential"]) >= 40
    from sqlmodel import Session

    with Session(api.runtime.engine) as session:
        stored = session.get(Device, "enroll-1")
        assert stored is not None and stored.credential_hash == hash_token(body["credential"])
        assert body["credential"] not in stored.credential_hash


def test_reenrollment_rotates_the_credential(api: Api) -> None:
    first = api.enroll("enroll-2", tags=("old",)).json()["credential"]
    again = api.enroll("enroll-2", tags=("new",), ram_mb=4096)
    assert again.status_code == 200
    second = again.json()["credential"]
    assert second != first
    sha = api.upload(name="rotation").json()["sha256"]
    assert api.get(f"/artifacts/{sha}", headers=admin_headers(first)).status_code == 401
    assert api.get(f"/artifacts/{sha}", headers=admin_headers(second)).status_code == 200
    device = api.get("/devices/enroll-2").json()
    assert device["tags"] == ["new"] and device["ram_mb"] == 4096


def test_bad_bootstrap_token_is_401(api: Api) -> None:
    response = api.enroll("enroll-3", bootstrap_token="wrong")
    assert response.status_code == 401 and response.json()["detail"] == "invalid, used or expired bootstrap token"
    assert api.get("/devices/enroll-3").status_code == 404


def test_bad_fields_are_422_with_one_message(api: Api) -> None:
    assert api.enroll("Not_Valid").status_code == 422
    cases = [
        {"arch": ""},
        {"ram_mb": -1},
        {"runtimes": ["tensorflow"]},
        {"tags": ["has space"]},
    ]
    for overrides in cases:
        response = api.enroll("enroll-4", **overrides)
        assert response.status_code == 422, overrides
        assert isinstance(response.json()["detail"], str)
    missing = api.client.post("/api/v1/devices/enroll", json={"device_id": "enroll-4"})
    assert missing.status_code == 422 and "bootstrap_token" in missing.json()["detail"]
    garbage = api.client.post("/api/v1/devices/enroll", content=b"{oops", headers={"Content-Type": "application/json"})
    assert garbage.status_code == 422


def test_list_filters_by_tag_and_show_has_facts(api: Api) -> None:
    api.enroll("tagged-1", tags=("kiosk",))
    api.enroll("tagged-2", tags=("kiosk", "eu"))
    api.enroll("untagged-3")
    kiosks = [device["device_id"] for device in api.get("/devices", params={"tag": "kiosk"}).json()]
    assert kiosks == ["tagged-1", "tagged-2"]
    everyone = [device["device_id"] for device in api.get("/devices").json()]
    assert {"tagged-1", "tagged-2", "untagged-3"} <= set(everyone)
    shown = api.get("/devices/tagged-2").json()
    assert shown["arch"] == "x86_64" and shown["runtimes"] == ["onnxruntime", "tflite"]
    assert shown["tags"] == ["eu", "kiosk"] and shown["online"] is False and shown["current_model"] is None
    assert shown["latest_deployment"] is None and shown["directive_sequence"] == 0
    assert api.get("/devices/nobody").status_code == 404
    assert api.get("/devices", headers={}).status_code == 401
