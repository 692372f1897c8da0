"""The shared fixtures do what other tests rely on: a real broker whose state survives restarts."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from fleet_server.processes import ManagedProcess, ProcessFailedError, free_port, port_accepts, wait_until
from tests.helpers.mosquitto import MosquittoBroker


class Inbox:
    """Collects (topic, payload) pairs a paho client receives, and its subscription acks."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()

    def on_subscribe(self, *args: object) -> None:
        self.subscribed.set()

    def on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((message.topic, message.payload))

    def payloads(self) -> list[bytes]:
        with self.lock:
            return [payload for _, payload in self.messages]


def connect(broker: MosquittoBroker, client_id: str, clean_session: bool = True,
            inbox: Inbox | None = None) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session)
    connected = threading.Event()
    client.on_connect = lambda *args: connected.set()
    if inbox is not None:
        client.on_message = inbox.on_message
        client.on_subscribe = inbox.on_subscribe
    client.connect(broker.host, broker.port)
    client.loop_start()
    assert connected.wait(10), f"{client_id} could not connect to {broker.url}"
    return client


def subscribe(client: mqtt.Client, inbox: Inbox, topic: str) -> None:
    inbox.subscribed.clear()
    client.subscribe(topic, qos=1)
    assert inbox.subscribed.wait(10), f"no SUBACK for {topic}"


def publish(broker: MosquittoBroker, topic: str, payload: bytes, retain: bool = False) -> None:
    client = connect(broker, "publisher")
    client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def test_shared_broker_accepts_connections(mosquitto: MosquittoBroker) -> None:
    assert mosquitto.url == f"mqtt://127.0.0.1:{mosquitto.port}"
    inbox = Inbox()
    client = connect(mosquitto, "fixture-check", inbox=inbox)
    subscribe(client, inbox, "fixture/check")
    publish(mosquitto, "fixture/check", b"hello")
    wait_until(lambda: b"hello" in inbox.payloads(), what="the message to arrive")
    client.disconnect()
    client.loop_stop()


def test_retained_messages_and_sessions_survive_a_restart(
        mosquitto_factory: Callable[..., MosquittoBroker]) -> None:
    broker = mosquitto_factory()
    port = broker.port
    inbox = Inbox()
    subscriber = connect(broker, "persistent-device", clean_session=False, inbox=inbox)
    subscribe(subscriber, inbox, "device/directive")
    subscriber.disconnect()
    subscriber.loop_stop()

    publish(broker, "device/directive", b"queued while offline")
    publish(broker, "device/presence", b"retained", retain=True)
    broker.restart()
    assert broker.port == port and port_accepts(port)

    inbox = Inbox()
    subscriber = connect(broker, "persistent-device", clean_session=False, inbox=inbox)
    wait_until(lambda: b"queued while offline" in inbox.payloads(), what="the queued message after restart")
    subscribe(subscriber, inbox, "device/presence")
    wait_until(lambda: b"retained" in inbox.payloads(), what="the retained message after restart")
    subscriber.disconnect()
    subscriber.loop_stop()


def test_broker_kill_and_start_again(mosquitto_factory: Callable[..., MosquittoBroker]) -> None:
    broker = mosquitto_factory()
    broker.kill()
    assert not broker.running and not port_accepts(broker.port)
    broker.start()
    assert port_accepts(broker.port)


def test_managed_process_logs_and_stops_its_whole_group(tmp_path: Path) -> None:
    child_pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(child_pid_file)!r}, 'w').write(str(child.pid))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    process = ManagedProcess("sleeper", [sys.executable, "-c", script], tmp_path / "sleeper.log")
    with process:
        process.wait_for_log("ready")
        assert process in ManagedProcess.live
        child_pid = int(child_pid_file.read_text())
    assert not process.running and process not in ManagedProcess.live
    wait_until(lambda: not Path(f"/proc/{child_pid}").exists()
               or "Z" in Path(f"/proc/{child_pid}/stat").read_text().split()[2], what="the child to die")


def test_managed_process_reports_an_early_exit(tmp_path: Path) -> None:
    process = ManagedProcess("crasher", [sys.executable, "-c", "print('boom'); raise SystemExit(3)"],
                             tmp_path / "crasher.log").start()
    assert process.wait(10) == 3
    with pytest.raises(ProcessFailedError, match="exited with code 3(.|\n)*boom"):
        process.check_alive()
    process.stop()


def test_wait_until_names_what_timed_out() -> None:
    with pytest.raises(TimeoutError, match="the impossible"):
        wait_until(lambda: False, timeout=0.1, what="the impossible")
    assert wait_until(lambda: 42, timeout=0.1) == 42
    assert free_port() != free_port()
