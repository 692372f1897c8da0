"""Deployments: per-device sequence numbers, signed directives, targeting, errors."""

from datetime import UTC, datetime

from sqlmodel import Session, select

from agent.protocol import Action, DeviceFacts, load_trusted_root, verify_update
from agent.protocol.canonical import parse_json
from fleet_server.models.deployment import DeploymentTarget
from tests.fleet_server.conftest import Api


def deploy(api: Api, release: dict, device_ids=(), tags=(), **extra):
    body = {"release": {"name": release["name"], "version": release["version"]}, "device_ids": list(device_ids),
            "tags": list(tags), **extra}
    return api.post("/deployments", json=body)


def stored_directive(api: Api, device_id: str, sequence: int) -> dict:
    with Session(api.runtime.engine) as session:
        target = session.exec(select(DeploymentTarget).where(
            DeploymentTarget.device_id == device_id, DeploymentTarget.sequence == sequence)).one()
        return parse_json(target.directive)


def test_two_deployments_increment_each_devices_sequence(api: Api) -> None:
    api.enroll("seq-1")
    api.enroll("seq-2")
    release = api.released_model("seq-model")
    first = deploy(api, release, device_ids=["seq-1", "seq-2"])
    assert first.status_code == 201, first.text
    second = deploy(api, release, device_ids=["seq-1"])
    assert second.status_code == 201
    by_device = {t["device_id"]: t["sequence"] for t in first.json()["targets"]}
    assert by_device == {"seq-1": 1, "seq-2": 1}
    assert [t["sequence"] for t in second.json()["targets"]] == [2]
    assert api.get("/devices/seq-1").json()["directive_sequence"] == 2
    assert api.get("/devices/seq-2").json()["directive_sequence"] == 1
    latest = api.get("/devices/seq-1").json()["latest_deployment"]
    assert latest["deployment_id"] == second.json()["id"] and latest["sequence"] == 2
    assert latest["state"] == "pending"


def test_directive_verifies_for_the_device(api: Api) -> None:
    enrollment = api.enroll("verify-1").json()
    release = api.released_model("verify-model")
    deployment = deploy(api, release, device_ids=["verify-1"]).json()
    assert deployment["release"] == {"name": "verify-model", "version": release["version"],
                                     "sha256": release["sha256"]}
    now = datetime.now(UTC)
    root = load_trusted_root(enrollment["root"], now)
    facts = DeviceFacts("verify-1", "x86_64", 2048, ("onnxruntime",))
    directive = stored_directive(api, "verify-1", 1)
    update = verify_update(root, directive, release["envelope"], facts, last_sequence=0, now=now)
    assert update.directive.sequence == 1 and update.directive.action is Action.INSTALL
    assert update.variant is not None and update.variant.name == "onnx-fp32"
    ttl = update.directive.expires - update.directive.issued
    assert ttl.total_seconds() == api.runtime.settings.directive_ttl_s
    target = deployment["targets"][0]
    assert target["published_at"] is not None  # the embedded broker acknowledged the publish
    assert target["state"] == "pending" and target["history"] == []


def test_tags_and_ids_are_united(api: Api) -> None:
    api.enroll("union-1", tags=("union",))
    api.enroll("union-2", tags=("union",))
    api.enroll("union-3")
    release = api.released_model("union-model")
    response = deploy(api, release, device_ids=["union-3", "union-1"], tags=["union"])
    assert sorted(t["device_id"] for t in response.json()["targets"]) == ["union-1", "union-2", "union-3"]
    assert response.json()["states"] == {"pending": 3}
    listed = api.get("/deployments").json()
    assert listed[0]["id"] == response.json()["id"] and listed[0]["states"] == {"pending": 3}


def test_rollback_action_is_signed(api: Api) -> None:
    api.enroll("rollback-1")
    release = api.released_model("rollback-model")
    response = deploy(api, release, device_ids=["rollback-1"], action="rollback")
    assert response.status_code == 201 and response.json()["action"] == "rollback"
    assert stored_directive(api, "rollback-1", 1)["signed"]["action"] == "rollback"


def test_deployment_errors(api: Api) -> None:
    api.enroll("errors-1")
    release = api.released_model("errors-model")
    response = deploy(api, release)
    assert response.status_code == 422 and "no device" in response.json()["detail"]
    response = deploy(api, release, tags=["nobody-has-this"])
    assert response.status_code == 422
    response = deploy(api, release, device_ids=["errors-1", "ghost-device"])
    assert response.status_code == 404 and "ghost-device" in response.json()["detail"]
    response = deploy(api, {"name": "errors-model", "version": 99}, device_ids=["errors-1"])
    assert response.status_code == 404
    assert deploy(api, release, device_ids=["Bad_Id"]).status_code == 422
    assert deploy(api, release, device_ids=["errors-1"], action="shadow").status_code == 422
    assert api.get("/devices/errors-1").json()["directive_sequence"] == 0  # nothing was signed
    assert api.get("/deployments/999999").status_code == 404
    assert api.post("/deployments", json={}, headers={}).status_code == 401
