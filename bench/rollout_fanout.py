"""Rollout fan-out: N simulated devices take a 1 MB model from ``rollout start`` to
``succeeded``, with the real agent update code and one real MQTT connection per device.

For each fleet size: a fresh Mosquitto, ``edgefleet server`` on it (SQLite unless
--database-url) and ``edgefleet-agent simulate`` processes of at most ``--per-process``
devices each (paho keeps one socket per client and uses select(); a few hundred per
process is the practical limit). Every simulated device is a real ``AgentDaemon``: it
verifies the signed directive and release, downloads the artifact over HTTP from the
server, checks length and sha256, installs it into its slots, loads it in onnxruntime,
runs the post-install health check and reports each state over MQTT. Once every device
is online, the model (an MLP with about 1 MB of weights) is released and a one-phase
rollout to all of them is created; the clock stops when the rollout reports every
device succeeded.

- ``seconds_to_all_succeeded``: from the rollout's creation (the API call) until the
  controller marked the last device succeeded (server timestamps).
- ``seconds_until_last_agent_succeeded``: the same start until the last simulated agent
  wrote ``succeeded`` into its own state file (the rest is the server recording statuses).
- ``directives_per_s``: directives / (last directive acknowledged by the broker - the
  controller's deployment row created, where signing starts), i.e. signing, storing,
  committing and publishing one directive per device on the server, until Mosquitto's
  PUBACK. ``seconds_start_to_last_directive_acknowledged`` adds the API call and the wait
  for the controller's next tick.

    .venv/bin/python bench/rollout_fanout.py                    # 100 and 1,000 devices
    .venv/bin/python bench/rollout_fanout.py --devices 100 1000 5000 --per-process 300

``server_side`` runs (``--signing-devices``) measure the server alone: synthetic devices
inserted into its database, nobody connected, the same rollout; signing, storing and
publishing every directive until Mosquitto acknowledged the last one, without the
simulators competing for the CPU.

Prints one JSON object: {"runs": [{"devices", "seconds_to_all_succeeded", "directives_per_s", ...}],
"server_side": [{"devices", "directives_per_s", ...}]}.
"""

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Run as a script, this file's directory comes first on sys.path; the repository root is what we need.
ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [entry for entry in sys.path if Path(entry or ".").resolve() != ROOT / "bench"]

MODEL = "fanout"
HIDDEN = 3900  # 64 x 3900 + 3900 x 10 float32 weights: about 1.0 MB
FINAL = ("succeeded", "aborted", "rolled_back")

if TYPE_CHECKING:
    from fleet_server.localfleet import LocalServer


def one_megabyte_model(directory: Path, seed: int) -> Path:
    """A digits-shaped MLP (input [N, 64] -> label, probabilities) with about 1 MB of weights."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = [numpy_helper.from_array(rng.normal(0, 0.1, size=shape).astype(np.float32), name)
               for name, shape in (("w1", (64, HIDDEN)), ("w2", (HIDDEN, 10)))]
    nodes = [helper.make_node("MatMul", ["input", "w1"], ["hidden_raw"]),
             helper.make_node("Relu", ["hidden_raw"], ["hidden"]),
             helper.make_node("MatMul", ["hidden", "w2"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
             helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0)]
    graph = helper.make_graph(
        nodes, "fanout", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 10])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], doc_string=f"fanout {seed}")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = directory / f"fanout-{seed}.onnx"
    onnx.save(model, path)
    return path


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@contextlib.contextmanager
def broker_and_server(root: Path, database_url: str | None) -> Iterator["LocalServer"]:
    """A fresh Mosquitto without a connection limit and ``edgefleet server`` on it (SQLite unless
    ``database_url``); the server's log tail is printed when the block fails."""
    from fleet_server.localfleet import LocalServer
    from tests.helpers.mosquitto import MosquittoBroker

    broker = MosquittoBroker(root / "broker", extra_config="max_connections -1").start()
    env = {"EDGEFLEET_LOG_LEVEL": "warning", **({"EDGEFLEET_DATABASE_URL": database_url} if database_url else {})}
    server = LocalServer(root / "server", secrets.token_urlsafe(16), secrets.token_urlsafe(24),
                         mqtt_url=broker.url, extra_env=env)
    try:
        server.start()
        yield server
    except BaseException:
        if server.process is not None:
            print(f"server log tail:\n{server.process.log_tail(60)}", file=sys.stderr)
        raise
    finally:
        server.stop()
        broker.stop()


def measure(devices: int, per_process: int, database_url: str | None, timeout: float,
            workdir: Path | None = None) -> dict[str, Any]:
    from types import SimpleNamespace

    from fleet_server.client import FleetClient
    from fleet_server.processes import wait_until
    from tests.integration.simulated_fleet import SimulatedFleet

    processes = math.ceil(devices / per_process)
    if devices % processes:
        raise SystemExit(f"--devices {devices} must split evenly over {processes} processes")
    with (tempfile.TemporaryDirectory(prefix="edgefleet-bench-fanout-", dir=workdir) as directory,
          broker_and_server(Path(directory), database_url) as server):
        root = Path(directory)
        sims: SimulatedFleet | None = None
        try:
            sims = SimulatedFleet(SimpleNamespace(url=server.url, bootstrap_token=server.bootstrap_token),  # type: ignore[arg-type]
                                  root, f"fan{devices}", per_process=devices // processes, processes=processes,
                                  tag="fanout", env={"EDGEFLEET_AGENT_LOG_LEVEL": "WARNING"})
            setup_started = time.monotonic()
            ids = sims.start(timeout=max(300.0, devices * 0.5))
            with FleetClient(server.url, server.admin_token, timeout=120) as client:
                wait_until(lambda: sum(d["online"] for d in client.devices()) >= devices, 300,
                           f"all {devices} devices online", interval=1.0)
                setup_s = time.monotonic() - setup_started
                model = one_megabyte_model(root, devices)
                model_bytes = model.stat().st_size
                version = client.upload_model(model, MODEL)["version"]
                client.create_release(MODEL, version)
                created = client.create_rollout({
                    "release": {"name": MODEL, "version": version}, "target": {"tags": ["fanout"]},
                    "phases": [{"share": 1.0, "bake_s": 0}], "rate_limit_per_min": 1_000_000,
                    "device_timeout_s": timeout})
                final = wait_until(lambda: (r := client.rollout(created["id"]))["state"] in FINAL and r, timeout,
                                   "the rollout to finish", interval=0.5)
                deployments = [client.deployment(deployment_id)
                               for deployment_id in {d["deployment_id"] for d in final["device_details"]}]
                signing_started = min(parse_time(deployment["created_at"]) for deployment in deployments)
                published = [parse_time(t["published_at"]) for deployment in deployments
                             for t in deployment["targets"] if t["published_at"]]
            agents_done = max(json.loads((root / "devices" / device_id / "state.json").read_text())["updated_at"]
                              for device_id in ids)
        finally:
            if sims is not None:
                sims.stop()
    started = parse_time(final["started_at"] or final["created_at"])
    finished = max(parse_time(d["finished_at"]) for d in final["device_details"] if d["finished_at"])
    return {
        "devices": devices,
        "seconds_to_all_succeeded": round(finished - started, 1),
        "seconds_until_last_agent_succeeded": round(agents_done - started, 1),  # the devices' own clocks
        "directives_per_s": round(len(published) / max(1e-3, max(published) - signing_started), 0),
        "seconds_start_to_last_directive_acknowledged": round(max(published) - started, 2),
        "directives_acknowledged": len(published),
        "state": final["state"],
        "device_states": final["devices"],
        "failure_reasons": dict(Counter(str(d["reason"])[:160] for d in final["device_details"]
                                        if d["status"] != "succeeded")),
        "model_bytes": model_bytes,
        "simulator_processes": processes,
        "setup_seconds": round(setup_s, 1),
        "database": "postgresql" if database_url else "sqlite",
        "ids_started": len(ids),
    }


def measure_signing(devices: int, database_url: str | None, workdir: Path | None) -> dict[str, Any]:
    """Server side only: ``devices`` synthetic devices inserted into the database (none connects), a
    one-phase rollout to all of them; directives / (last PUBACK - the controller's deployment row)."""
    from sqlalchemy import create_engine

    from fleet_server.client import FleetClient
    from fleet_server.processes import wait_until
    from tests.fleet_server.synthetic_fleet import insert_devices

    with (tempfile.TemporaryDirectory(prefix="edgefleet-bench-signing-", dir=workdir) as directory,
          broker_and_server(Path(directory), database_url) as server):
        engine = create_engine(database_url or f"sqlite:///{Path(directory) / 'server' / 'edgefleet.db'}")
        insert_devices(engine, devices)
        engine.dispose()
        with FleetClient(server.url, server.admin_token, timeout=120) as client:
            version = client.upload_model(one_megabyte_model(Path(directory), devices), MODEL)["version"]
            client.create_release(MODEL, version)
            created = client.create_rollout({
                "release": {"name": MODEL, "version": version}, "target": {"tags": ["synthetic"]},
                "phases": [{"share": 1.0, "bake_s": 0}], "rate_limit_per_min": 1_000_000})

            def acknowledged() -> list[dict] | None:
                rollout = client.rollout(created["id"])
                ids = {d["deployment_id"] for d in rollout["device_details"] if d["deployment_id"]}
                found = [client.deployment(deployment_id) for deployment_id in ids]
                done = sum(1 for d in found for t in d["targets"] if t["published_at"])
                return found if done == devices else None

            deployments = wait_until(acknowledged, 300, "every directive acknowledged", interval=0.5)
    started = min(parse_time(d["created_at"]) for d in deployments)
    last = max(parse_time(t["published_at"]) for d in deployments for t in d["targets"])
    return {"devices": devices, "seconds_signing_to_last_puback": round(last - started, 2),
            "directives_per_s": round(devices / max(1e-3, last - started), 0),
            "database": "postgresql" if database_url else "sqlite"}


def raise_open_files(needed: int) -> int:
    """Raise this process's (and so its children's) open-file limit; every device holds a socket."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(soft, needed) if hard == resource.RLIM_INFINITY else min(max(soft, needed), hard)
    if wanted > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if wanted < needed:
        print(f"open-file limit {wanted} < {needed}: large fleets may fail to connect", file=sys.stderr)
    return wanted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, nargs="*", default=[100, 1000])
    parser.add_argument("--per-process", type=int, default=250, help="simulated devices per process (max ~300)")
    parser.add_argument("--database-url", default=None, help="an empty PostgreSQL database (default: SQLite)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a rollout may take")
    parser.add_argument("--workdir", type=Path, default=None, help="where the temporary fleet lives")
    parser.add_argument("--signing-devices", type=int, nargs="*", default=[1000, 5000],
                        help="server-side runs: synthetic devices in the database, no simulators")
    args = parser.parse_args()
    raise_open_files(4 * max(args.devices, default=0) + 1024)  # broker, server and simulators: a few sockets per device
    runs, signing = [], []
    for count in args.devices:
        runs.append(measure(count, args.per_process, args.database_url, args.timeout, args.workdir))
        print(f"fan-out {count} devices: {json.dumps(runs[-1])}", file=sys.stderr, flush=True)
    for count in args.signing_devices:
        signing.append(measure_signing(count, args.database_url, args.workdir))
        print(f"signing {count} devices: {json.dumps(signing[-1])}", file=sys.stderr, flush=True)
    print(json.dumps({"runs": runs, "server_side": signing, "machine": f"{platform.machine()} {os.cpu_count()} cpus",
                      "load_average_1m": round(os.getloadavg()[0], 2)}, indent=2))


if __name__ == "__main__":
    main()
