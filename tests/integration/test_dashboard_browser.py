"""The dashboard in a real browser (headless Chromium through Playwright) against the
real server under uvicorn with real agents on a real Mosquitto: log in, see the
fleet, open a device, deploy from the UI and watch it finish live, log out.
Screenshots of every page go to tests/artifacts/screenshots."""

import re

import pytest
from playwright.sync_api import Page, expect

from tests.integration.browser import chromium_page, screenshot
from tests.integration.conftest import MODELS, unique_model

pytestmark = pytest.mark.slow

LINEAGE = {
    "description": "MLP on scikit-learn digits (browser test)",
    "lineage": {"training_data_uri": "sklearn.datasets.load_digits", "training_code_ref": "tests/fixtures",
                "metrics": {"test_accuracy": 0.97}},
}


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
