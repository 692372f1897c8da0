"""Rollouts through the API and the controller, tick by tick on a chosen clock.

The app's own controller is stopped; a test controller ticks at explicit
times, and device reports are recorded as the MQTT bridge records them
(``ingest.record_status``), so every step is deterministic. Runs on SQLite
and PostgreSQL.
"""

import itertools
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlmodel import Session, select

from agent.protocol.canonical import parse_json
from agent.protocol.telemetry import LATENCY_EDGES_MS
from fleet_server.core.types import utcnow
from fleet_server.models.deployment import DeploymentTarget
from fleet_server.models.telemetry import TelemetryWindowRecord
from fleet_server.rollouts import lease
from fleet_server.rollouts.controller import ControllerSettings, RolloutController
from tests.fleet_server.conftest import Api
from tests.fleet_server.deployment_rows import report_rollout_status

_names = itertools.count(1)


class Fleet:
    """Devices of one test, a test controller and a clock that only moves when told."""

    def __init__(self, api: Api, controller: RolloutController, size: int, **enroll: object) -> None:
        self.api = api
        self.controller = controller
        self.tag = f"fleet-{next(_names)}"
        self.ids = [f"{self.tag}-d{index:02d}" for index in range(size)]
        for device_id in self.ids:
            assert api.enroll(device_id, tags=(self.tag,), **enroll).status_code == 201
        self.now = utcnow()

    def create(self, release: dict, **body: object) -> dict:
        payload = {"release": {"name": release["name"], "version": release["version"]},
                   "target": {"tags": [self.tag]}, **body}
        response = self.api.post("/rollouts", json=payload)
        assert response.status_code == 201, response.text
        return response.json()

    def tick(self, seconds: float = 0.0) -> dict:
        self.now += timedelta(seconds=seconds)
        assert self.controller.tick(self.now)
        return self.api.get(f"/rollouts/{self.rollout_id}").json()

    @property
    def rollout_id(self) -> int:
        return self.api.get("/rollouts", params={"limit": 1}).json()[0]["id"]

    def report(self, device_id: str, state: str, reason: str | None = None) -> None:
        report_rollout_status(self.api.runtime.engine, device_id, state, self.now.timestamp(), reason)

    def directives(self, device_id: str) -> list[dict]:
        with Session(self.api.runtime.engine) as session:
            rows = session.exec(select(DeploymentTarget).where(DeploymentTarget.device_id == device_id)
                                .order_by(DeploymentTarget.sequence))  # type: ignore[arg-type]
            return [parse_json(row.directive)["signed"] for row in rows]

    def statuses(self, rollout: dict) -> dict[str, str]:
        return {device["device_id"]: device["status"] for device in rollout["device_details"]}


@pytest.fixture(scope="module")
def controller(api: Api) -> Iterator[RolloutController]:
    api.runtime.rollouts.stop()  # the test drives the ticks
    runtime = api.runtime
    controller = RolloutController(runtime.engine, runtime.keyring, runtime.publisher, "test-controller",
                                   ControllerSettings(tick_s=3600, lease_ttl_s=3600, health_interval_s=0.0))
    yield controller


def fleet(api: Api, controller: RolloutController, size: int, **enroll: object) -> Fleet:
    return Fleet(api, controller, size, **enroll)


def test_phases_notify_in_order_bake_and_succeed(api: Api, controller: RolloutController) -> None:
    devices = fleet(api, controller, 10)
    release = api.released_model(f"phased-{devices.tag}")
    created = devices.create(release, phases=[{"share": 0.1, "bake_s": 30}, {"share": 0.5, "bake_s": 30},
                                              {"share": 1.0, "bake_s": 0}])
    assert created["state"] == "running" and [p["size"] for p in created["phase_details"]] == [1, 5, 10]
    assert created["devices"] == {"pending": 10}

    rollout = devices.tick()
    first = [d for d, status in devices.statuses(rollout).items() if status == "notified"]
    assert len(first) == 1
    directive = devices.directives(first[0])[-1]
    assert directive["action"] == "install" and directive["release"]["name"] == release["name"]
    expires = datetime.fromisoformat(directive["expires"].replace("Z", "+00:00"))
    assert expires - datetime.fromisoformat(directive["issued"].replace("Z", "+00:00")) == timedelta(seconds=600)

    devices.report(first[0], "downloading")
    assert devices.tick(5)["phase_details"][0]["state"] == "active"
    devices.report(first[0], "succeeded")
    rollout = devices.tick(1)
    assert rollout["phase_details"][0]["state"] == "baking" and rollout["current_phase"] == 0
    assert devices.tick(29)["current_phase"] == 0  # still baking
    rollout = devices.tick(1)
    assert rollout["current_phase"] == 1 and rollout["phase_details"][0]["state"] == "completed"
    second = [d for d, status in devices.statuses(rollout).items() if status == "notified"]
    assert len(second) == 4
    for device_id in second:
        devices.report(device_id, "succeeded")
    assert devices.tick(1)["phase_details"][1]["state"] == "baking"
    third = [d for d, status in devices.statuses(devices.tick(30)).items() if status == "notified"]
    assert len(third) == 5 and not set(third) & set(second + first)
    for device_id in third:
        devices.report(device_id, "succeeded")
    rollout = devices.tick(1)
    assert rollout["state"] == "succeeded" and rollout["devices"] == {"succeeded": 10}
    assert all(len(devices.directives(device_id)) == 1 for device_id in devices.ids)  # notified exactly once


def test_failures_abort_in_phase_one_and_never_reach_phase_two(api: Api, controller: RolloutController) -> None:
    devices = fleet(api, controller, 10)
    release = api.released_model(f"failing-{devices.tag}")
    devices.create(release, phases=[{"share": 0.2, "bake_s": 0}, {"share": 1.0}])
    rollout = devices.tick()
    first = [d for d, status in devices.statuses(rollout).items() if status == "notified"]
    assert len(first) == 2
    devices.report(first[0], "rolled_back", "HealthCheckError: sample inference failed")
    rollout = devices.tick(1)
    assert rollout["state"] == "rolling_back"  # the second phase-1 device may still install: then it is rolled back
    assert "install failure rate 50% (1 of 2 devices)" in rollout["reason"]
    assert rollout["devices"] == {"failed": 1, "notified": 1, "skipped": 8}
    devices.report(first[1], "rolled_back", "HealthCheckError")
    rollout = devices.tick(1)
    assert rollout["state"] == "aborted"  # nobody kept the release: nothing to roll back
    assert "HealthCheckError" in rollout["reason"]
    assert rollout["phase_details"][1]["started_at"] is None
    assert sum(len(devices.directives(device_id)) for device_id in devices.ids) == 2


def _window(device_id: str, start: datetime, requests: int, errors: int, model: dict | None = None,
            shadow: dict | None = None) -> TelemetryWindowRecord:
    latency = [0] * (len(LATENCY_EDGES_MS) + 1)
    latency[3] = requests - errors
    return TelemetryWindowRecord(
        device_id=device_id, window_start=start, seq=int(start.timestamp() * 1000), window_end=start, requests=requests,
        errors=errors, latency_counts=latency, model_name=(model or {}).get("name"),
        model_version=(model or {}).get("version"), shadow=shadow)


def store_windows(api: Api, windows: list[TelemetryWindowRecord]) -> None:
    with Session(api.runtime.engine) as session:
        session.add_all(windows)
        session.commit()


def test_an_error_rate_regression_aborts_and_rolls_back(api: Api, controller: RolloutController) -> None:
    devices = fleet(api, controller, 4)
    release = api.released_model(f"erring-{devices.tag}")
    store_windows(api, [_window(device_id, devices.now - timedelta(minutes=10), 100, 0) for device_id in devices.ids])
    devices.create(release, phases=[{"share": 0.5, "bake_s": 60}, {"share": 1.0}],
                   criteria={"max_error_rate_increase": 0.05, "min_requests": 20})
    rollout = devices.tick()
    took = [d for d, status in devices.statuses(rollout).items() if status == "notified"]
    for device_id in took:
        devices.report(device_id, "succeeded")
    rollout = devices.tick(1)
    assert rollout["phase_details"][0]["state"] == "baking"
    store_windows(api, [_window(took[0], devices.now + timedelta(seconds=1), 50, 20, release),
                        _window(took[1], devices.now + timedelta(seconds=1), 50, 0, release)])
    rollout = devices.tick(5)
    assert rollout["state"] == "rolling_back"
    assert "health regression on 1 of 2 devices" in rollout["reason"]
    assert "error rate 0.0% -> 40.0%" in rollout["reason"]
    for device_id in took:
        assert devices.directives(device_id)[-1]["action"] == "rollback"
        devices.report(device_id, "rolled_back")
    rollout = devices.tick(1)
    assert rollout["state"] == "rolled_back"
    assert devices.statuses(rollout) == {**{d: "skipped" for d in devices.ids}, **{d: "rolled_back" for d in took}}


def test_pause_holds_and_resume_continues(api: Api, controller: RolloutController) -> None:
    devices = fleet(api, controller, 4)
    release = api.released_model(f"paused-{devices.tag}")
    created = devices.create(release, phases=[{"share": 0.25, "bake_s": 0}, {"share": 1.0, "bake_s": 0}])
    first = next(d for d, status in devices.statuses(devices.tick()).items() if status == "notified")
    assert api.post(f"/rollouts/{created['id']}/pause").json()["state"] == "paused"
    devices.report(first, "succeeded")
    rollout = devices.tick(60)
    assert rollout["state"] == "paused" and rollout["current_phase"] == 0
    assert devices.statuses(rollout)[first] == "succeeded"  # reports still count
    assert api.post(f"/rollouts/{created['id']}/pause").status_code == 409
    assert api.post(f"/rollouts/{created['id']}/resume").json()["state"] == "running"
    rollout = devices.tick()
    assert rollout["current_phase"] == 1
    assert sorted(devices.statuses(rollout).values()) == ["notified"] * 3 + ["succeeded"]


def test_offline_devices_are_pending_retried_then_timed_out(api: Api, controller: RolloutController) -> None:
    devices = fleet(api, controller, 2)
    release = api.released_model(f"offline-{devices.tag}")
    devices.create(release, phases=[{"share": 1.0, "bake_s": 0, "success_threshold": 0.5}], device_timeout_s=30,
                   max_retries=1, retry_backoff_s=10)
    online, offline = devices.ids
    devices.tick()
    devices.report(online, "succeeded")
    rollout = devices.tick(29)
    assert devices.statuses(rollout)[offline] == "notified" and rollout["state"] == "running"
    rollout = devices.tick(1)
    assert devices.statuses(rollout)[offline] == "pending"
    assert "retrying in 10s" in next(d["reason"] for d in rollout["device_details"] if d["device_id"] == offline)
    assert devices.statuses(devices.tick(9))[offline] == "pending"
    assert devices.statuses(devices.tick(1))[offline] == "notified"
    assert [d["sequence"] for d in devices.directives(offline)] == [1, 2]
    rollout = devices.tick(30)
    assert devices.statuses(rollout)[offline] == "timed_out"
    assert rollout["state"] == "succeeded"  # the phase's 50 % threshold was met; offline does not block


def test_incompatible_devices_are_reported_and_never_notified(api: Api, controller: RolloutController) -> None:
    devices = fleet(api, controller, 2)
    lite = f"{devices.tag}-lite"
    assert api.enroll(lite, tags=(devices.tag,), runtimes=["tflite"]).status_code == 201
    release = api.released_model(f"compat-{devices.tag}")  # ONNX only
    created = devices.create(release, phases=[{"share": 1.0, "bake_s": 0}])
    assert devices.statuses(created)[lite] == "incompatible"
    assert "no variant" in next(d["reason"] for d in created["device_details"] if d["device_id"] == lite)
    for device_id in devices.ids:
        devices.tick()
        devices.report(device_id, "succeeded")
    assert devices.tick(1)["state"] == "succeeded"
    assert devices.directives(lite) == []
    assert api.get(f"/devices/{lite}").json()["directive_sequence"] == 0


def test_operator_rollback_and_abort(api: Api, controller: RolloutController) -> None:
    devices = fleet(api, controller, 3)
    release = api.released_model(f"manual-{devices.tag}")
    created = devices.create(release, phases=[{"count": 1, "bake_s": 100}, {"share": 1.0}])
    first = next(d for d, status in devices.statuses(devices.tick()).items() if status == "notified")
    devices.report(first, "succeeded")
    devices.tick(1)
    rolled = api.post(f"/rollouts/{created['id']}/rollback").json()
    assert rolled["state"] == "rolling_back" and rolled["reason"].startswith("rolled back by")
    assert rolled["devices"] == {"succeeded": 1, "skipped": 2}
    devices.tick()
    assert devices.directives(first)[-1]["action"] == "rollback"
    devices.report(first, "rolled_back")
    assert devices.tick(1)["state"] == "rolled_back"
    assert api.post(f"/rollouts/{created['id']}/abort").status_code == 409

    draft = devices.create(release, start=False)
    assert draft["state"] == "draft" and devices.tick()["devices"] == {"pending": 3}
    aborted = api.post(f"/rollouts/{draft['id']}/abort").json()
    assert aborted["state"] == "aborted" and aborted["devices"] == {"skipped": 3}


def test_shadow_rollout_promote_and_drop(api: Api, controller: RolloutController) -> None:
    devices = fleet(api, controller, 2)
    candidate = api.released_model(f"shadow-{devices.tag}")
    created = devices.create(candidate, action="shadow", phases=[{"share": 1.0, "bake_s": 0}])
    devices.tick()
    assert {devices.directives(d)[-1]["action"] for d in devices.ids} == {"shadow"}
    for device_id in devices.ids:
        devices.report(device_id, "succeeded")
    assert devices.tick(1)["state"] == "succeeded"
    section = {"candidate": {"name": candidate["name"], "version": candidate["version"]}, "compared": 30,
               "agreement": 0.9, "serving_p50_ms": 2.0, "candidate_p50_ms": 4.0}
    store_windows(api, [_window(devices.ids[0], devices.now, 30, 0, shadow=section),
                        _window(devices.ids[1], devices.now, 10, 0, shadow={**section, "compared": 10,
                                                                             "agreement": 0.5})])
    shadow = api.get(f"/rollouts/{created['id']}/shadow").json()
    assert shadow["devices_running"] == 2 and shadow["devices_reporting"] == 2 and shadow["compared"] == 40
    assert shadow["agreement"] == pytest.approx(0.8) and shadow["candidate_p50_ms"] == pytest.approx(4.0)

    promoted = api.post(f"/rollouts/{created['id']}/promote", json={"phases": [{"share": 1.0, "bake_s": 0}]})
    assert promoted.status_code == 201, promoted.text
    assert promoted.json()["source_rollout_id"] == created["id"] and promoted.json()["action"] == "install"
    devices.tick()
    assert {devices.directives(d)[-1]["action"] for d in devices.ids} == {"install"}

    again = devices.create(candidate, action="shadow", phases=[{"share": 1.0, "bake_s": 0}])
    devices.tick()
    for device_id in devices.ids:
        devices.report(device_id, "succeeded")
    devices.tick(1)
    assert api.post(f"/rollouts/{again['id']}/drop").json()["state"] == "rolling_back"
    devices.tick()
    assert {devices.directives(d)[-1]["action"] for d in devices.ids} == {"drop_shadow"}
    for device_id in devices.ids:
        devices.report(device_id, "succeeded")
    assert devices.tick(1)["state"] == "rolled_back"
    assert api.post(f"/rollouts/{promoted.json()['id']}/drop").status_code == 409  # not a shadow rollout


def test_ab_cohorts_get_their_release_and_telemetry_side_by_side(api: Api, controller: RolloutController) -> None:
    devices = fleet(api, controller, 4)
    a = api.released_model(f"ab-{devices.tag}")
    b = api.released_model(f"ab-{devices.tag}")
    created = devices.create(a, release_b={"name": b["name"], "version": b["version"]}, b_share=0.5,
                             phases=[{"share": 1.0, "bake_s": 0}])
    cohort = {d["device_id"]: d["cohort"] for d in created["device_details"]}
    assert sorted(cohort.values()) == ["a", "a", "b", "b"]
    devices.tick()
    for device_id in devices.ids:
        expected = a if cohort[device_id] == "a" else b
        assert devices.directives(device_id)[-1]["release"]["version"] == expected["version"]
    windows = [_window(device_id, devices.now + timedelta(seconds=1), 100, 10 if cohort[device_id] == "b" else 0,
                       a if cohort[device_id] == "a" else b) for device_id in devices.ids]
    store_windows(api, windows)
    report = {c["cohort"]: c for c in api.get(f"/rollouts/{created['id']}/cohorts").json()}
    assert report["a"]["requests"] == 200 and report["a"]["error_rate"] == 0.0
    assert report["b"]["requests"] == 200 and report["b"]["error_rate"] == pytest.approx(0.1)
    assert report["b"]["release"]["version"] == b["version"]


def test_bad_requests_are_one_clear_4xx(api: Api, controller: RolloutController) -> None:
    release = api.released_model("bad-requests")
    body = {"release": {"name": release["name"], "version": release["version"]}, "target": {"tags": ["nobody"]}}
    assert api.post("/rollouts", json=body).status_code == 422
    assert "selects no" in api.post("/rollouts", json=body).json()["detail"]
    assert api.post("/rollouts", json={**body, "target": {}}).status_code == 422
    missing = {**body, "release": {"name": release["name"], "version": 99}, "target": {"all": True}}
    assert api.post("/rollouts", json=missing).status_code == 404
    shrinking = {**body, "target": {"all": True}, "phases": [{"share": 0.5}, {"share": 0.2}]}
    assert "cumulative" in api.post("/rollouts", json=shrinking).json()["detail"]
    both = {**body, "target": {"all": True}, "phases": [{"share": 0.5, "count": 2}]}
    assert api.post("/rollouts", json=both).status_code == 422
    assert api.post("/rollouts", json={**body, "target": {"device_ids": ["ghost"]}}).status_code == 404
    assert api.get("/rollouts/999999").status_code == 404
    assert api.post("/rollouts/999999/pause").status_code == 404
    assert api.post("/rollouts", json=body, headers={}).status_code == 401


def test_only_the_lease_holder_acts_and_an_expired_lease_is_taken_over(api: Api,
                                                                        controller: RolloutController) -> None:
    runtime = api.runtime
    other = RolloutController(runtime.engine, runtime.keyring, runtime.publisher, "other-replica",
                              ControllerSettings(tick_s=3600, lease_ttl_s=10))
    now = utcnow()
    assert controller.tick(now)
    assert not other.tick(now + timedelta(seconds=5))
    with Session(runtime.engine) as session:
        assert lease.held(session, "test-controller", now + timedelta(seconds=5))
    assert other.tick(now + timedelta(seconds=3601))  # the holder stopped renewing
    assert not controller.tick(now + timedelta(seconds=3602))
    with Session(runtime.engine) as session:
        lease.release(session, "other-replica")
    assert controller.tick(now)


def test_a_scheduled_rollout_stays_a_draft_until_its_time_then_the_controller_starts_it(
        api: Api, controller: RolloutController) -> None:
    devices = fleet(api, controller, 2)
    release = api.released_model(f"scheduled-{devices.tag}")
    start_at = utcnow() + timedelta(hours=2)
    created = devices.create(release, start_at=start_at.isoformat(), phases=[{"share": 1.0, "bake_s": 0}])
    assert created["state"] == "draft" and created["started_at"] is None
    assert abs(datetime.fromisoformat(created["start_at"]) - start_at) < timedelta(milliseconds=1)
    devices.now = start_at - timedelta(seconds=1)
    rollout = devices.tick()
    assert rollout["state"] == "draft" and rollout["devices"] == {"pending": 2}
    assert all(not devices.directives(device_id) for device_id in devices.ids)

    rollout = devices.tick(2)
    assert rollout["state"] == "running" and rollout["devices"] == {"notified": 2}
    assert datetime.fromisoformat(rollout["started_at"]) == devices.now
    assert {devices.directives(d)[-1]["action"] for d in devices.ids} == {"install"}
    audit = api.get("/audit", params={"limit": 1000}).json()
    assert any(entry["actor"] == "scheduler" and entry["action"] == "rollout.start"
               and entry["details"]["rollout_id"] == created["id"] for entry in audit)


def test_a_scheduled_rollout_can_be_started_early_or_cancelled(api: Api, controller: RolloutController) -> None:
    devices = fleet(api, controller, 2)
    release = api.released_model(f"early-{devices.tag}")
    first = devices.create(release, start_at=(utcnow() + timedelta(hours=1)).isoformat())
    cancelled = api.post(f"/rollouts/{first['id']}/abort").json()
    assert cancelled["state"] == "aborted" and cancelled["devices"] == {"skipped": 2}
    devices.now += timedelta(hours=2)
    devices.tick()
    assert api.get(f"/rollouts/{first['id']}").json()["state"] == "aborted"  # the scheduler leaves it alone

    second = devices.create(release, start_at=(utcnow() + timedelta(hours=1)).isoformat())
    assert api.post(f"/rollouts/{second['id']}/start").json()["state"] == "running"


def test_bad_schedules_are_refused(api: Api, controller: RolloutController) -> None:
    devices = fleet(api, controller, 1)
    release = api.released_model(f"unscheduled-{devices.tag}")
    body = {"release": {"name": release["name"], "version": release["version"]}, "target": {"tags": [devices.tag]}}
    soon = (utcnow() + timedelta(hours=1)).isoformat()
    for start_at, start, message in (
            ((utcnow() - timedelta(minutes=5)).isoformat(), None, "is in the past"),
            (soon, True, "start and start_at exclude each other"),
            ((utcnow() + timedelta(days=400)).isoformat(), None, "days ahead"),
            ("2026-12-01T02:00:00", None, "timezone")):
        response = api.post("/rollouts", json={**body, "start_at": start_at,
                                               **({"start": start} if start is not None else {})})
        assert response.status_code == 422 and message in response.text, response.text
    assert api.get("/rollouts", params={"limit": 1}).json()[0]["release"]["name"] != release["name"]


def test_a_tick_on_the_real_clock_never_dates_a_notification_before_its_phase_started(
        api: Api, controller: RolloutController, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tick read its clock, then an operator created and started a rollout, then the tick acted
    on it: the notification is dated by a clock read under the rollout's lock (CI once saw it 4 ms early)."""
    devices = fleet(api, controller, 3)
    release = api.released_model(f"clock-{devices.tag}")
    assert controller.tick(devices.now)  # holds the lease
    read_before_the_start = utcnow() - timedelta(seconds=1)
    created = devices.create(release, phases=[{"share": 1.0, "bake_s": 0}])
    clock = iter([read_before_the_start])
    monkeypatch.setattr("fleet_server.rollouts.controller.utcnow", lambda: next(clock, None) or utcnow())

    assert controller.tick_rollout(created["id"])

    rollout = api.get(f"/rollouts/{created['id']}").json()
    assert devices.statuses(rollout) == dict.fromkeys(devices.ids, "notified")
    started = datetime.fromisoformat(rollout["phase_details"][0]["started_at"])
    assert all(datetime.fromisoformat(device["notified_at"]) >= started for device in rollout["device_details"])
