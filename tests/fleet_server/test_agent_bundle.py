"""Agent releases on the server: a wheel of edgefleet uploads as an agent bundle and is released with one
variant of runtime ``agent``; other archives are refused with the reason."""

from datetime import UTC, datetime
from pathlib import Path

from agent.protocol import Runtime, load_trusted_root, verify_release
from tests.fleet_server.conftest import Api
from tests.helpers.wheels import make_wheel


def test_an_agent_wheel_uploads_and_releases_as_runtime_agent(api: Api, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "0.7.0")
    uploaded = api.upload(wheel, name="edgefleet-agent", precision="py3")
    assert uploaded.status_code == 201, uploaded.text
    body = uploaded.json()
    assert (body["format"], body["runtime"], body["inputs"], body["outputs"]) == ("wheel", "agent", [], [])
    assert body["filename"] == "edgefleet-0.7.0-py3-none-any.whl"
    released = api.release("edgefleet-agent", body["version"])
    assert released.status_code == 201, released.text
    root = load_trusted_root(api.enroll("agent-checker").json()["root"], datetime.now(UTC))
    release, _ = verify_release(root, released.json()["envelope"], datetime.now(UTC))
    (variant,) = release.variants
    assert (variant.runtime, variant.name, variant.length) == (Runtime.AGENT, "whl-py3", wheel.stat().st_size)
    assert release.inputs == () and release.outputs == ()


def test_a_device_installed_a_b_can_enroll_with_the_agent_runtime(api: Api) -> None:
    response = api.enroll("ab-device", runtimes=["onnxruntime", "agent"])
    assert response.status_code in (200, 201), response.text
    assert api.get("/devices/ab-device").json()["runtimes"] == ["onnxruntime", "agent"]


def test_other_wheels_and_zips_are_refused_with_the_reason(api: Api, tmp_path: Path) -> None:
    not_ours = api.upload(make_wheel(tmp_path, "1.0", name="requests"), name="edgefleet-agent")
    assert not_ours.status_code == 422 and "not the edgefleet agent" in not_ours.text
    zip_file = tmp_path / "data.zip"
    zip_file.write_bytes(b"PK\x03\x04" + bytes(64))
    broken = api.upload(zip_file, name="edgefleet-agent")
    assert broken.status_code == 422 and "zip archive" in broken.text
