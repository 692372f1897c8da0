"""1,000 devices: the dashboard's list pages and the device API stay paginated and
filtered in SQL. Timings are measured and printed (and written to
tests/artifacts/dashboard_timings.json), never asserted."""

import json
import re
import statistics
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.fleet_server.conftest import ADMIN_TOKEN, Api
from tests.fleet_server.synthetic_fleet import insert_devices

DEVICES = 1000
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture(scope="module")
def big_fleet(api: Api) -> TestClient:
    insert_devices(api.runtime.engine, DEVICES)
    client = TestClient(api.app, follow_redirects=False)
    assert client.post("/ui/login", data={"token": ADMIN_TOKEN}).status_code == 303
    yield client
    client.close()


def rows(html: str) -> list[str]:
    return re.findall(r'<a href="/ui/devices/(pi-\d+)">', html)


def timed(client: TestClient, path: str, repeat: int = 5) -> float:
    """Median milliseconds of ``repeat`` GETs (after one warm-up)."""
    assert client.get(path).status_code == 200
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        assert client.get(path).status_code == 200
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def test_device_pages_hold_fifty_and_link_through_all_thousand(big_fleet: TestClient) -> None:
    first = big_fleet.get("/ui/devices").text
    assert rows(first) == [f"pi-{index:05d}" for index in range(50)]
    assert "1–50 of 1000 devices" in first and "page 1 of 20" in first
    last = big_fleet.get("/ui/devices", params={"page": 20}).text
    assert rows(last)[-1] == "pi-00999" and 'rel="next"' not in last
    past_the_end = big_fleet.get("/ui/devices", params={"page": 500}).text
    assert rows(past_the_end) == rows(last)


def test_filters_combine_in_sql(big_fleet: TestClient, api: Api) -> None:
    offline = big_fleet.get("/ui/devices", params={"online": "offline"}).text
    assert "of 100 devices" in offline and all(int(d[3:]) % 10 == 0 for d in rows(offline))
    v1 = big_fleet.get("/ui/devices", params={"model": "digits:1", "tag": "site-0"}).text
    assert "of 50 devices" in v1  # index % 4 == 0 and index % 5 == 0
    failed = big_fleet.get("/ui/devices", params={"state": "failed", "page": 1}).text
    assert "of 20 devices" in failed and "pi-00007" in rows(failed)
    api_page = api.get("/devices", params={"model": "digits:2", "online": "true", "limit": 10, "offset": 20})
    assert api_page.status_code == 200 and len(api_page.json()) == 10
    expected_total = sum(1 for index in range(DEVICES) if index % 4 and index % 10)
    assert int(api_page.headers["x-total-count"]) == expected_total
    overview = big_fleet.get("/ui/").text
    assert re.search(r'id="online-count">900<', overview)
    assert "digits v2" in overview and "750 of 1000" in overview


def test_page_timings_are_recorded(big_fleet: TestClient, api: Api, database_backend: str) -> None:
    timings = {
        "overview_ms": timed(big_fleet, "/ui/"),
        "devices_page_1_ms": timed(big_fleet, "/ui/devices"),
        "devices_page_20_ms": timed(big_fleet, "/ui/devices?page=20"),
        "devices_filtered_ms": timed(big_fleet, "/ui/devices?model=digits:2&online=online&tag=site-3"),
        "device_detail_ms": timed(big_fleet, "/ui/devices/pi-00500"),
    }
    started = time.perf_counter()
    assert len(api.get("/devices", params={"limit": 100}).json()) == 100
    timings["api_devices_limit_100_ms"] = (time.perf_counter() - started) * 1000
    record = {"devices": DEVICES, "backend": database_backend, "median_of": 5,
              **{key: round(value, 1) for key, value in timings.items()}}
    print(json.dumps(record))
    ARTIFACTS.mkdir(exist_ok=True)
    with open(ARTIFACTS / "dashboard_timings.json", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
