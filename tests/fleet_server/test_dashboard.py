"""The dashboard over HTTP (TestClient): login and session cookie, roles and CSRF,
HTML error pages, escaping, and every page rendering real data."""

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.fleet_server.conftest import ADMIN_TOKEN, Api

MODEL = "dash-model"


@pytest.fixture
def browser(api: Api) -> Iterator[TestClient]:
    """A client of the module's app with a cookie jar of its own (no lifespan: the app is running)."""
    client = TestClient(api.app, follow_redirects=False)
    yield client
    client.close()


def log_in(client: TestClient, token: str = ADMIN_TOKEN) -> None:
    response = client.post("/ui/login", data={"token": token, "next": "/ui/"})
    assert response.status_code == 303, response.text


def csrf_of(client: TestClient, path: str = "/ui/") -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text)
    assert match, "no CSRF token on the page"
    return match.group(1)


@pytest.fixture(scope="module")
def fleet(api: Api) -> dict:
    for index in range(3):
        assert api.enroll(f"dash-{index}", tags=("dash", f"row-{index}")).status_code == 201
    metadata = ('{"description": "<script>alert(1)</script> digits", "lineage": {"training_data_uri": '
                '"file:///data/digits.csv", "metrics": {"accuracy": 0.97}}}')
    assert api.upload(name=MODEL, metadata=metadata).status_code == 201
    assert api.release(MODEL, 1).status_code == 201
    return {"devices": [f"dash-{index}" for index in range(3)]}


def test_pages_need_a_session_and_redirect_to_login(browser: TestClient) -> None:
    response = browser.get("/ui/devices?tag=dash")
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login?next=/ui/devices%3Ftag%3Ddash"
    assert browser.get("/").headers["location"] == "/ui/"
    login = browser.get("/ui/login")
    assert login.status_code == 200 and 'type="password"' in login.text
    assert "default-src 'self'" in login.headers["content-security-policy"]


def test_login_sets_a_signed_http_only_strict_cookie(browser: TestClient) -> None:
    refused = browser.post("/ui/login", data={"token": "wrong", "next": "/ui/"})
    assert refused.status_code == 401 and "not valid" in refused.text
    assert "edgefleet_session" not in refused.headers.get("set-cookie", "")
    response = browser.post("/ui/login", data={"token": ADMIN_TOKEN, "next": "/ui/devices"})
    assert response.status_code == 303 and response.headers["location"] == "/ui/devices"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert ADMIN_TOKEN not in cookie
    assert browser.get("/ui/devices").status_code == 200
    # a tampered cookie is no session
    value = browser.cookies.get("edgefleet_session")
    assert value
    browser.cookies.set("edgefleet_session", value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1], path="/ui")
    assert browser.get("/ui/devices").status_code == 303


def test_login_redirects_only_inside_the_dashboard(browser: TestClient) -> None:
    for target in ("https://evil.example/", "//evil.example/ui", "/api/v1/devices", "/ui\\..\\x"):
        response = browser.post("/ui/login", data={"token": ADMIN_TOKEN, "next": target})
        assert response.headers["location"] == "/ui/", target


def test_every_page_renders_the_fleet(browser: TestClient, fleet: dict) -> None:
    log_in(browser)
    overview = browser.get("/ui/")
    assert overview.status_code == 200 and "Fleet overview" in overview.text and "<svg" in overview.text
    assert not re.search(r'(src|href)="(https?:)?//', overview.text), "no asset may come from another host"
    devices = browser.get("/ui/devices", params={"tag": "dash"}).text
    assert all(device in devices for device in fleet["devices"])
    only_one = browser.get("/ui/devices", params={"tag": "row-1"}).text
    assert "dash-1" in only_one and "dash-0" not in only_one
    assert "dash-2" in browser.get("/ui/devices", params={"q": "sh-2"}).text
    assert "No device matches" in browser.get("/ui/devices", params={"online": "online", "tag": "dash"}).text
    device = browser.get("/ui/devices/dash-0").text
    assert "row-0" in device and "x86_64" in device and "not been sent any deployment" in device
    model = browser.get(f"/ui/models/{MODEL}").text
    assert "file:///data/digits.csv" in model and "accuracy" in model
    assert "<script>alert(1)</script>" not in model and "&lt;script&gt;" in model
    assert MODEL in browser.get("/ui/models").text
    release = browser.get(f"/ui/releases/{MODEL}/1").text
    assert "deploy-form" in release and "onnx-fp32" in release
    assert f"{MODEL} v1" in browser.get("/ui/releases").text
    assert browser.get("/ui/deployments").status_code == 200
    assert browser.get("/ui/audit").status_code == 200


def test_errors_are_html_pages_on_the_dashboard_and_json_on_the_api(api: Api, browser: TestClient) -> None:
    log_in(browser)
    missing = browser.get("/ui/devices/nobody")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    assert "nobody" in missing.text
    assert browser.get("/ui/no-such-page").status_code == 404
    bad = browser.get("/ui/devices", params={"page": "0"})
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("text/html")
    api_missing = api.get("/devices/nobody")
    assert api_missing.status_code == 404 and api_missing.json() == {"detail": "device 'nobody' not found"}


def test_deploy_form_needs_csrf_and_same_origin(api: Api, browser: TestClient, fleet: dict) -> None:
    log_in(browser)
    csrf = csrf_of(browser, f"/ui/releases/{MODEL}/1")
    form = {"tags": "row-2", "device_ids": ""}
    assert browser.post(f"/ui/releases/{MODEL}/1/deploy", data=form).status_code == 403
    assert browser.post(f"/ui/releases/{MODEL}/1/deploy", data={**form, "csrf_token": "forged"}).status_code == 403
    cross = browser.post(f"/ui/releases/{MODEL}/1/deploy", data={**form, "csrf_token": csrf},
                         headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403
    assert all(d["release"]["name"] != MODEL for d in api.get("/deployments").json())
    done = browser.post(f"/ui/releases/{MODEL}/1/deploy", data={**form, "csrf_token": csrf})
    assert done.status_code == 303
    deployment_id = int(done.headers["location"].rsplit("/", 1)[1])
    deployment = api.get(f"/deployments/{deployment_id}").json()
    assert [target["device_id"] for target in deployment["targets"]] == ["dash-2"]
    page = browser.get(done.headers["location"]).text
    assert "dash-2" in page and "data-poll" in page
    progress = browser.get(f"/ui/deployments/{deployment_id}/progress").text
    assert 'data-final="false"' in progress and 'data-device="dash-2"' in progress
    history = browser.get("/ui/devices/dash-2").text
    assert f"#{deployment_id}" in history
    nothing = browser.post(f"/ui/releases/{MODEL}/1/deploy", data={"tags": "no-such-tag", "csrf_token": csrf})
    assert nothing.status_code == 422 and "selects no device" in nothing.text
    invalid = browser.post(f"/ui/releases/{MODEL}/1/deploy", data={"tags": "bad tag!", "csrf_token": csrf})
    assert invalid.status_code == 422


def test_logout_needs_csrf_and_ends_the_session(browser: TestClient) -> None:
    log_in(browser)
    assert browser.post("/ui/logout", data={"csrf_token": "forged"}).status_code == 403
    response = browser.post("/ui/logout", data={"csrf_token": csrf_of(browser)})
    assert response.status_code == 303 and response.headers["location"] == "/ui/login"
    assert 'edgefleet_session=""' in response.headers["set-cookie"] or "Max-Age=0" in response.headers["set-cookie"]
    assert browser.get("/ui/").status_code == 303


def test_static_assets_ship_with_the_package(browser: TestClient) -> None:
    css = browser.get("/ui/static/dashboard.css")
    js = browser.get("/ui/static/dashboard.js")
    assert css.status_code == 200 and "svg.chart" in css.text
    assert js.status_code == 200 and "data-poll" in js.text


def test_roles_apply_to_the_dashboard_and_revoking_a_token_ends_its_sessions(api: Api, browser: TestClient,
                                                                              fleet: dict) -> None:
    issued = api.post("/tokens", json={"name": "dash viewer", "role": "viewer"})
    assert issued.status_code == 201, issued.text
    log_in(browser, issued.json()["token"])
    release = browser.get(f"/ui/releases/{MODEL}/1").text
    assert "viewer" in release and "deploy-form" not in release and "needs the operator role" in release
    csrf = csrf_of(browser)
    refused = browser.post(f"/ui/releases/{MODEL}/1/deploy", data={"tags": "dash", "csrf_token": csrf})
    assert refused.status_code == 403 and "operator role" in refused.text
    assert browser.get("/ui/devices").status_code == 200
    assert api.client.delete(f"/api/v1/tokens/{issued.json()['id']}", headers=api.headers).status_code == 200
    assert browser.get("/ui/devices").status_code == 303  # the session died with its token


def test_deployments_from_the_dashboard_are_audited_under_the_user(api: Api, browser: TestClient,
                                                                   fleet: dict) -> None:
    issued = api.post("/tokens", json={"name": "dash operator", "role": "operator"}).json()
    log_in(browser, issued["token"])
    csrf = csrf_of(browser, f"/ui/releases/{MODEL}/1")
    done = browser.post(f"/ui/releases/{MODEL}/1/deploy", data={"device_ids": "dash-0", "csrf_token": csrf})
    assert done.status_code == 303
    actor = f"token:dash operator#{issued['id']}"
    entries = api.get("/audit", params={"action": "deployment.created", "limit": 1000}).json()
    assert any(entry["actor"] == actor for entry in entries)
    page = browser.get("/ui/audit").text
    assert actor in page and "deployment.created" in page


def test_release_and_model_pages_show_the_compression_report(api: Api, browser: TestClient, fleet: dict) -> None:
    from sqlmodel import Session

    from fleet_server.models.compression import CompressionJob, ReleaseCompression
    from fleet_server.services import registry, releases

    report = {
        "original": {"size_bytes": 40_000, "wire_bytes": 36_000, "latency_ms_p50": 0.2, "latency_ms_p95": 0.3,
                     "accuracy": 0.97, "ram_mb": 12.0},
        "variants": [
            {"name": "onnx-int8", "gate": "passed", "size_bytes": 11_000, "size_ratio": 0.275, "wire_bytes": 9_000,
             "latency_ms_p50": 0.1, "latency_ms_p95": 0.15, "latency_ratio": 0.5, "top1_agreement": 0.99,
             "accuracy": 0.965, "ram_mb": 8.0, "reasons": []},
            {"name": "tflite-int8", "gate": "rejected", "size_bytes": 12_000, "size_ratio": 0.3,
             "top1_agreement": 0.8, "accuracy": 0.78, "ram_mb": 8.0, "reasons": ["accuracy drop 0.19 > 0.01"]},
        ],
        "settings": {"ram_budget_mb": 256},
    }
    with Session(api.runtime.engine) as session:
        version = registry.get_version(session, MODEL, 1)
        release = releases.get_release(session, MODEL, 1)
        job = CompressionJob(model_version_id=version.id, status="succeeded", report=report,
                             calibration_sha256="c" * 64)
        session.add(job)
        session.flush()
        session.add(ReleaseCompression(release_id=release.id, job_id=job.id))
        session.commit()
    log_in(browser)
    page = browser.get(f"/ui/releases/{MODEL}/1").text
    section = page[page.index('id="compression-report"'):]
    assert "onnx-int8" in section and "tflite-int8" in section and "accuracy drop 0.19 &gt; 0.01" in section
    assert section.index("original") < section.index("onnx-int8") < section.index("tflite-int8")
    assert 'badge good">passed' in section and 'badge bad">rejected' in section and "97.0%" in section
    assert "Compression report" in browser.get(f"/ui/models/{MODEL}").text


def test_device_page_edits_tags_and_admins_revoke(api: Api, browser: TestClient, fleet: dict) -> None:
    operator = api.post("/tokens", json={"name": "dash tagger", "role": "operator"}).json()["token"]
    log_in(browser, operator)
    page = browser.get("/ui/devices/dash-1").text
    assert "tags-form" in page and "revoke-form" not in page  # revoking needs the admin role
    csrf = csrf_of(browser, "/ui/devices/dash-1")
    changed = browser.post("/ui/devices/dash-1/tags", data={"csrf_token": csrf, "add": "eu, line-9", "remove": "row-1"})
    assert changed.status_code == 303
    assert api.get("/devices/dash-1").json()["tags"] == ["dash", "eu", "line-9"]
    assert browser.post("/ui/devices/dash-1/tags", data={"csrf_token": csrf, "add": "bad tag!"}).status_code == 422
    assert browser.post("/ui/devices/dash-1/revoke", data={"csrf_token": csrf}).status_code == 403

    log_in(browser)  # admin
    csrf = csrf_of(browser, "/ui/devices/dash-1")
    assert browser.post("/ui/devices/dash-1/revoke", data={"reason": "lost"}).status_code == 403  # no CSRF token
    revoked = browser.post("/ui/devices/dash-1/revoke", data={"csrf_token": csrf, "reason": "lost in transit"})
    assert revoked.status_code == 303
    page = browser.get("/ui/devices/dash-1").text
    assert 'id="revocation"' in page and "lost in transit" in page and "tags-form" not in page
    assert 'badge bad">revoked' in browser.get("/ui/devices", params={"tag": "dash"}).text
    assert any(entry["action"] == "device.revoked" and entry["actor"] == "admin"
               for entry in api.get("/audit", params={"action": "device.revoked"}).json())
