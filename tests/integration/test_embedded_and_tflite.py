"""The happy path on the embedded broker, and the agent's LiteRT path."""

import numpy as np
import pytest

from fleet_server.client import FleetClient
from fleet_server.localfleet import LocalAgent, free_port
from tests.integration.conftest import MODELS, publish_release, start_server, target_state, unique_model

pytestmark = pytest.mark.slow


def test_rollout_over_the_embedded_broker(tmp_path):
    server = start_server(tmp_path / "server", "", EDGEFLEET_EMBEDDED_MQTT_PORT=str(free_port()))
    agent = LocalAgent("embedded-device-1", tmp_path / "device")
    try:
        agent.enroll(server.url, server.bootstrap_token)
        agent.start()
        agent.wait_serving()
        with FleetClient(server.url, server.admin_token) as client:
            version = publish_release(client, unique_model(MODELS / "digits_mlp.onnx", tmp_path, "emb"), "digits")
            deployment = client.deploy("digits", version, device_ids=[agent.device_id])
            final = client.wait_for_deployment(deployment["id"], timeout=90)
        assert target_state(final, agent.device_id)["state"] == "succeeded"
        answer = agent.infer("digits", np.load(MODELS / "digits_sample.npy")[:2].tolist())
        assert {output["name"] for output in answer["outputs"]} >= {"label"}
    finally:
        agent.stop()
        server.stop()


@pytest.mark.tflite
def test_tflite_model_rolls_out_and_serves_with_litert(client, agents):
    agent = agents()
    version = publish_release(client, MODELS / "digits_mlp.tflite", "digits-tflite")
    deployment = client.deploy("digits-tflite", version, device_ids=[agent.device_id])
    final = client.wait_for_deployment(deployment["id"], timeout=90)

    target = target_state(final, agent.device_id)
    assert target["state"] == "succeeded", target
    assert target["history"][-1]["variant"].startswith("tflite")
    sample = np.load(MODELS / "digits_sample.npy")[:1]
    answer = agent.infer("digits-tflite", sample.tolist(), input_name=_tflite_input_name(agent))
    probabilities = np.array(answer["outputs"][0]["data"], dtype=np.float32)
    assert probabilities.shape == (10,)
    assert abs(float(probabilities.sum()) - 1.0) < 1e-3
    assert int(probabilities.argmax()) == int(np.load(MODELS / "digits_labels.npy")[0])


def _tflite_input_name(agent: LocalAgent) -> str:
    import json
    import urllib.request

    with urllib.request.urlopen(f"{agent.inference_url}/v2/models/digits-tflite", timeout=5) as response:
        return json.loads(response.read())["inputs"][0]["name"]
