"""Load side of ``bench/ingest.py``: pre-encoded telemetry windows, publisher processes, the bare
subscriber, and CPU accounting of process trees.

Windows are encoded once (20 features, realistic counts) and written to a file;
each publisher process reads its slice and publishes it with QoS 1 the way
devices do (telemetry spec version 2, or version 1 with ``EDGEFLEET_BENCH_TELEMETRY_WIRE=1``: the
reference run for the wire format), without paho's network thread (``publish`` writes to the socket at
once, ``loop`` reads the PUBACKs), and waits for every PUBACK.
"""

import os
import pickle
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt

from agent.binning import bin_counts, build_profile
from agent.protocol.profile import ReferenceProfile
from agent.protocol.telemetry import LATENCY_EDGES_MS, FeatureCounts, ModelRef, PredictionCounts, TelemetryWindow
from agent.protocol.telemetry_wire import encode_v1
from agent.protocol.topics import TopicKind, device_topic

FEATURES = 20
WIRE_VERSION = int(os.environ.get("EDGEFLEET_BENCH_TELEMETRY_WIRE", "2"))
PUBLISHER_INFLIGHT = 1000
TELEMETRY_SUBSCRIPTION = "edgefleet/v1/+/telemetry"


def bench_profile() -> ReferenceProfile:
    data = np.random.default_rng(0).normal(size=(5000, FEATURES))
    return build_profile(data, (data[:, 0] > 0).astype(np.int64), "input", classes=True)


def device_name(index: int) -> str:
    return f"pi-{index:05d}"  # the ids tests/fleet_server/synthetic_fleet.py inserts


def encoded_windows(count: int, devices: int, first_seq: int = 1) -> list[tuple[str, bytes]]:
    """``count`` distinct windows round-robin over ``devices`` devices, on ``bench_profile``'s bins."""
    profile = bench_profile()
    rng = np.random.default_rng(first_seq)
    edges = [np.asarray(feature.edges) for feature in profile.features]
    templates = []
    for variant in range(50):  # vary the counts without paying for a histogram per window
        data = rng.normal(size=(600, FEATURES))
        templates.append((
            FeatureCounts(profile.sha256(), tuple(tuple(int(c) for c in bin_counts(e, data[:, i]))
                                                  for i, e in enumerate(edges)), (0,) * FEATURES),
            tuple(int(c) for c in bin_counts(np.asarray(LATENCY_EDGES_MS), rng.uniform(0.8, 3.0, 600))),
            PredictionCounts(profile.predictions.kind, (0.0, 1.0), (300 + variant, 300 - variant)),
        ))
    base = time.time() - 86400
    payloads = []
    for index in range(count):
        device = device_name(index % devices)
        seq = first_seq + index // devices
        features, latencies, predictions = templates[index % len(templates)]
        window = TelemetryWindow(device, seq, base + seq * 60.0, base + seq * 60.0 + 60.0, ModelRef("bench", 1),
                                 600, 0, latencies, features, predictions)
        payloads.append((device_topic(device, TopicKind.TELEMETRY),
                         encode_v1(window) if WIRE_VERSION == 1 else window.encode()))
    return payloads


def publish_slice(host: str, port: int, path: Path, start: int, stop: int) -> None:
    """Publisher process: publish payloads ``[start, stop)`` of the file with QoS 1, wait for every PUBACK."""
    payloads = pickle.loads(path.read_bytes())[start:stop]
    acked = [0]

    def on_publish(*_args: object) -> None:
        acked[0] += 1

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{secrets.token_hex(4)}",
                         protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(PUBLISHER_INFLIGHT)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.connect(host, port)
    while not client.is_connected():
        client.loop(0.1)
    for index, (topic, payload) in enumerate(payloads):
        client.publish(topic, payload, qos=1)
        if index % 50 == 0:
            client.loop(0)
    deadline = time.monotonic() + 600
    while acked[0] < len(payloads) and time.monotonic() < deadline:
        client.loop(0.05)
    client.disconnect()
    if acked[0] < len(payloads):
        raise SystemExit(f"only {acked[0]} of {len(payloads)} publishes acknowledged")


def publish_all(host: str, port: int, path: Path, count: int, processes: int) -> float:
    """Publish the file's ``count`` payloads from ``processes`` processes at once; return msgs/s."""
    bounds = [round(count * k / processes) for k in range(processes + 1)]
    started = time.perf_counter()
    children = [subprocess.Popen([sys.executable, __file__, host, str(port), str(path), str(low), str(high)])
                for low, high in zip(bounds, bounds[1:], strict=False)]
    if any(child.wait(900) != 0 for child in children):
        raise RuntimeError("a publisher process failed")
    return count / (time.perf_counter() - started)


def bare_rate(host: str, port: int, path: Path, count: int, processes: int) -> dict[str, float]:
    """A persistent-session paho subscriber (QoS 1, acknowledges at once, does nothing else) is away while
    the publishers queue ``count`` windows for it; it reconnects and drains them."""
    received: list[float] = []
    subscribed = threading.Event()

    def subscriber() -> mqtt.Client:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-bare", clean_session=False,
                             protocol=mqtt.MQTTv311)
        client.on_subscribe = lambda *_: subscribed.set()
        client.on_message = lambda *_: received.append(time.perf_counter())
        client.connect(host, port)
        client.loop_start()
        return client

    first = subscriber()
    first.subscribe(TELEMETRY_SUBSCRIPTION, qos=1)
    subscribed.wait(10)
    first.disconnect()
    first.loop_stop()
    published = publish_all(host, port, path, count, processes)
    cpu = time.process_time()
    second = subscriber()
    deadline = time.monotonic() + 600
    while len(received) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    cpu = time.process_time() - cpu
    second.unsubscribe(TELEMETRY_SUBSCRIPTION)
    second.disconnect()
    second.loop_stop()
    if len(received) < count:
        raise RuntimeError(f"the bare subscriber got {len(received)} of {count} messages")
    return {"bare_subscriber_msgs_per_s": (count - 1) / (received[-1] - received[0]),
            "bare_subscriber_cpu_us_per_msg": 1e6 * cpu / count, "publish_msgs_per_s": published}


def tree_cpu_seconds(root: int, children: bool = True) -> float:
    """User + system CPU seconds of ``root`` and (unless not ``children``) all its live descendants, from /proc."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    total, frontier = 0.0, [root]
    while frontier:
        pid = frontier.pop()
        total += times.get(pid, 0.0)
        frontier.extend(child for child, parent in parents.items() if parent == pid and children)
    return total


if __name__ == "__main__":
    host_arg, port_arg, path_arg, low_arg, high_arg = sys.argv[1:6]
    publish_slice(host_arg, int(port_arg), Path(path_arg), int(low_arg), int(high_arg))
