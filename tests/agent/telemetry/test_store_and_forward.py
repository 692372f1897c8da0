"""Store and forward against a real Mosquitto: the device keeps serving and buffering while the
broker is down, and afterwards every window arrives, in order, with every request counted; a
queue too small for the outage evicts the oldest windows (never one the MQTT client holds, so
the windows missing are exactly the ones evicted) and the next window reports how many."""

import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from agent.inference import InferenceService, ServedModel
from agent.mqtt_link import MqttLink
from agent.protocol.messages import PresenceMessage
from agent.protocol.metadata import TensorSpec
from agent.protocol.telemetry import TelemetryWindow
from agent.protocol.topics import TopicKind, device_topic
from agent.telemetry.service import TelemetryService, TelemetrySettings

DEVICE = "saf-device"


class EchoModel:
    runtime = "onnxruntime"
    inputs = (TensorSpec("input", "float32", (None, 4)),)
    outputs = (TensorSpec("label", "int64", (None,)),)

    def predict(self, inputs: Any) -> dict[str, np.ndarray]:
        return {"label": (inputs["input"][:, 0] > 0).astype(np.int64)}


class Observer:
    """Records every telemetry window the broker delivers (persistent session: survives the restart)."""

    def __init__(self, host: str, port: int) -> None:
        self.windows: queue.Queue[TelemetryWindow] = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="saf-observer", clean_session=False,
                                  protocol=mqtt.MQTTv311)
        self.client.on_connect = lambda c, *_: c.subscribe(device_topic(DEVICE, TopicKind.TELEMETRY), qos=1)
        self.client.on_message = lambda _c, _u, m: self.windows.put(TelemetryWindow.decode(m.payload))
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect(host, port)
        self.client.loop_start()

    def drain(self) -> list[TelemetryWindow]:
        found = []
        while True:
            try:
                found.append(self.windows.get_nowait())
            except queue.Empty:
                return found

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class Device:
    def __init__(self, broker_url: str, data_dir: Path, settings: TelemetrySettings) -> None:
        self.service = InferenceService()
        self.served = ServedModel("saf-model", 1, "onnx-fp32", "c" * 64, "onnxruntime", EchoModel())
        self.service.swap(self.served)
        self.link = MqttLink(DEVICE, "credential", broker_url, on_directive=lambda payload: None,
                             offline_presence=lambda: PresenceMessage(DEVICE, online=False), reconnect_max_s=1)
        self.telemetry = TelemetryService(DEVICE, data_dir, self.link, self.service, lambda served: None, settings)
        self.link.add_connect_listener(self.telemetry.on_connected)
        self.link.add_publish_listener(self.telemetry.on_puback)
        self.requests = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        rng = np.random.default_rng(0)
        while not self._stop.is_set():
            try:
                self.service.predict({"input": rng.normal(size=(1, 4)).astype(np.float32)})
                self.requests += 1
            except Exception:
                self.failures += 1
            time.sleep(0.002)

    def start(self) -> None:
        self.link.start()
        self.telemetry.start()
        self._thread.start()

    def stop_serving(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def close(self) -> None:
        self.stop_serving()
        self.telemetry.stop()
        self.link.stop()


@pytest.fixture
def broker(mosquitto_factory: Callable[..., Any]) -> Any:
    return mosquitto_factory()


@pytest.fixture
def observer(broker: Any) -> Iterator[Observer]:
    watcher = Observer(broker.host, broker.port)
    wait_until(watcher.client.is_connected, 10, "observer connected")
    time.sleep(0.2)  # subscription in place
    yield watcher
    watcher.close()


def test_an_outage_loses_nothing_and_windows_arrive_in_order(broker: Any, observer: Observer,
                                                             tmp_path: Path) -> None:
    device = Device(broker.url, tmp_path, TelemetrySettings(window_s=0.25, max_inferences=0,
                                                            queue_max_bytes=1024 * 1024))
    device.start()
    try:
        wait_until(lambda: not observer.windows.empty(), 15, "the first window")
        broker.stop()
        queued_at_stop = device.telemetry.queue.stats().windows
        wait_until(lambda: device.telemetry.queue.stats().windows >= queued_at_stop + 8, 15,
                   "windows buffered while the broker is down")
        served_offline = device.requests
        time.sleep(0.3)
        assert device.requests > served_offline and device.failures == 0  # inference goes on
        broker.start()
        time.sleep(1.0)
        device.stop_serving()
        device.telemetry.close_window()
        wait_until(lambda: device.telemetry.queue.stats().windows == 0, 30, "the queue drained after the outage")
        wait_until(lambda: observer.windows.qsize() >= 1, 5, "windows after the restart")
        time.sleep(1.0)
        received = observer.drain()
    finally:
        device.close()
    first_arrival: list[int] = []
    for window in received:
        if window.seq not in first_arrival:
            first_arrival.append(window.seq)
    assert sorted(set(first_arrival)) == list(range(1, max(first_arrival) + 1))  # every window, none lost
    assert len(first_arrival) > 10
    assert first_arrival == sorted(first_arrival)  # in order
    counted = {window.seq: window.requests for window in received}
    assert sum(counted.values()) == device.requests  # every request in exactly one window
    assert all(window.evicted == 0 for window in received)


def test_a_queue_too_small_for_the_outage_evicts_the_oldest_and_says_so(broker: Any, observer: Observer,
                                                                        tmp_path: Path) -> None:
    device = Device(broker.url, tmp_path, TelemetrySettings(window_s=0.1, queue_max_bytes=2000))
    device.start()
    try:
        wait_until(lambda: not observer.windows.empty(), 15, "the first window")
        broker.stop()
        wait_until(lambda: device.telemetry.queue.stats().evicted_total >= 5, 20, "evictions while offline")
        broker.start()
        device.stop_serving()
        device.telemetry.close_window()
        wait_until(lambda: device.telemetry.queue.stats().windows == 0, 30, "the queue drained")
        time.sleep(1.0)
        stats = device.telemetry.queue.stats()
        received = {window.seq: window for window in observer.drain()}
    finally:
        device.close()
    missing = set(range(1, max(received) + 1)) - set(received)
    # windows paho held when the broker went away are never evicted: exactly the evicted ones are missing,
    # and every eviction is reported once
    assert 0 < len(missing) == stats.evicted_total
    assert sum(window.evicted for window in received.values()) == stats.evicted_total
    assert min(missing) > 1 and max(missing) < max(received)  # the oldest of the outage went, not the newest
