"""Release signing: the stored envelope verifies with the protocol, conflicts are 409."""

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from agent.protocol import Runtime, load_trusted_root, verify_release
from agent.protocol.canonical import canonical_bytes
from agent.protocol.errors import BadSignatureError
from fleet_server.keyring import RELEASE_KEY_FILE, init_keyring
from tests.fleet_server.conftest import ONNX_FIXTURE, Api


def test_release_verifies_against_the_root_devices_receive(api: Api) -> None:
    version = api.upload(ONNX_FIXTURE, name="signed", arch="aarch64", min_ram_mb=128, precision="fp32").json()
    response = api.release("signed", version["version"])
    assert response.status_code == 201, response.text
    body = response.json()
    root_envelope = api.enroll("release-checker").json()["root"]
    now = datetime.now(UTC)
    root = load_trusted_root(root_envelope, now)
    release, sha256 = verify_release(root, body["envelope"], now)
    assert sha256 == body["sha256"]
    assert (release.name, release.version) == ("signed", version["version"])
    (variant,) = release.variants
    assert variant.name == "onnx-fp32" and variant.path == "model.onnx" and variant.runtime is Runtime.ONNXRUNTIME
    assert (variant.sha256, variant.length) == (version["sha256"], version["size_bytes"])
    assert variant.compatibility.arch == ("aarch64",) and variant.compatibility.min_ram_mb == 128
    assert [spec.to_dict() for spec in release.inputs] == version["inputs"]
    assert release.expires - release.created == timedelta(days=api.runtime.settings.release_ttl_days)
    assert body["variants"][0]["name"] == "onnx-fp32"

    tampered = {**body["envelope"], "signed": {**body["envelope"]["signed"], "version": 999}}
    with pytest.raises(BadSignatureError):
        verify_release(root, tampered, now)


def test_stored_envelope_bytes_hash_to_the_release_sha(api: Api) -> None:
    release = api.released_model("bytes")
    raw = api.get(f"/releases/bytes/{release['version']}/envelope")
    assert raw.status_code == 200
    assert hashlib.sha256(raw.content).hexdigest() == release["sha256"]
    assert raw.content == canonical_bytes(release["envelope"])
    shown = api.get(f"/releases/bytes/{release['version']}").json()
    assert shown["envelope"] == release["envelope"] and shown["sha256"] == release["sha256"]
    assert api.get(f"/models/bytes/versions/{release['version']}").json()["released"] is True


def test_tflite_release_names_its_variant(api: Api) -> None:
    from tests.fleet_server.conftest import TFLITE_FIXTURE

    version = api.upload(TFLITE_FIXTURE, name="lite").json()
    body = api.release("lite", version["version"]).json()
    variant = body["envelope"]["signed"]["variants"][0]
    assert (variant["name"], variant["path"], variant["runtime"]) == ("tflite-fp32", "model.tflite", "tflite")


def test_release_conflicts_and_missing_versions(api: Api) -> None:
    release = api.released_model("twice")
    again = api.release("twice", release["version"])
    assert again.status_code == 409 and "already released" in again.json()["detail"]
    assert api.release("twice", 42).status_code == 404
    assert api.release("never-uploaded", 1).status_code == 404
    assert api.post("/releases", json={"model": "twice"}).status_code == 422
    assert api.post("/releases", json={"model": "twice", "version": 0}).status_code == 422
    assert api.get("/releases/twice/42").status_code == 404


def test_release_list_filters_by_name(api: Api) -> None:
    api.released_model("listed")
    api.released_model("listed")
    listed = api.get("/releases", params={"name": "listed"}).json()
    assert [(r["name"], r["version"]) for r in listed] == [("listed", 1), ("listed", 2)]
    assert "envelope" not in listed[0]
    assert api.get("/releases", headers={}).status_code == 401


def test_offline_release_key_is_409(api_factory, tmp_path) -> None:
    data_dir = tmp_path / "offline"
    init_keyring(data_dir / "keys")
    (data_dir / "keys" / RELEASE_KEY_FILE).unlink()
    offline = api_factory(data_dir=data_dir)
    version = offline.upload(name="unsigned").json()
    response = offline.release("unsigned", version["version"])
    assert response.status_code == 409
    assert "offline" in response.json()["detail"]
