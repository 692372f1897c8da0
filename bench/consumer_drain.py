"""Drain a Mosquitto backlog of telemetry windows with paho and with the server's ``ConsumerConnection``.

For each client and each acknowledgement mode, a persistent session subscribes to the telemetry
topics and goes away; publisher processes queue ``--windows`` encoded windows for it (QoS 1); the
client reconnects and drains them, acknowledging every message:

- ``inline``: in the message callback (paho: ``manual_ack`` and ``client.ack`` in ``on_message``,
  the bare subscriber ``bench/ingest_load.py`` measures; consumer: ``ack`` in ``on_message``);
- ``batched``: from another thread every 5 ms, as the server's telemetry writer acks after a commit.

Rate: messages per second between the first and the last message received. CPU: this process's
CPU time (every thread; the publishers and the broker are other processes) per message.
Prints one JSON object.
"""

import argparse
import json
import pickle
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT), str(ROOT / "bench")] + [entry for entry in sys.path
                                                  if Path(entry or ".").resolve() not in (ROOT, ROOT / "bench")]

import paho.mqtt.client as mqtt  # noqa: E402
from ingest import start_broker  # noqa: E402
from ingest_load import TELEMETRY_SUBSCRIPTION, encoded_windows, publish_all  # noqa: E402

from fleet_server.mqtt.broker_url import BrokerAddress  # noqa: E402
from fleet_server.mqtt.consumer import ConsumerConnection  # noqa: E402
from fleet_server.processes import LOOPBACK  # noqa: E402


class Drain:
    """Counts messages, acknowledges them inline or from a batching thread."""

    def __init__(self, count: int, batched: bool) -> None:
        self.count = count
        self.batched = batched
        self.times: list[float] = []
        self.acker: Callable[[int], None] = lambda _mid: None
        self._pending: list[int] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        if batched:
            threading.Thread(target=self._ack_batches, daemon=True).start()

    def message(self, packet_id: int) -> None:
        self.times.append(time.perf_counter())
        if self.batched:
            with self._lock:
                self._pending.append(packet_id)
        else:
            self.acker(packet_id)

    def _ack_batches(self) -> None:
        while not self._done.wait(0.005):
            with self._lock:
                batch, self._pending = self._pending, []
            for packet_id in batch:
                self.acker(packet_id)

    def wait(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while len(self.times) < self.count and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)  # the last acks
        self._done.set()
        if len(self.times) < self.count:
            raise RuntimeError(f"drained {len(self.times)} of {self.count} messages")


def paho_session(port: int, client_id: str, drain: Drain | None) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                         protocol=mqtt.MQTTv311, manual_ack=True)
    subscribed = threading.Event()
    client.on_subscribe = lambda *_: subscribed.set()
    if drain is not None:
        drain.acker = lambda mid: client.ack(mid, 1)
        client.on_message = lambda _c, _u, message: drain.message(message.mid)
    client.connect(LOOPBACK, port)
    client.loop_start()
    if drain is None:
        client.subscribe(TELEMETRY_SUBSCRIPTION, qos=1)
        subscribed.wait(10)
    return client


def consumer_session(port: int, client_id: str, drain: Drain | None) -> ConsumerConnection:
    connected = threading.Event()
    consumer = ConsumerConnection(BrokerAddress(LOOPBACK, port), client_id, [TELEMETRY_SUBSCRIPTION],
                                  clean_session=False, on_connect=connected.set)
    if drain is not None:
        drain.acker = consumer.ack
        consumer.on_message = lambda _topic, _payload, packet_id: drain.message(packet_id or 0)
    consumer.start()
    connected.wait(10)
    return consumer


def measure(kind: str, batched: bool, port: int, payloads: Path, count: int, publishers: int) -> dict[str, float]:
    client_id = f"drain-{kind}-{'batched' if batched else 'inline'}"
    if kind == "paho":
        first = paho_session(port, client_id, None)
        first.disconnect()
        first.loop_stop()
    else:
        consumer_session(port, client_id, None).stop()
    publish_all(LOOPBACK, port, payloads, count, publishers)
    drain = Drain(count, batched)
    cpu = time.process_time()
    if kind == "paho":
        client = paho_session(port, client_id, drain)
        drain.wait()
        cpu = time.process_time() - cpu
        client.disconnect()
        client.loop_stop()
    else:
        consumer = consumer_session(port, client_id, drain)
        drain.wait()
        cpu = time.process_time() - cpu
        consumer.stop()
    return {"msgs_per_s": (count - 1) / (drain.times[-1] - drain.times[0]), "cpu_us_per_msg": 1e6 * cpu / count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=10_000)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--broker-inflight", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgefleet-drain-") as work:
        workdir = Path(work)
        payloads = workdir / "payloads.pickle"
        windows = encoded_windows(args.windows, args.devices)
        payloads.write_bytes(pickle.dumps(windows))
        broker, port = start_broker(workdir, args.broker_inflight)
        try:
            results = {f"{kind}_{mode}": measure(kind, mode == "batched", port, payloads, args.windows,
                                                 args.publishers)
                       for mode in ("inline", "batched") for kind in ("paho", "consumer")}
        finally:
            broker.stop()
    output: dict[str, object] = {
        "paho_msgs_per_s": round(results["paho_inline"]["msgs_per_s"]),
        "consumer_msgs_per_s": round(results["consumer_inline"]["msgs_per_s"]),
        "paho_cpu_us_per_msg": round(results["paho_inline"]["cpu_us_per_msg"], 1),
        "consumer_cpu_us_per_msg": round(results["consumer_inline"]["cpu_us_per_msg"], 1),
        "batched_acks": {name: {key: round(value, 1) for key, value in result.items()}
                         for name, result in results.items() if name.endswith("batched")},
        "windows": args.windows, "window_bytes": round(sum(len(p) for _t, p in windows) / len(windows)),
        "broker_max_inflight": args.broker_inflight, "publishers": args.publishers,
    }
    print(json.dumps(output))


if __name__ == "__main__":
    main()
