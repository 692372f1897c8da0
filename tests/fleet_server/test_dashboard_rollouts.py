"""Rollouts in the dashboard: the new-rollout form, the rollout page with its
phases and devices, and the operation buttons (operator role, CSRF)."""

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from fleet_server.dashboard.forms import RolloutForm, RolloutFormError, parse_phases, rollout_request
from tests.fleet_server.conftest import ADMIN_TOKEN, Api

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
