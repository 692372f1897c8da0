"""Rollouts in the dashboard: the new-rollout form, the rollout page with its
phases and devices, the shadow comparison, and the operation, promote and drop
buttons (operator role, CSRF)."""

import html
import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from fleet_server.core.types import utcnow
from fleet_server.dashboard.forms import RolloutForm, RolloutFormError, parse_phases, rollout_request
from fleet_server.models.telemetry import TelemetryWindowRecord
from tests.fleet_server.conftest import ADMIN_TOKEN, Api
from tests.fleet_server.deployment_rows import report_rollout_status

MODEL = "ui-rollout-model"


@pytest.fixture(scope="module")
def fleet(api: Api) -> list[str]:
    ids = [f"ro-{index}" for index in range(5)]
    for device_id in ids:
        assert api.enroll(device_id, tags=("ro",)).status_code == 201
    api.released_model(MODEL)
    return ids


@pytest.fixture
def browser(api: Api) -> Iterator[TestClient]:
    client = TestClient(api.app, follow_redirects=False)
    assert client.post("/ui/login", data={"token": ADMIN_TOKEN}).status_code == 303
    yield client
    client.close()


def csrf_of(client: TestClient, path: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text)
    assert match
    return match.group(1)


def live_state(client: TestClient, rollout_id: int) -> str:
    match = re.search(r'data-state="(\w+)" id="rollout-state"', client.get(f"/ui/rollouts/{rollout_id}/progress").text)
    assert match
    return match.group(1)


def test_form_values_become_a_rollout_request() -> None:
    request = rollout_request(RolloutForm(release="digits:3", tags="eu, line-3", phases="1, 50%, 100%",
                                          bake_s=30, success_threshold=0.8, max_failure_rate=0.2,
                                          auto_rollback=False, name="night", start=False))
    assert (request.release.name, request.release.version) == ("digits", 3)
    assert request.target.tags == ["eu", "line-3"] and not request.target.all
    assert [(p.count, p.share, p.bake_s) for p in request.phases] == [(1, None, 30), (None, 0.5, 30), (None, 1.0, 30)]
    assert request.criteria.max_failure_rate == 0.2 and request.criteria.auto_rollback is False
    assert request.name == "night" and request.start is False
    for bad in ("abc", "0%", "150%", "-2"):
        with pytest.raises(RolloutFormError):
            parse_phases(bad, 60, 0.9)
    with pytest.raises(RolloutFormError, match="NAME:VERSION"):
        rollout_request(RolloutForm(release="digits", tags="eu"))
    with pytest.raises(RolloutFormError, match="cumulative"):
        rollout_request(RolloutForm(release="digits:1", tags="eu", phases="50%, 10%"))
    with pytest.raises(RolloutFormError, match="target"):
        rollout_request(RolloutForm(release="digits:1"))


def test_start_pause_resume_abort_from_the_dashboard(api: Api, browser: TestClient, fleet: list[str]) -> None:
    new = browser.get(f"/ui/rollouts/new?release={MODEL}:1")
    assert new.status_code == 200 and f'<option selected>{MODEL}:1</option>' in new.text
    csrf = csrf_of(browser, "/ui/rollouts/new")
    form = {"release": f"{MODEL}:1", "tags": "ro", "phases": "1, 60%, 100%", "bake_s": "0", "start": "true",
            "auto_rollback": "true", "name": "ui test"}
    assert browser.post("/ui/rollouts", data=form).status_code == 403  # no CSRF token
    created = browser.post("/ui/rollouts", data={**form, "csrf_token": csrf})
    assert created.status_code == 303
    rollout_id = int(created.headers["location"].rsplit("/", 1)[1])
    rollout = api.get(f"/rollouts/{rollout_id}").json()
    assert rollout["name"] == "ui test" and rollout["phases"] == 3
    assert sorted(device["device_id"] for device in rollout["device_details"]) == fleet
    page = browser.get(f"/ui/rollouts/{rollout_id}").text
    assert "data-poll" in page and page.count('data-phase="') == 3 and page.count('data-device="ro-') == 5
    assert 'value="pause"' in page and 'value="abort"' in page and 'value="resume"' not in page

    assert browser.post(f"/ui/rollouts/{rollout_id}/pause", data={"csrf_token": "forged"}).status_code == 403
    assert browser.post(f"/ui/rollouts/{rollout_id}/pause", data={"csrf_token": csrf}).status_code == 303
    assert live_state(browser, rollout_id) == "paused"
    assert 'value="resume"' in browser.get(f"/ui/rollouts/{rollout_id}").text
    assert browser.post(f"/ui/rollouts/{rollout_id}/resume", data={"csrf_token": csrf}).status_code == 303
    assert live_state(browser, rollout_id) == "running"
    assert browser.post(f"/ui/rollouts/{rollout_id}/abort", data={"csrf_token": csrf}).status_code == 303
    progress = browser.get(f"/ui/rollouts/{rollout_id}/progress").text
    assert re.search(r'data-state="(aborted|rolling_back|rolled_back)" id="rollout-state"', progress)
    assert 'id="rollout-reason"' in progress  # the abort reason is on the page
    refused = browser.post(f"/ui/rollouts/{rollout_id}/resume", data={"csrf_token": csrf})
    assert refused.status_code == 409 and refused.headers["content-type"].startswith("text/html")
    assert browser.post(f"/ui/rollouts/{rollout_id}/explode", data={"csrf_token": csrf}).status_code == 422

    listed = browser.get("/ui/rollouts").text
    assert f'data-rollout="{rollout_id}"' in listed
    audit = api.get("/audit", params={"limit": 1000}).json()
    assert any(entry["actor"] == "admin" and "rollout" in entry["action"] for entry in audit)


def test_viewers_see_rollouts_but_cannot_change_them(api: Api, browser: TestClient, fleet: list[str]) -> None:
    viewer = api.post("/tokens", json={"name": "ro viewer", "role": "viewer"}).json()["token"]
    client = TestClient(api.app, follow_redirects=False)
    assert client.post("/ui/login", data={"token": viewer}).status_code == 303
    assert client.get("/ui/rollouts").status_code == 200
    assert client.get("/ui/rollouts/new").status_code == 403
    csrf = csrf_of(client, "/ui/rollouts")
    refused = client.post("/ui/rollouts", data={"release": f"{MODEL}:1", "tags": "ro", "csrf_token": csrf})
    assert refused.status_code == 403
    client.close()


def wait_for_statuses(api: Api, rollout_id: int, wanted: str, timeout: float = 30.0) -> dict:
    """The rollout once every device has ``wanted`` status (the app's own controller ticks)."""
    deadline = time.monotonic() + timeout
    while True:
        rollout = api.get(f"/rollouts/{rollout_id}").json()
        if set(rollout["devices"]) == {wanted}:
            return rollout
        assert time.monotonic() < deadline, f"rollout {rollout_id} devices stayed {rollout['devices']}"
        time.sleep(0.1)


def test_shadow_comparison_promote_and_drop_from_the_dashboard(api: Api, browser: TestClient) -> None:
    ids = ["sh-0", "sh-1"]
    for device_id in ids:
        assert api.enroll(device_id, tags=("sh",)).status_code == 201
    candidate = api.released_model("ui-shadow-candidate")
    body = {"release": {"name": candidate["name"], "version": candidate["version"]}, "target": {"tags": ["sh"]},
            "action": "shadow", "phases": [{"share": 1.0, "bake_s": 0}]}
    created = api.post("/rollouts", json=body)
    assert created.status_code == 201, created.text
    shadow_id = created.json()["id"]
    wait_for_statuses(api, shadow_id, "notified")
    for device_id in ids:
        report_rollout_status(api.runtime.engine, device_id, "succeeded", time.time())
    wait_for_statuses(api, shadow_id, "succeeded")
    section = {"candidate": {"name": candidate["name"], "version": candidate["version"]}, "compared": 30,
               "agreement": 0.9, "serving_p50_ms": 2.0, "candidate_p50_ms": 4.0}
    now = utcnow()
    with Session(api.runtime.engine) as session:
        session.add_all([TelemetryWindowRecord(device_id=device_id, window_start=now, seq=1, window_end=now,
                                               requests=compared, errors=0, shadow={**section, "compared": compared,
                                                                                    "agreement": agreement})
                         for device_id, compared, agreement in (("sh-0", 30, 0.9), ("sh-1", 10, 0.5))])
        session.commit()

    page = browser.get(f"/ui/rollouts/{shadow_id}").text
    assert 'id="shadow-report"' in page
    figures = dict(re.findall(r'data-field="(\w+)">([^<]+)<', page))
    assert figures["devices_running"] == "2" and figures["devices_reporting"] == "2" and figures["compared"] == "40"
    assert figures["agreement"] == "80.0%" and "4.00 ms" in page
    assert f'action="/ui/rollouts/{shadow_id}/shadow/promote"' in page

    csrf = csrf_of(browser, f"/ui/rollouts/{shadow_id}")
    assert browser.post(f"/ui/rollouts/{shadow_id}/shadow/promote", data={"phases": "100%"}).status_code == 403
    bad = browser.post(f"/ui/rollouts/{shadow_id}/shadow/promote", data={"csrf_token": csrf, "phases": "most"})
    assert bad.status_code == 422 and "phase 'most'" in html.unescape(bad.text)
    promoted = browser.post(f"/ui/rollouts/{shadow_id}/shadow/promote",
                            data={"csrf_token": csrf, "phases": "1, 100%", "bake_s": "0"})
    assert promoted.status_code == 303
    promoted_id = int(promoted.headers["location"].rsplit("/", 1)[1])
    install = api.get(f"/rollouts/{promoted_id}").json()
    assert install["action"] == "install" and install["source_rollout_id"] == shadow_id and install["phases"] == 2
    assert sorted(device["device_id"] for device in install["device_details"]) == ids
    assert f'href="/ui/rollouts/{shadow_id}">#{shadow_id}</a>' in browser.get(f"/ui/rollouts/{promoted_id}").text
    assert 'id="shadow-report"' not in browser.get(f"/ui/rollouts/{promoted_id}").text
    refused = browser.post(f"/ui/rollouts/{promoted_id}/shadow/drop", data={"csrf_token": csrf})
    assert refused.status_code == 409 and "not a shadow rollout" in html.unescape(refused.text)


def test_viewers_see_the_shadow_comparison_without_its_buttons(api: Api, browser: TestClient) -> None:
    assert api.enroll("sh-viewer", tags=("sh-viewer",)).status_code == 201
    candidate = api.released_model("ui-shadow-viewed")
    body = {"release": {"name": candidate["name"], "version": candidate["version"]},
            "target": {"tags": ["sh-viewer"]}, "action": "shadow", "phases": [{"share": 1.0, "bake_s": 0}]}
    shadow_id = api.post("/rollouts", json=body).json()["id"]
    token = api.post("/tokens", json={"name": "shadow-viewer", "role": "viewer"}).json()["token"]
    viewer = TestClient(api.app, follow_redirects=False)
    assert viewer.post("/ui/login", data={"token": token}).status_code == 303
    page = viewer.get(f"/ui/rollouts/{shadow_id}").text
    assert 'id="shadow-report"' in page and "/shadow/promote" not in page and "/shadow/drop" not in page
    assert 'id="shadow-report"' in browser.get(f"/ui/rollouts/{shadow_id}").text
    viewer.close()


def test_a_scheduled_rollout_shows_when_it_starts(api: Api, browser: TestClient) -> None:
    assert api.enroll("sched-0", tags=("sched",)).status_code == 201
    release = api.released_model("ui-scheduled")
    start_at = (utcnow() + timedelta(days=30)).replace(microsecond=0)
    created = api.post("/rollouts", json={"release": {"name": release["name"], "version": release["version"]},
                                          "target": {"tags": ["sched"]}, "start_at": start_at.isoformat()})
    assert created.status_code == 201, created.text
    page = browser.get(f"/ui/rollouts/{created.json()['id']}").text
    assert 'id="rollout-scheduled"' in page and start_at.strftime("%Y-%m-%d %H:%M:%S UTC") in page


def test_the_form_schedules_a_rollout_in_utc(api: Api, browser: TestClient) -> None:
    with pytest.raises(RolloutFormError, match="start at 'tonight'"):
        rollout_request(RolloutForm(release="digits:1", tags="eu", start_at="tonight"))
    assert rollout_request(RolloutForm(release="digits:1", tags="eu", start_at="")).start_at is None
    assert api.enroll("form-sched-0", tags=("form-sched",)).status_code == 201
    release = api.released_model("ui-form-scheduled")
    when = (utcnow() + timedelta(days=2)).replace(second=0, microsecond=0)
    form = {"release": f"{release['name']}:{release['version']}", "tags": "form-sched", "start": "true",
            "start_at": when.strftime("%Y-%m-%dT%H:%M"), "csrf_token": csrf_of(browser, "/ui/rollouts/new")}
    created = browser.post("/ui/rollouts", data=form)
    assert created.status_code == 303
    rollout = api.get(f"/rollouts/{int(created.headers['location'].rsplit('/', 1)[1])}").json()
    assert rollout["state"] == "draft" and datetime.fromisoformat(rollout["start_at"]) == when
    past = browser.post("/ui/rollouts", data={**form, "start_at": "2020-01-01T00:00"})
    assert past.status_code == 422 and "is in the past" in html.unescape(past.text)
