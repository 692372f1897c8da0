"""Monitor passes over stored telemetry: drift (device and cohorts, N of M buckets), latency
regression, error rate, missed heartbeats; alerts resolve when the condition clears; webhooks and
the continuous-training hook are delivered with retries; the query API, drift list and /metrics."""

import math
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import Session

from agent.protocol.profile import ReferenceProfile
from agent.protocol.telemetry import ModelRef, TelemetryWindow
from fleet_server.models.device import Device
from fleet_server.services.telemetry_store import TelemetryStore
from tests.fleet_server.conftest import Api
from tests.fleet_server.mqtt_client import wait_for
from tests.fleet_server.telemetry_helpers import make_profile, make_window
from tests.fleet_server.webhook_server import WebhookServer, webhook_server

BUCKET_S = 10
SETTINGS = dict(monitor_interval_s=3600, drift_bucket_s=BUCKET_S, drift_windows=3, drift_alert_windows=2,
                drift_min_samples=200, latency_window_s=60, latency_baseline_s=600, latency_min_requests=50,
                error_min_requests=20, offline_after_s=120, webhook_retry_base_s=0.2, webhook_retry_max_s=0.5,
                webhook_max_attempts=3)


@pytest.fixture
def hooks() -> Iterator[WebhookServer]:
    with webhook_server() as server:
        yield server


@pytest.fixture
def api(api_factory: Callable[..., Api], hooks: WebhookServer) -> Api:
    return api_factory(alert_webhooks=f"{hooks.url}/alerts", retrain_webhook=f"{hooks.url}/retrain?token=s3cret",
                       **SETTINGS)


class Fleet:
    def __init__(self, api: Api, profile: ReferenceProfile) -> None:
        self.api = api
        self.profile = profile
        self.store = TelemetryStore(api.runtime.engine, api.runtime.artifacts)
        self.seq: dict[str, int] = {}
        path = api.runtime.artifacts.path_for(profile.sha256())
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(profile.to_bytes())

    def enroll(self, device_id: str, *tags: str) -> None:
        assert self.api.enroll(device_id, tags=tags).status_code == 201

    def send(self, device_id: str, start: float, **kwargs: Any) -> TelemetryWindow:
        self.seq[device_id] = self.seq.get(device_id, 0) + 1
        window = make_window(device_id, self.seq[device_id], start, self.profile, seed=hash((device_id, start)) % 2**32,
                             **kwargs)
        assert self.store.store([window]).stored == 1
        return window

    def monitor(self, at: float) -> list[Any]:
        return self.api.runtime.monitor.run_once(datetime.fromtimestamp(at, UTC))

    def alerts(self, **params: Any) -> list[dict[str, Any]]:
        response = self.api.get("/alerts", params=params)
        assert response.status_code == 200, response.text
        return response.json()


def base_time() -> float:
    return math.floor(time.time() / BUCKET_S) * BUCKET_S - 100 * BUCKET_S


def test_injected_drift_alerts_the_device_and_its_cohorts_and_calls_the_webhooks(api: Api, hooks: WebhookServer,
                                                                                 database_backend: str) -> None:
    fleet = Fleet(api, make_profile())
    drifting, steady = f"drift-a-{database_backend}", f"drift-b-{database_backend}"
    fleet.enroll(drifting, "line-1")
    fleet.enroll(steady, "line-1")
    t0 = base_time()
    for bucket in range(3):
        fleet.send(drifting, t0 + bucket * BUCKET_S + 1, shift=1.5)
        fleet.send(steady, t0 + bucket * BUCKET_S + 1)
    conditions = fleet.monitor(t0 + 2 * BUCKET_S + 5)
    firing = {(a["scope"], a["subject"]) for a in fleet.alerts(state="firing", kind="drift")}
    assert firing == {("device", drifting), ("cohort", "line-1"), ("cohort", "*")}, conditions
    device_alert = next(a for a in fleet.alerts(kind="drift") if a["scope"] == "device")
    assert device_alert["model_name"] == "tele-model" and device_alert["model_version"] == 1
    assert device_alert["details"]["drifted_buckets"] >= 2 and device_alert["details"]["top_features"]
    wait_for(lambda: len(hooks.events("/alerts")) == 3 and len(hooks.events("/retrain?token=s3cret")) == 1, 15,
             "3 alert webhooks and 1 retraining call")
    retrain = hooks.events("/retrain?token=s3cret")[0]
    assert retrain["model"] == {"name": "tele-model", "version": 1}
    assert {cohort["tag"] for cohort in retrain["cohorts"]} == {"line-1", "*"}
    assert {event["subject"] for event in hooks.events("/alerts")} == {drifting, "line-1", "*"}
    wait_for(lambda: all(d["state"] == "delivered" for a in fleet.alerts(kind="drift") for d in a["deliveries"]), 10,
             "delivery states recorded")
    shown = api.get(f"/alerts/{device_alert['id']}").json()
    assert [d["target"] for d in shown["deliveries"]] == [f"{hooks.url}/alerts"]
    assert all("s3cret" not in d["target"] for a in fleet.alerts() for d in a["deliveries"])

    evaluations = api.get("/telemetry/drift", params={"scope": "device", "subject": drifting}).json()
    assert len(evaluations) == 3 and all(e["drifted"] for e in evaluations)
    assert evaluations[0]["drift_score"] > 0.05 and evaluations[0]["details"]["top"]
    steady_evaluations = api.get("/telemetry/drift", params={"scope": "device", "subject": steady}).json()
    assert steady_evaluations and not any(e["drifted"] for e in steady_evaluations)

    # the device returns to the reference distribution: the drifted buckets slide out, the alerts resolve
    for bucket in range(3, 6):
        fleet.send(drifting, t0 + bucket * BUCKET_S + 1)
        fleet.send(steady, t0 + bucket * BUCKET_S + 1)
    fleet.monitor(t0 + 5 * BUCKET_S + 5)
    assert fleet.alerts(state="firing", kind="drift") == []
    assert {a["state"] for a in fleet.alerts(kind="drift")} == {"resolved"}
    wait_for(lambda: sum(e["event"] == "resolved" for e in hooks.events("/alerts")) == 3, 15, "resolved events")


def test_reference_traffic_over_many_buckets_raises_no_alert(api: Api, hooks: WebhookServer,
                                                             database_backend: str) -> None:
    fleet = Fleet(api, make_profile())
    devices = [f"calm-{index}-{database_backend}" for index in range(3)]
    for device_id in devices:
        fleet.enroll(device_id, "calm")
    t0 = base_time()
    for bucket in range(25):
        for device_id in devices:
            fleet.send(device_id, t0 + bucket * BUCKET_S + 1)
        fleet.monitor(t0 + bucket * BUCKET_S + 5)
    assert fleet.alerts() == []
    evaluations = api.get("/telemetry/drift", params={"limit": 1000}).json()
    assert len(evaluations) >= 25 * 5 and not any(e["drifted"] for e in evaluations)
    assert hooks.events() == []


def test_latency_error_rate_and_offline_alerts_fire_and_resolve(api: Api, database_backend: str) -> None:
    fleet = Fleet(api, make_profile())
    slow, failing, gone = (f"{name}-{database_backend}" for name in ("slow", "failing", "gone"))
    for device_id in (slow, failing, gone):
        fleet.enroll(device_id)
    now = time.time()
    for minute in range(10, 1, -1):  # baseline: 1 ms
        fleet.send(slow, now - minute * 60, latency_ms=1.0)
    fleet.send(slow, now - 30, latency_ms=5.0)  # recent: 5 ms
    fleet.send(failing, now - 30, errors=60)
    with Session(api.runtime.engine) as session:
        device = session.get(Device, gone)
        assert device is not None
        device.last_seen = datetime.now(UTC) - timedelta(minutes=5)
        session.add(device)
        session.commit()
    fleet.monitor(now)
    firing = {(a["kind"], a["subject"]) for a in fleet.alerts(state="firing")}
    assert firing == {("latency", slow), ("error_rate", failing), ("offline", gone)}
    latency = fleet.alerts(kind="latency")[0]
    assert latency["details"]["p95_ms"] > 2 * latency["details"]["baseline_p95_ms"]
    # a minute later the recent range holds only healthy windows, the device came back
    fleet.send(slow, now + 40, latency_ms=1.0)
    fleet.send(failing, now + 40, errors=0)
    with Session(api.runtime.engine) as session:
        device = session.get(Device, gone)
        assert device is not None
        device.last_seen = datetime.now(UTC) + timedelta(seconds=60)
        session.add(device)
        session.commit()
    fleet.monitor(now + 95)
    assert fleet.alerts(state="firing") == []
    assert len(fleet.alerts(state="resolved")) == 3


def test_a_failing_webhook_is_retried_with_backoff_until_delivered(api_factory: Callable[..., Api],
                                                                  database_backend: str) -> None:
    with webhook_server(fail_first=2) as flaky:
        api = api_factory(alert_webhooks=flaky.url, **SETTINGS)
        fleet = Fleet(api, make_profile())
        device_id = f"flaky-{database_backend}"
        fleet.enroll(device_id)
        with Session(api.runtime.engine) as session:
            device = session.get(Device, device_id)
            assert device is not None
            device.last_seen = datetime.now(UTC) - timedelta(hours=1)
            session.add(device)
            session.commit()
        fleet.monitor(time.time())
        wait_for(lambda: fleet.alerts()[0]["deliveries"][0]["state"] == "delivered", 20, "delivered after retries")
        delivery = fleet.alerts()[0]["deliveries"][0]
        assert delivery["attempts"] == 3 and len(flaky.events()) == 1


def test_series_summary_and_metrics(api: Api, database_backend: str) -> None:
    fleet = Fleet(api, make_profile())
    one, two = f"series-1-{database_backend}", f"series-2-{database_backend}"
    fleet.enroll(one, "north")
    fleet.enroll(two, "south")
    now = time.time()
    fleet.send(one, now - 50, errors=3)
    fleet.send(one, now - 20)
    fleet.send(two, now - 20, model=ModelRef("tele-model", 2))
    series = api.get(f"/telemetry/devices/{one}", params={"bucket_s": 3600}).json()
    assert sum(p["requests"] for p in series["points"]) == 600
    assert sum(p["errors"] for p in series["points"]) == 3
    assert all(p["latency_p95_ms"] is not None for p in series["points"])
    cohort = api.get("/telemetry/models/tele-model", params={"tag": "south", "bucket_s": 3600}).json()
    assert sum(p["requests"] for p in cohort["points"]) == 300
    version = api.get("/telemetry/models/tele-model", params={"version": 1, "bucket_s": 3600}).json()
    assert sum(p["windows"] for p in version["points"]) == 2
    summary = api.get("/telemetry/summary").json()
    assert summary["devices_reporting"] == 2 and summary["requests"] == 900
    assert {(m["name"], m["version"]) for m in summary["models"]} == {("tele-model", 1), ("tele-model", 2)}
    assert api.get("/telemetry/devices/nobody").status_code == 404
    assert api.get(f"/telemetry/devices/{one}", params={"start": "2030-01-01T00:00:00Z",
                                                        "end": "2029-01-01T00:00:00Z"}).status_code == 422
    assert api.get(f"/telemetry/devices/{one}", params={"bucket_s": 1, "start": "2000-01-01T00:00:00Z"}
                   ).status_code == 422
    response = api.client.get("/metrics", headers=api.headers)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    lines = response.text.splitlines()
    assert "# TYPE edgefleet_devices gauge" in lines
    assert 'edgefleet_model_requests_5m{model="tele-model",version="1"} 600' in lines
    assert 'edgefleet_alerts_firing{kind="drift"} 0' in lines
    assert api.client.get("/metrics").status_code == 401
    assert api.get("/alerts", params={"state": "bogus"}).status_code == 422
    assert api.get("/alerts/999999").status_code == 404
