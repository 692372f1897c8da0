"""The device page's telemetry and drift, and the alerts page, from stored
telemetry windows, drift evaluations and alerts (inserted as ingest and the
evaluator store them)."""

from collections.abc import Iterator
from datetime import timedelta

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from agent.binning import bin_counts, build_profile, feature_matrix
from fleet_server.core.types import utcnow
from fleet_server.dashboard.telemetry_panel import downsample
from fleet_server.models.alert import Alert
from fleet_server.models.drift import DriftEvaluation
from fleet_server.models.telemetry import ReferenceProfileRecord, TelemetryWindowRecord
from tests.fleet_server.conftest import ADMIN_TOKEN, Api

DEVICE = "tele-1"
RNG = np.random.default_rng(7)


def window(start, seq: int, requests: int, errors: int, p95: float, counts=None, profile=None):
    return TelemetryWindowRecord(
        device_id=DEVICE, window_start=start, seq=seq, window_end=start + timedelta(minutes=1),
        model_name="tele-model", model_version=3, requests=requests, errors=errors, latency_p50_ms=p95 / 2,
        latency_p95_ms=p95, latency_counts=[], profile_sha256=profile, feature_counts=counts)


@pytest.fixture(scope="module")
def stored(api: Api) -> dict:
    assert api.enroll(DEVICE, tags=("tele",)).status_code == 201
    reference = RNG.normal(0.0, 1.0, size=(2000, 3)).astype(np.float32)
    profile = build_profile(reference, RNG.integers(0, 3, size=2000), "input", classes=True)
    live = reference[:600].copy()
    live[:, 2] += 2.5  # feature 2 shifts by 2.5 standard deviations; 0 and 1 do not
    matrix = feature_matrix(live)
    counts = [[int(c) for c in bin_counts(np.asarray(feature.edges), matrix[:, feature.index])]
              for feature in profile.features]
    now = utcnow().replace(microsecond=0)
    with Session(api.runtime.engine) as session:
        session.add(ReferenceProfileRecord(sha256=profile.sha256(), input_name="input", samples=profile.samples,
                                           document=profile.to_bytes().decode("utf-8")))
        for minute in range(30):
            start = now - timedelta(minutes=30 - minute)
            session.add(window(start, minute, requests=100, errors=5 if minute >= 25 else 0, p95=4.0 + minute / 10,
                               counts=counts if minute == 29 else None,
                               profile=profile.sha256() if minute == 29 else None))
        session.add(DriftEvaluation(scope="device", subject=DEVICE, model_name="tele-model", model_version=3,
                                    profile_sha256=profile.sha256(), bucket_start=now - timedelta(minutes=10),
                                    bucket_end=now, samples=600, sufficient=True, drifted=True, drift_score=0.41,
                                    drifted_features=1))
        session.add(Alert(kind="drift", scope="device", subject=DEVICE, model_name="tele-model", model_version=3,
                          active_key=f"drift:device:{DEVICE}", summary="input drift on feature 2 (JS 0.41)"))
        session.add(Alert(kind="latency", scope="cohort", subject="tele", state="resolved",
                          summary="p95 latency regression", resolved_at=now))
        session.commit()
    return {"profile": profile}


@pytest.fixture
def browser(api: Api) -> Iterator[TestClient]:
    client = TestClient(api.app, follow_redirects=False)
    assert client.post("/ui/login", data={"token": ADMIN_TOKEN}).status_code == 303
    yield client
    client.close()


def test_device_page_charts_latency_traffic_and_drift_per_feature(stored: dict, browser: TestClient) -> None:
    page = browser.get(f"/ui/devices/{DEVICE}").text
    assert "Telemetry, last 6 h" in page and "30 windows" in page and "3,000 requests" in page
    assert "0.83% errors" in page and "tele-model v3" in page
    assert "Inference latency" in page and page.count("<polyline") >= 4
    drift = page[page.index('id="drift-features"'):]
    assert "1 of 3 features drifted" in drift
    first_bar = drift.index("<rect")
    assert 'class="bar bad"' in drift[first_bar:first_bar + 40]  # the drifted feature leads the chart
    assert "feature 2" in drift[:drift.index("feature 0")]
    assert "Drift score (evaluator buckets)" in page
    assert "Firing alerts" in page and "input drift on feature 2" in page


def test_alerts_page_lists_firing_first_and_filters(stored: dict, browser: TestClient) -> None:
    page = browser.get("/ui/alerts").text
    assert page.index("input drift on feature 2") < page.index("p95 latency regression")
    firing = browser.get("/ui/alerts", params={"state": "firing"}).text
    assert "input drift" in firing and "p95 latency regression" not in firing
    latency = browser.get("/ui/alerts", params={"kind": "latency"}).text
    assert "p95 latency regression" in latency and "input drift" not in latency
    assert browser.get("/ui/alerts", params={"kind": "nonsense"}).status_code == 422
    overview = browser.get("/ui/").text
    assert 'id="open-alerts">1<' in overview and "Open alerts" in overview


def test_downsample_merges_windows_into_bounded_points(stored: dict) -> None:
    start = utcnow()
    windows = [window(start + timedelta(seconds=10 * i), i, requests=10, errors=1, p95=float(i % 7))
               for i in range(1000)]
    points = downsample(windows, max_points=50)
    assert len(points) == 50
    assert sum(point.requests for point in points) == 10_000 and sum(point.errors for point in points) == 1000
    assert all(point.p95_ms is not None and 0 <= point.p95_ms <= 6 for point in points)
    assert downsample([]) == []
