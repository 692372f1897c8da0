"""``edgefleet demo``: watch a model travel from the server to three devices.

Starts the server on embedded defaults, three agents as separate processes,
trains a small digits classifier, uploads and signs it, rolls it out in two
phases (one device, then all of them) while printing each phase's progress
and every state each device reports, then asks each device's local KServe v2
endpoint for predictions and stops everything.
"""

import logging
import secrets
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from fleet_server.client import FleetClient
from fleet_server.errors import FleetServerError
from fleet_server.localfleet import LocalAgent, LocalServer, free_port

MODEL_NAME = "digits"
DEVICE_TAG = "demo"
PHASE_BAKE_S = 2.0
ROLLOUT_FINAL_STATES = ("succeeded", "aborted", "rolled_back")


class DemoError(FleetServerError):
    """The demo could not complete a step."""


def build_digits_model(directory: Path) -> tuple[Path, np.ndarray, np.ndarray, dict[str, Any]]:
    """Train an MLP on scikit-learn's bundled digits and export it to ONNX."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    digits = load_digits()
    features = (digits.data / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(features, digits.target, test_size=0.2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        classifier = MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, random_state=0).fit(x_train, y_train)
    onnx_model = convert_sklearn(
        classifier,
        initial_types=[("input", FloatTensorType([None, features.shape[1]]))],
        options={id(classifier): {"zipmap": False}},
        target_opset=17,
    )
    path = directory / "digits_mlp.onnx"
    path.write_bytes(onnx_model.SerializeToString())
    lineage = {
        "description": "MLP (32 hidden) on scikit-learn digits, features scaled to [0, 1]",
        "lineage": {
            "training_data_uri": "sklearn.datasets.load_digits",
            "training_code_ref": "fleet_server/demo.py:build_digits_model",
            "metrics": {"test_accuracy": round(float(classifier.score(x_test, y_test)), 4)},
        },
    }
    return path, x_test, y_test, lineage


def run_demo(devices: int = 3, workdir: Path | None = None, keep: bool = False,
             say: Callable[[str], None] = print) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="edgefleet-demo-")) if workdir is None else workdir
    root.mkdir(parents=True, exist_ok=True)
    step = 0

    def announce(text: str) -> None:
        nonlocal step
        step += 1
        say(f"[{step}] {text}")

    with ExitStack() as stack:
        if not keep:
            stack.callback(shutil.rmtree, root, ignore_errors=True)
        announce(f"training a digits classifier and exporting it to ONNX (work dir {root})")
        model_path, x_test, y_test, metadata = build_digits_model(root)
        say(f"    {model_path.name}: {model_path.stat().st_size} bytes, "
            f"test accuracy {metadata['lineage']['metrics']['test_accuracy']:.3f}")

        announce("starting the fleet server with its embedded MQTT broker")
        server = LocalServer(
            root / "server", bootstrap_token=secrets.token_urlsafe(16), admin_token=secrets.token_urlsafe(24),
            extra_env={"EDGEFLEET_EMBEDDED_MQTT_PORT": str(free_port())},
        )
        stack.callback(server.stop)
        server.start()
        say(f"    server at {server.url}, logs in {server.data_dir / 'server.log'}")

        agents = [LocalAgent(f"demo-device-{index}", root / f"device-{index}") for index in range(1, devices + 1)]
        announce(f"enrolling and starting {devices} device agents as separate processes")
        for agent in agents:
            agent.enroll(server.url, server.bootstrap_token, tags=(DEVICE_TAG,))
            stack.callback(agent.stop)
            agent.start()
        for agent in agents:
            agent.wait_serving()
            say(f"    {agent.device_id}: KServe v2 endpoint at {agent.inference_url}")

        client = stack.enter_context(FleetClient(server.url, server.admin_token))
        announce("uploading the model with its lineage")
        version = client.upload_model(model_path, MODEL_NAME, metadata)
        say(f"    {MODEL_NAME} v{version['version']} sha256 {version['sha256'][:16]}...")

        announce("signing the release with the release key")
        release = client.create_release(MODEL_NAME, version["version"])
        say(f"    release {MODEL_NAME} v{release['version']} sha256 {release['sha256'][:16]}...")

        announce(f"staged rollout to every device tagged {DEVICE_TAG!r}: phase 1 one device, phase 2 all of them "
                 f"({PHASE_BAKE_S:g} s bake each)")
        rollout = client.create_rollout({
            "release": {"name": MODEL_NAME, "version": version["version"]}, "target": {"tags": [DEVICE_TAG]},
            "phases": [{"count": 1, "bake_s": PHASE_BAKE_S}, {"share": 1.0, "bake_s": PHASE_BAKE_S}]})
        final = _follow_rollout(client, rollout["id"], say)
        if final["state"] != "succeeded":
            raise DemoError(f"rollout {final['id']} ended {final['state']}: {final['reason']}")

        announce("asking each device for predictions on held-out digits")
        rows = x_test[:8]
        for agent in agents:
            answer = agent.infer(MODEL_NAME, rows.tolist())
            labels = next(o["data"] for o in answer["outputs"] if o["name"] == "label")
            correct = sum(int(p == t) for p, t in zip(labels, y_test[:8], strict=True))
            say(f"    {agent.device_id}: predicted {labels} truth {y_test[:8].tolist()} ({correct}/8 correct)")

        announce("stopping agents and server")
    say("demo finished: the model travelled from the server to every device and answered requests")
    return 0


def _print_history(client: FleetClient, deployment_id: int, printed: dict[str, int],
                   say: Callable[[str], None]) -> dict[str, Any]:
    """Print the state changes devices reported for a deployment since the last call."""
    deployment = client.deployment(deployment_id)
    for target in deployment["targets"]:
        history = target["history"]
        for event in history[printed.get(target["device_id"], 0):]:
            reason = f" ({event['reason']})" if event.get("reason") else ""
            say(f"    {target['device_id']}: {event['state']}{reason}")
        printed[target["device_id"]] = len(history)
    return deployment


def _follow_rollout(client: FleetClient, rollout_id: int, say: Callable[[str], None],
                    timeout: float = 180.0) -> dict[str, Any]:
    """Print each phase's progress and every state each device reports, until the rollout ends."""
    phases: dict[int, str] = {}
    printed: dict[int, dict[str, int]] = {}
    deadline = time.monotonic() + timeout
    while True:
        rollout = client.rollout(rollout_id)
        for phase in rollout["phase_details"]:
            if phases.get(phase["index"]) != phase["state"] and phase["state"] != "pending":
                counts = ", ".join(f"{n} {s}" for s, n in sorted(phase["devices"].items()))
                say(f"  phase {phase['index'] + 1}/{rollout['phases']} ({phase['size']} of "
                    f"{rollout['phase_details'][-1]['size']} devices): {phase['state']} [{counts}]")
                phases[phase["index"]] = phase["state"]
        for deployment_id in sorted({d["deployment_id"] for d in rollout["device_details"] if d["deployment_id"]}):
            _print_history(client, deployment_id, printed.setdefault(deployment_id, {}), say)
        if rollout["state"] in ROLLOUT_FINAL_STATES:
            say(f"  rollout {rollout_id}: {rollout['state']}" + (f" ({rollout['reason']})" if rollout["reason"]
                                                                 else ""))
            return rollout
        if time.monotonic() > deadline:
            raise DemoError(f"rollout {rollout_id} did not finish within {timeout:.0f}s: {rollout['devices']}")
        time.sleep(0.3)
