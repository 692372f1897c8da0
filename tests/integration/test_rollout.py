"""End-to-end rollouts: real Mosquitto, the server under uvicorn, agents as processes."""

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from agent.protocol import Action, Directive, Envelope, ReleaseRef, device_topic, sign_envelope
from agent.protocol.keys import generate_private_key
from agent.protocol.messages import DirectiveMessage, StatusMessage
from agent.protocol.topics import TopicKind
from fleet_server.localfleet import BIN_DIR, wait_until
from tests.integration.conftest import MODELS, failing_model, publish_release, target_state, unique_model
from tests.integration.cutting_proxy import CuttingProxy

pytestmark = pytest.mark.slow
SAMPLE = np.load(MODELS / "digits_sample.npy")[:4]


def deploy_and_wait(client, name: str, version: int, device_ids: list[str], timeout: float = 90.0) -> dict:
    deployment = client.deploy(name, version, device_ids=device_ids)
    return client.wait_for_deployment(deployment["id"], timeout=timeout)


def predicted_labels(agent, model: str) -> list[int]:
    answer = agent.infer(model, SAMPLE.tolist())
    return next(output["data"] for output in answer["outputs"] if output["name"] == "label")


def agent_status(agent) -> dict:
    result = subprocess.run(
        [str(BIN_DIR / "edgefleet-agent"), "--data-dir", str(agent.data_dir), "status"],
        capture_output=True, text=True, check=True, timeout=30,
    )
    return json.loads(result.stdout)


def test_rollout_to_three_devices_succeeds_and_serves(client, agents, tmp_path):
    fleet = [agents() for _ in range(3)]
    model = unique_model(MODELS / "digits_mlp.onnx", tmp_path, "three")
    version = publish_release(client, model, "digits-three")

    final = deploy_and_wait(client, "digits-three", version, [agent.device_id for agent in fleet])

    assert [t["state"] for t in final["targets"]] == ["succeeded"] * 3
    expected = np.load(MODELS / "digits_labels.npy")[:4].tolist()
    for agent in fleet:
        labels = predicted_labels(agent, "digits-three")
        assert sum(int(a == b) for a, b in zip(labels, expected, strict=True)) >= 3
        device = client.device(agent.device_id)
        assert device["online"] is True


def test_directive_signed_without_rollout_key_is_rejected(client, agents, tmp_path, mosquitto):
    agent = agents()
    model = unique_model(MODELS / "digits_mlp.onnx", tmp_path, "forged")
    version = publish_release(client, model, "digits-forged")
    assert target_state(deploy_and_wait(client, "digits-forged", version, [agent.device_id]),
                        agent.device_id)["state"] == "succeeded"
    before = predicted_labels(agent, "digits-forged")
    release = client._request("GET", f"/releases/digits-forged/{version}")["envelope"]

    forged = Directive(
        agent.device_id, 10_000, Action.ROLLBACK,
        ReleaseRef("digits-forged", version, Envelope.from_dict(release).sha256()),
        *_validity(),
    )
    statuses: list[StatusMessage] = []
    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="it-watcher")
    watcher.on_message = lambda _c, _u, message: statuses.append(StatusMessage.decode(message.payload))
    watcher.connect(mosquitto.host, mosquitto.port)
    watcher.subscribe(device_topic(agent.device_id, TopicKind.STATUS), qos=1)
    watcher.loop_start()
    try:
        time.sleep(0.5)
        payload = DirectiveMessage(sign_envelope(forged.to_dict(), [generate_private_key()]).to_dict(), release)
        watcher.publish(device_topic(agent.device_id, TopicKind.DIRECTIVE), payload.encode(), qos=1).wait_for_publish(5)
        rejected = wait_until(lambda: [s for s in statuses if s.state == "rejected"], 30, "a rejected status")
    finally:
        watcher.loop_stop()
        watcher.disconnect()
    assert "UnknownSignerError" in (rejected[0].reason or "")
    assert predicted_labels(agent, "digits-forged") == before
    assert agent_status(agent)["current"]["version"] == version


def _validity():
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC).replace(microsecond=0)
    return now, now + timedelta(hours=1)


def test_corrupted_artifact_is_rejected(client, agents, server, tmp_path):
    agent = agents()
    model = unique_model(MODELS / "digits_mlp.onnx", tmp_path, "corrupt")
    uploaded = client.upload_model(model, "digits-corrupt")
    client.create_release("digits-corrupt", uploaded["version"])
    stored = next(Path(server.data_dir).rglob(uploaded["sha256"]))
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))

    final = deploy_and_wait(client, "digits-corrupt", uploaded["version"], [agent.device_id])

    target = target_state(final, agent.device_id)
    assert target["state"] == "rejected"
    assert "ArtifactMismatchError" in target["reason"]
    assert agent_status(agent)["current"] is None


def test_interrupted_download_resumes_with_range(client, agents, server, tmp_path):
    proxy = CuttingProxy(upstream_port=server.port, cut_after_bytes=3000)
    try:
        agent = agents(server_url=proxy.url)
        model = unique_model(MODELS / "digits_mlp.onnx", tmp_path, "resume")
        version = publish_release(client, model, "digits-resume")
        assert model.stat().st_size > 6000

        final = deploy_and_wait(client, "digits-resume", version, [agent.device_id])
    finally:
        proxy.close()

    assert target_state(final, agent.device_id)["state"] == "succeeded"
    requests = proxy.artifact_requests()
    assert proxy.cuts == 1 and len(requests) >= 2
    resumed = [head for head in requests[1:] if "range: bytes=" in head.lower()]
    assert resumed, requests
    offset = int(resumed[0].lower().split("range: bytes=")[1].split("-")[0])
    assert 0 < offset < model.stat().st_size


def test_failed_health_check_rolls_back_to_previous_model(client, agents, tmp_path):
    agent = agents()
    good = unique_model(MODELS / "digits_mlp.onnx", tmp_path, "good")
    good_version = publish_release(client, good, "digits-health")
    assert target_state(deploy_and_wait(client, "digits-health", good_version, [agent.device_id]),
                        agent.device_id)["state"] == "succeeded"
    before = predicted_labels(agent, "digits-health")

    bad_version = publish_release(client, failing_model(tmp_path), "digits-health")
    final = deploy_and_wait(client, "digits-health", bad_version, [agent.device_id])

    target = target_state(final, agent.device_id)
    assert target["state"] == "rolled_back"
    assert target["reason"]
    assert predicted_labels(agent, "digits-health") == before
    assert agent_status(agent)["current"]["version"] == good_version


def test_offline_device_installs_after_reconnecting(client, agents, tmp_path):
    agent = agents()
    agent.stop()
    wait_until(lambda: client.device(agent.device_id)["online"] is False, 30, "the device to go offline")
    model = unique_model(MODELS / "digits_mlp.onnx", tmp_path, "offline")
    version = publish_release(client, model, "digits-offline")
    deployment = client.deploy("digits-offline", version, device_ids=[agent.device_id])
    time.sleep(1.0)
    assert target_state(client.deployment(deployment["id"]), agent.device_id)["state"] not in {"succeeded", "failed"}

    agent.start()
    agent.wait_serving()
    final = client.wait_for_deployment(deployment["id"], timeout=90)

    assert target_state(final, agent.device_id)["state"] == "succeeded"
    assert len(predicted_labels(agent, "digits-offline")) == len(SAMPLE)
