"""Artifacts served by nginx in front of the content-addressed store, with the location blocks
of docs/deployment.md: an agent whose enrollment names nginx as its artifact base URL installs
a model whose bytes nginx sent (the server only answered nginx's authorisation HEAD)."""

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet_server.client import FleetClient
from fleet_server.localfleet import LocalAgent, LocalServer
from fleet_server.processes import free_port
from tests.helpers.nginx import NginxServer
from tests.integration.conftest import MODELS, publish_release, start_server, target_state, unique_model

pytestmark = pytest.mark.slow


@pytest.fixture
def fleet_behind_nginx(mosquitto, tmp_path: Path) -> Iterator[tuple[LocalServer, NginxServer]]:
    nginx_port = free_port()
    server = start_server(tmp_path / "server", mosquitto.url,
                          EDGEFLEET_ARTIFACT_BASE_URL=f"http://127.0.0.1:{nginx_port}")
    nginx = NginxServer(tmp_path / "nginx", tmp_path / "server" / "artifacts", upstreams=[server.url],
                        port=nginx_port)
    try:
        nginx.start()
        yield server, nginx
    finally:
        nginx.stop()
        server.stop()


def status_of(url: str, headers: dict[str, str]) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_an_agent_downloads_its_model_through_nginx(fleet_behind_nginx, tmp_path: Path) -> None:
    server, nginx = fleet_behind_nginx
    agent = LocalAgent("nginx-device-1", tmp_path / "agent")
    agent.enroll(server.url, server.bootstrap_token)
    agent.start()
    try:
        agent.wait_serving()
        with FleetClient(server.url, server.admin_token) as client:
            version = publish_release(client, unique_model(MODELS / "digits_mlp.onnx", tmp_path, "nginx"), "via-nginx")
            sha256 = client.model_version("via-nginx", version)["sha256"]
            deployment = client.deploy("via-nginx", version, device_ids=[agent.device_id])
            final = client.wait_for_deployment(deployment["id"], timeout=90)
        assert target_state(final, agent.device_id)["state"] == "succeeded"
    finally:
        agent.stop()

    served = [line for line in nginx.access_lines() if f"GET /api/v1/artifacts/{sha256} " in line]
    assert served and all('" 200 ' in line or '" 206 ' in line for line in served), nginx.access_lines()
    server_log = server.process.log_text() if server.process else ""
    assert f"event=artifact_download sha256={sha256}" not in server_log  # the bytes came from nginx
    url = f"{nginx.url}/api/v1/artifacts/{sha256}"
    assert status_of(url, {}) == 401  # the replica refuses nginx's authorisation request for an anonymous caller
    assert status_of(url, {"Authorization": "Bearer not-a-token"}) == 401
    assert status_of(f"{nginx.url}/api/v1/artifacts/{'0' * 64}", {"Authorization": f"Bearer {server.admin_token}"}
                     ) == 404
