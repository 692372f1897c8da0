"""The dashboard in a real browser (headless Chromium through Playwright) against the
real server under uvicorn with real agents on a real Mosquitto: log in, see the
fleet, open a device, deploy from the UI and watch it finish live, start a staged
rollout from the UI and watch it complete, see a drift alert raised by the
agents' telemetry, log out; and an admin issuing and revoking an API token.
Screenshots of every page go to tests/artifacts/screenshots."""

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Page, expect

from fleet_server.localfleet import LocalAgent, LocalServer
from fleet_server.processes import wait_until
from tests.integration.browser import chromium_page, screenshot
from tests.integration.conftest import MODELS, start_server, unique_model

pytestmark = pytest.mark.slow

LINEAGE = {
    "description": "MLP on scikit-learn digits (browser test)",
    "lineage": {"training_data_uri": "sklearn.datasets.load_digits", "training_code_ref": "tests/fixtures",
                "metrics": {"test_accuracy": 0.97}},
}


# Telemetry fast enough for a test: 1 s agent windows, 4 s drift buckets, an alert after 2 drifted buckets.
SERVER_ENV = {
    "EDGEFLEET_MONITOR_INTERVAL_S": "1", "EDGEFLEET_DRIFT_BUCKET_S": "4", "EDGEFLEET_DRIFT_WINDOWS": "4",
    "EDGEFLEET_DRIFT_ALERT_WINDOWS": "2", "EDGEFLEET_DRIFT_MIN_SAMPLES": "150", "EDGEFLEET_OFFLINE_AFTER_S": "600",
}
AGENT_ENV = {"EDGEFLEET_AGENT_TELEMETRY_WINDOW_S": "1", "EDGEFLEET_AGENT_HEARTBEAT_INTERVAL_S": "5"}


@pytest.fixture(scope="module")
def server(mosquitto, tmp_path_factory) -> Iterator[LocalServer]:
    """This module's server: the shared Mosquitto, drift monitoring on a test time scale."""
    server = start_server(tmp_path_factory.mktemp("ui-server"), mosquitto.url, **SERVER_ENV)
    yield server
    server.stop()


def login(page: Page, token: str) -> None:
    page.goto("/ui/")
    expect(page).to_have_url(re.compile(r"/ui/login\?next=/ui/"))
    page.fill("#token", token)
    page.click("button[type=submit]")


def test_operator_journey_in_the_browser(server, client, agents, tmp_path):
    fleet = [agents(), agents()]
    ids = [agent.device_id for agent in fleet]
    client.tag_device(ids[0], add=["browser", "line-1"], remove=[])
    client.tag_device(ids[1], add=["browser"], remove=[])
    model = unique_model(MODELS / "digits_mlp.onnx", tmp_path, "browser")
    version = client.upload_model(model, "digits-browser", metadata=LINEAGE)["version"]
    client.create_release("digits-browser", version)

    with chromium_page(server.url) as page:
        # a wrong token is refused on the login page itself
        login(page, "not-a-token")
        expect(page.get_by_role("alert")).to_contain_text("not valid")
        screenshot(page, "01-login-refused")

        page.fill("#token", server.admin_token)
        page.click("button[type=submit]")
        expect(page.get_by_role("heading", name="Fleet overview")).to_be_visible()
        expect(page.locator("#online-count")).to_have_text(re.compile(r"^[1-9]\d*$"))
        cookie = next(c for c in page.context.cookies() if c["name"] == "edgefleet_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and server.admin_token not in cookie["value"]
        screenshot(page, "02-overview")

        # devices: filter by tag, then open one
        page.click("nav >> text=Devices")
        page.select_option("select[name=tag]", "line-1")
        page.click("form.filters button[type=submit]")
        rows = page.locator("table.devices tbody tr")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text(ids[0])
        expect(rows.first).to_contain_text("online")
        screenshot(page, "03-devices-filtered")
        page.click(f"text={ids[0]}")
        expect(page.get_by_role("heading", name=ids[0])).to_be_visible()
        expect(page.locator("dl.facts")).to_contain_text("line-1")
        screenshot(page, "04-device-before")

        # the registry shows the version with its lineage
        page.click("nav >> text=Models")
        page.click("text=digits-browser")
        expect(page.locator(f"#v{version}")).to_contain_text("sklearn.datasets.load_digits")
        expect(page.locator(f"#v{version}")).to_contain_text("test_accuracy")
        screenshot(page, "05-model")

        # deploy the release to the tag from its page; the deployment page updates live until final
        page.click("nav >> text=Releases")
        page.click(f"text=digits-browser v{version}")
        page.fill("input[name=tags]", "browser")
        screenshot(page, "06-release")
        page.click("#deploy-form button[type=submit]")
        expect(page).to_have_url(re.compile(r"/ui/deployments/\d+$"))
        progress = page.locator("#progress")
        expect(progress.locator("[data-final=true]")).to_be_visible(timeout=120_000)
        for device_id in ids:
            expect(progress.locator(f"tr[data-device='{device_id}']")).to_have_attribute("data-state", "succeeded")
        expect(page.locator(".live-stamp")).to_contain_text("final")
        screenshot(page, "07-deployment-finished")

        # the device page now shows the model and the history
        page.click(f"text={ids[1]}")
        expect(page.locator("dl.facts")).to_contain_text(f"digits-browser v{version}")
        expect(page.locator("table.history")).to_contain_text("downloading")
        expect(page.locator("table.history")).to_contain_text("succeeded")
        screenshot(page, "08-device-after")

        page.click("nav >> text=Overview")
        expect(page.locator("svg.chart").first).to_contain_text(f"digits-browser v{version}")
        screenshot(page, "09-overview-after")

        page.click("nav >> text=Audit")
        expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
        screenshot(page, "10-audit")

        # logging out ends the session
        page.click("text=Log out")
        expect(page).to_have_url(re.compile(r"/ui/login$"))
        page.goto("/ui/devices")
        expect(page).to_have_url(re.compile(r"/ui/login\?next=/ui/devices"))


def digits() -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().data / 16.0).astype(np.float32)


def infer(agent: LocalAgent, model: str, rows: np.ndarray) -> None:
    body = json.dumps({"inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP32",
                                   "data": rows.ravel().tolist()}]}).encode()
    request = urllib.request.Request(f"{agent.inference_url}/v2/models/{model}/infer", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def compressed_release(client, tmp_path: Path, name: str) -> int:
    """A release with a reference profile: the server compresses the model on calibration data."""
    version = client.upload_model(unique_model(MODELS / "digits_mlp.onnx", tmp_path, name), name,
                                  metadata=LINEAGE)["version"]
    calibration = tmp_path / "calibration.npy"
    np.save(calibration, digits()[:1000])
    dataset = client.upload_dataset(calibration)["sha256"]
    job = client.compress(name, version, {"calibration_sha256": dataset, "variants": ["onnx-fp16"],
                                          "latency_runs": 3, "max_evaluation_rows": 200})
    wait_until(lambda: client.compression_job(job["id"])["status"] in ("succeeded", "failed"), 180,
               "the compression job")
    assert client.compression_job(job["id"])["status"] == "succeeded", client.compression_job(job["id"])
    assert client.create_release(name, version)["envelope"]["signed"]["reference_profile_sha256"]
    return version


def test_rollout_from_the_ui_completes_and_drift_raises_an_alert(server, client, agents, tmp_path):
    steady, drifting = agents(**AGENT_ENV), agents(**AGENT_ENV)
    for agent in (steady, drifting):
        client.tag_device(agent.device_id, add=["ui-rollout"], remove=[])
    model = "digits-staged"
    version = compressed_release(client, tmp_path, model)

    with chromium_page(server.url) as page:
        login(page, server.admin_token)
        expect(page.get_by_role("heading", name="Fleet overview")).to_be_visible()

        # the release page shows the compression report and starts a staged rollout
        page.goto(f"/ui/releases/{model}/{version}")
        expect(page.locator("#compression-report")).to_contain_text("onnx-fp16")
        page.click("#start-rollout")
        expect(page.locator("select[name=release]")).to_have_value(f"{model}:{version}")
        page.fill("input[name=tags]", "ui-rollout")
        page.fill("input[name=phases]", "50%, 100%")
        page.fill("input[name=bake_s]", "1")
        page.fill("input[name=name]", "browser staged")
        screenshot(page, "11-rollout-new")
        page.click("#rollout-form button[type=submit]")
        expect(page).to_have_url(re.compile(r"/ui/rollouts/\d+$"))
        live = page.locator("#rollout-live")
        expect(live.locator("[data-final=true]")).to_be_visible(timeout=150_000)
        expect(live.locator("#rollout-state")).to_have_attribute("data-state", "succeeded")
        for agent in (steady, drifting):
            expect(live.locator(f"tr[data-device='{agent.device_id}']")).to_have_attribute("data-status", "succeeded")
        expect(live.locator("tr[data-phase='1']")).to_have_attribute("data-state", "completed")
        screenshot(page, "12-rollout-succeeded")

        # inverted strokes on one device, reference-like digits on the other, until the monitor raises drift
        data, rng = digits()[1000:], np.random.default_rng(5)
        deadline = time.monotonic() + 120
        while not any(a["subject"] == drifting.device_id
                      for a in client.alerts({"state": "firing", "kind": "drift"})):
            assert time.monotonic() < deadline, client.alerts()
            batch = data[rng.integers(0, len(data), 16)]
            infer(steady, model, batch)
            infer(drifting, model, np.clip(1.0 - batch, 0, 1))
            time.sleep(0.05)

        page.click("nav >> text=Alerts")
        row = page.locator(f"tr[data-alert-kind=drift]:has(a:text-is('{drifting.device_id}'))")
        expect(row).to_have_attribute("data-alert-state", "firing")
        screenshot(page, "13-alerts")
        row.locator(f"a:text-is('{drifting.device_id}')").click()
        expect(page.locator(".alert-box")).to_contain_text("drift")
        expect(page.locator("section.telemetry")).to_contain_text(f"{model} v{version}")
        expect(page.locator("#drift-features")).to_contain_text("features drifted")
        expect(page.locator("#drift-features svg rect.bar.bad").first).to_be_visible()
        screenshot(page, "14-device-drift")

        page.click("nav >> text=Overview")
        expect(page.locator("#open-alerts")).not_to_have_text("0")
        screenshot(page, "15-overview")  # docs/dashboard.png (the README's picture) is a copy of this one


def whoami(server: LocalServer, token: str) -> int:
    """The API's status for ``token`` (200: accepted, 401: refused)."""
    request = urllib.request.Request(f"{server.url}/api/v1/whoami", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_an_admin_issues_and_revokes_an_api_token_in_the_browser(server):
    with chromium_page(server.url) as page:
        login(page, server.admin_token)
        page.click("nav >> text=Tokens")
        expect(page.get_by_role("heading", name="API tokens")).to_be_visible()
        page.fill("#token-form input[name=name]", "browser runner")
        page.select_option("#token-form select[name=role]", "operator")
        page.click("#token-form button[type=submit]")
        secret = page.locator("#new-token").inner_text().strip()
        expect(page.locator("#issued-token")).to_contain_text("not shown again")
        screenshot(page, "16-token-issued")
        assert whoami(server, secret) == 200

        row = page.locator("#token-table tr", has_text="browser runner")
        expect(row).to_have_attribute("data-state", "active")
        page.once("dialog", lambda dialog: dialog.accept())  # the revoke button asks first
        row.locator("button", has_text="Revoke").click()
        expect(page).to_have_url(re.compile(r"/ui/tokens$"))
        expect(page.locator("#token-table")).not_to_contain_text("browser runner")  # active ones only
        assert whoami(server, secret) == 401
        page.select_option("select[name=show]", "all")
        page.click("form.filters button[type=submit]")
        expect(page.locator("#token-table tr", has_text="browser runner")).to_have_attribute("data-state", "revoked")
        expect(page.locator("#new-token")).to_have_count(0)  # the secret was on the issuing answer only
        screenshot(page, "17-token-revoked")
