"""Telemetry ingest throughput: windows per second through Mosquitto into the server's database,
next to what a bare MQTT subscriber receives from the same broker in the same run.

1. A Mosquitto on a free loopback port (no persistence, no queue limit).
2. Bare: a paho subscriber (persistent session, QoS 1, acknowledges at once, does
   nothing else) is away while a publisher process sends N encoded windows (20
   features) from D devices; it reconnects and drains the backlog; rate = messages
   / (last - first message).
3. Server: ``edgefleet server`` on that broker (SQLite, or --database-url; plain
   subscription with its persistent session), D devices enrolled, the release's
   reference profile in its artifact store; the server is stopped, the publisher
   sends N new windows, the server starts and drains them; rate = rows / (time the
   N-th row is committed - time the first was).

Both sides consume the same kind of backlog, so the publisher's speed (and the
server's start-up) do not enter either rate. Prints one JSON
object: stored_windows_per_s, bare_subscriber_msgs_per_s, windows, database (and
details).

    .venv/bin/python bench/ingest.py [--windows 30000] [--devices 500] [--broker-inflight 20]
"""

import argparse
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import paho.mqtt.client as mqtt

from agent.binning import bin_counts, build_profile
from agent.protocol.telemetry import LATENCY_EDGES_MS, FeatureCounts, ModelRef, PredictionCounts, TelemetryWindow
from agent.protocol.topics import TopicKind, device_topic
from fleet_server.localfleet import LocalServer
from fleet_server.processes import LOOPBACK, ManagedProcess, free_port, wait_for_port

FEATURES = 20
PUBLISHER_INFLIGHT = 1000


def profile_for_bench():  # type: ignore[no-untyped-def]
    data = np.random.default_rng(0).normal(size=(5000, FEATURES))
    return build_profile(data, (data[:, 0] > 0).astype(np.int64), "input", classes=True)


def encoded_windows(count: int, devices: int, first_seq: int) -> list[tuple[str, bytes]]:
    """``count`` distinct windows round-robin over ``devices`` devices, realistic counts."""
    profile = profile_for_bench()
    rng = np.random.default_rng(first_seq)
    edges = [np.asarray(feature.edges) for feature in profile.features]
    latency = np.asarray(LATENCY_EDGES_MS)
    base = time.time() - 86400
    payloads = []
    templates = []
    for variant in range(50):  # vary the counts without paying for 30000 histograms
        data = rng.normal(size=(600, FEATURES))
        templates.append((
            FeatureCounts(profile.sha256(), tuple(tuple(int(c) for c in bin_counts(e, data[:, i]))
                                                  for i, e in enumerate(edges)), (0,) * FEATURES),
            tuple(int(c) for c in bin_counts(latency, rng.uniform(0.8, 3.0, 600))),
            PredictionCounts(profile.predictions.kind, (0.0, 1.0), (300 + variant, 300 - variant)),
        ))
    for index in range(count):
        device = f"bench-{index % devices:05d}"
        seq = first_seq + index // devices
        features, latencies, predictions = templates[index % len(templates)]
        window = TelemetryWindow(device, seq, base + seq * 60.0, base + seq * 60.0 + 60.0, ModelRef("bench", 1),
                                 600, 0, latencies, features, predictions)
        payloads.append((device_topic(device, TopicKind.TELEMETRY), window.encode()))
    return payloads


def publish(host: str, port: int, count: int, devices: int, first_seq: int) -> None:
    """Publisher process: build the windows, then publish them all with QoS 1 and wait for every PUBACK.

    paho runs without its network thread here: ``publish`` then writes to the socket at once and
    ``loop`` reads the PUBACKs, which is several times faster than handing every packet to a
    loop thread."""
    payloads = encoded_windows(count, devices, first_seq)
    acked = [0]

    def on_publish(_client, _userdata, _mid, _reason, _properties) -> None:  # type: ignore[no-untyped-def]
        acked[0] += 1

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{secrets.token_hex(3)}",
                         protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(PUBLISHER_INFLIGHT)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.connect(host, port)
    while not client.is_connected():
        client.loop(0.1)
    started = time.time()
    for index, (topic, payload) in enumerate(payloads):
        client.publish(topic, payload, qos=1)
        if index % 50 == 0:
            client.loop(0)
    deadline = time.monotonic() + 600
    while acked[0] < count and time.monotonic() < deadline:
        client.loop(0.05)
    print(json.dumps({"started": started, "acked": time.time(), "bytes": sum(len(p) for _, p in payloads) / count}),
          flush=True)
    client.disconnect()


def run_publisher(host: str, port: int, count: int, devices: int, first_seq: int) -> dict[str, float]:
    result = subprocess.run([sys.executable, __file__, "--publish", host, str(port), str(count), str(devices),
                             str(first_seq)], capture_output=True, text=True, timeout=900, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def start_broker(directory: Path, inflight: int) -> tuple[ManagedProcess, int]:
    port = free_port()
    config = directory / "mosquitto.conf"
    lines = [f"listener {port} {LOOPBACK}", "allow_anonymous true", "persistence false", "max_queued_messages 0",
             f"max_inflight_messages {inflight}", "log_dest stderr", "log_type error", "log_type warning"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        lines.append("user root")
    config.write_text("\n".join(lines) + "\n")
    broker = ManagedProcess("bench-mosquitto", ["/usr/sbin/mosquitto", "-c", config], directory / "mosquitto.log")
    broker.start()
    wait_for_port(port, LOOPBACK, 15, broker)
    return broker, port


def bare_rate(port: int, count: int, devices: int) -> float:
    """A persistent-session subscriber drains a backlog of ``count`` windows queued while it was away."""
    received: list[float] = []
    subscribed = threading.Event()

    def subscriber() -> mqtt.Client:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-bare", clean_session=False,
                             protocol=mqtt.MQTTv311)
        client.on_subscribe = lambda *_: subscribed.set()
        client.on_message = lambda *_: received.append(time.perf_counter())
        client.connect(LOOPBACK, port)
        client.loop_start()
        return client

    first = subscriber()
    first.subscribe("edgefleet/v1/+/telemetry", qos=1)
    subscribed.wait(10)
    first.disconnect()
    first.loop_stop()
    run_publisher(LOOPBACK, port, count, devices, first_seq=1)  # queued by the broker for the subscriber
    second = subscriber()
    deadline = time.monotonic() + 600
    while len(received) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    second.disconnect()
    second.loop_stop()
    if len(received) < count:
        raise RuntimeError(f"the bare subscriber got {len(received)} of {count} messages")
    return (count - 1) / (received[-1] - received[0])


def stored_rate(workdir: Path, port: int, count: int, devices: int, database_url: str | None) -> tuple[float, str]:
    """The server drains a backlog of ``count`` windows queued for its persistent session while it was down."""
    server = LocalServer(workdir / "server", bootstrap_token=secrets.token_urlsafe(16),
                         admin_token=secrets.token_urlsafe(24), mqtt_url=f"mqtt://{LOOPBACK}:{port}",
                         extra_env={"EDGEFLEET_MONITOR_INTERVAL_S": "3600", "EDGEFLEET_LOG_LEVEL": "warning",
                                    "EDGEFLEET_MQTT_SHARED_SUBSCRIPTION": "false",
                                    **({"EDGEFLEET_DATABASE_URL": database_url} if database_url else {})})
    server.start()
    try:
        with httpx.Client(base_url=f"{server.url}/api/v1", timeout=30) as http:
            for index in range(devices):
                body = {"device_id": f"bench-{index:05d}", "bootstrap_token": server.bootstrap_token,
                        "arch": "aarch64", "ram_mb": 1024, "runtimes": ["onnxruntime"], "tags": ["bench"]}
                response = http.post("/devices/enroll", json=body)
                if response.status_code not in (200, 201):
                    raise RuntimeError(f"enrolling failed: {response.status_code} {response.text}")
        profile = profile_for_bench()
        stored = workdir / "server" / "artifacts" / profile.sha256()[:2] / profile.sha256()
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.write_bytes(profile.to_bytes())
        server.stop()
        run_publisher(LOOPBACK, port, count, devices, first_seq=10_000)  # queued for the server's session
        counter = _row_counter(workdir / "server" / "edgefleet.db", database_url)
        server.start()
        deadline = time.monotonic() + 900
        first_at, first_count = None, 0
        while (stored_now := counter()) < count:
            if first_at is None and stored_now > 0:
                first_at, first_count = time.perf_counter(), stored_now
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {stored_now} of {count} windows stored in time")
            time.sleep(0.02)
        finished = time.perf_counter()
        if first_at is None:
            raise RuntimeError("every window was stored before the first poll; use more --windows")
        return (count - first_count) / (finished - first_at), "postgresql" if database_url else "sqlite"
    finally:
        server.stop()


def stage_costs(workdir: Path, devices: int, count: int = 3000) -> dict[str, float]:
    """Microseconds per window of the writer's two stages, in this process on a scratch SQLite database:
    decoding and validating, and storing (row building + one transaction per 1000 windows)."""
    import logging

    from sqlmodel import Session

    from fleet_server.core.db import create_db_engine
    from fleet_server.core.schema import upgrade_schema
    from fleet_server.models.device import Device
    from fleet_server.services.telemetry_store import TelemetryStore

    logging.disable(logging.WARNING)
    engine = create_db_engine(f"sqlite:///{workdir / 'stages.db'}")
    upgrade_schema(engine)
    with Session(engine) as session:
        for index in range(devices):
            session.add(Device(device_id=f"bench-{index:05d}", credential_hash=f"{index:064d}", arch="x", ram_mb=1))
        session.commit()
    payloads = [payload for _, payload in encoded_windows(count, devices, first_seq=1)]
    started = time.perf_counter()
    windows = [TelemetryWindow.decode(payload) for payload in payloads]
    decoded = time.perf_counter()
    store = TelemetryStore(engine)
    for offset in range(0, count, 1000):
        store.store(windows[offset:offset + 1000])
    stored = time.perf_counter()
    engine.dispose()
    logging.disable(logging.NOTSET)
    return {"decode_us_per_window": round(1e6 * (decoded - started) / count, 1),
            "store_us_per_window": round(1e6 * (stored - decoded) / count, 1)}


def _row_counter(sqlite_path: Path, database_url: str | None):  # type: ignore[no-untyped-def]
    if database_url:
        from sqlalchemy import create_engine, text

        engine = create_engine(database_url)
        return lambda: engine.connect().execute(text("SELECT COUNT(*) FROM telemetry_window")).scalar_one()

    def count() -> int:
        with sqlite3.connect(sqlite_path, timeout=30) as connection:
            return int(connection.execute("SELECT COUNT(*) FROM telemetry_window").fetchone()[0])
    return count


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--publish":
        host, port, count, devices, first_seq = sys.argv[2:7]
        publish(host, int(port), int(count), int(devices), int(first_seq))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=30_000)
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--broker-inflight", type=int, default=20,
                        help="Mosquitto max_inflight_messages (20 is its default)")
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL (default: the server's SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-ingest-") as directory:
        workdir = Path(directory)
        broker, port = start_broker(workdir, args.broker_inflight)
        try:
            bare = bare_rate(port, args.windows, args.devices)
            stored, database = stored_rate(workdir, port, args.windows, args.devices, args.database_url)
            stages = stage_costs(workdir, args.devices)
        finally:
            broker.stop()
    print(json.dumps({
        "stored_windows_per_s": round(stored),
        "bare_subscriber_msgs_per_s": round(bare),
        "windows": args.windows,
        "database": database,
        "devices": args.devices,
        "broker_max_inflight": args.broker_inflight,
        "window_bytes": len(encoded_windows(1, 1, 1)[0][1]),
        **stages,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
